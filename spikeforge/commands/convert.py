"""`spikeforge convert`: a trained PyTorch model -> an integer iLIF network directory."""

from __future__ import annotations

from pathlib import Path

NAME = "convert"
HELP = "convert a trained PyTorch classifier into an integer iLIF spiking network (network.json, weights.npz, rom/)"


def add_arguments(parser):
    parser.add_argument("model", help="a torch.export program (.pt2), a pickled nn.Module (.pt), or "
                                      "file.py:factory (with --state-dict)")
    parser.add_argument("--state-dict", type=Path, help="state dict to load into the module made by file.py:factory")
    parser.add_argument("--calibrate", required=True, metavar="DATA",
                        help="calibration data: a dataset name (digits, fashion-mnist), an MNIST-format IDX "
                             "directory, or a .npy/.pt file of raw byte samples (N, ...)")
    parser.add_argument("--timesteps", "-T", type=int, default=8, help="T, 1..16 (default 8)")
    parser.add_argument("--weight-bits", type=int, default=8, help="signed weight width, 2..16 (default 8)")
    parser.add_argument("--method", choices=["percentile", "max", "search"], default="percentile",
                        help="activation clip: a percentile of each layer's activations (default), their max, "
                             "or search: the percentile whose integer network classifies the calibration set "
                             "best (worth it at T = 2-4)")
    parser.add_argument("--percentile", type=float, default=99.9, help="percentile for --method percentile (99.9)")
    parser.add_argument("--v0", choices=["round", "floor"], default="round",
                        help="initial membrane potential: θ//2 rounds to nearest (default), 0 floors")
    parser.add_argument("--per-channel", action="store_true", help="one threshold per output neuron")
    parser.add_argument("--input-scale", type=float, default=None,
                        help="the model saw raw/SCALE (default: the dataset's, 255; 1 for raw data files)")
    parser.add_argument("--input-mean", type=float, default=0.0, help="... then (x - MEAN) / STD")
    parser.add_argument("--input-std", type=float, default=1.0)
    parser.add_argument("--input-shape", help="shape of one sample, e.g. 1,28,28 (default: from the data)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="network directory to write")


def run(args) -> int:
    from ..converter.calibrate import InputNormalization
    from ..converter.convert import convert
    from ..converter.model_files import load_calibration, load_model
    from ..progress import step

    with step(f"loading {args.model}"):
        model = load_model(args.model, args.state_dict)
    calibration, default_scale = load_calibration(args.calibrate)
    scale = args.input_scale if args.input_scale is not None else default_scale
    normalization = InputNormalization(scale=scale, mean=args.input_mean, std=args.input_std)
    input_shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    with step(f"converting (T = {args.timesteps}, {args.weight_bits}-bit weights)"):
        net = convert(model, calibration, timesteps=args.timesteps, weight_bits=args.weight_bits,
                      method=args.method, percentile=args.percentile, v0=args.v0, per_channel=args.per_channel,
                      normalization=normalization, input_shape=input_shape)
    net.save(args.output)
    print(net.describe())
    search = net.calibration.get("search")
    if search:
        tried = ", ".join(f"{c['percentile']:g}: {100 * c['agreement']:.2f} %" for c in search["candidates"])
        print(f"clip search (agreement with the {search['reference']}): {tried} -> percentile "
              f"{net.calibration['percentile']:g}")
    float_accuracy = net.calibration.get("float_accuracy", {})
    for key, value in float_accuracy.items():
        print(f"float ANN accuracy on {key}: {100 * value:.2f} %")
    bits = sum(l.weight.size * l.weight_bits for l in net.layers)
    print(f"wrote {args.output}/ (network.json, weights.npz, rom/*.weight.hex; {bits / 8 / 1024:.1f} KiB of weights)")
    return 0
