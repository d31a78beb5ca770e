"""`spikeforge finetune`: quantisation-aware fine-tuning for short spike trains (T <= 3)."""

from __future__ import annotations

import time
from pathlib import Path

from spikeforge.commands import add_model_arguments
from spikeforge.ir.errors import InputError
from spikeforge.progress import step

NAME = "finetune"
HELP = "fine-tune a trained model for T-timestep iLIF (quantisation-aware): ANN accuracy at T = 2-3, exact conversion"


def add_arguments(parser):
    add_model_arguments(parser, "the model saw raw/SCALE (default: the dataset's, 255, unless the model normalises "
                                "its input itself)")
    parser.add_argument("--dataset", required=True,
                        help="training data: a dataset name (digits, fashion-mnist, mnist-5k) or MNIST-format directory")
    parser.add_argument("--timesteps", "-T", type=int, required=True, help="T, 1..16 (fine-tuning pays at T <= 3)")
    parser.add_argument("--weight-bits", type=int, default=8, help="signed weight width, 2..16 (default 8)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training split (default 5)")
    parser.add_argument("--samples", type=int, default=None, help="use only the first N training samples")
    parser.add_argument("--validation", type=float, default=0.1,
                        help="fraction of the training samples held out to pick the best epoch (0.1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, relative to each layer's scale "
                                                               "(1e-3), cosine schedule")
    parser.add_argument("--batch", type=int, default=128, help="batch size (128)")
    parser.add_argument("--per-channel", action="store_true", help="one threshold and one step per output channel")
    parser.add_argument("--distill", type=float, default=1.0,
                        help="weight of the distillation term (KL from the float model's outputs; 0 = labels only; 1)")
    parser.add_argument("--input-table", choices=["learn", "uniform"], default="learn",
                        help="learn the input LUT's byte -> code table (default) or keep round(raw / step)")
    parser.add_argument("--spike-penalty", type=float, default=0.0,
                        help="weight of an activity term: fewer spikes, so fewer spike-driven additions and accumulate "
                             "cycles, for some accuracy (the loss adds it times the additions relative to the "
                             "calibrated network's; 0 = off)")
    parser.add_argument("--penalty-start", type=float, default=0.0,
                        help="fraction of the epochs trained before the spike penalty starts (0 = from the first; "
                             "0.5 = the second half, gentler on accuracy)")
    parser.add_argument("--shift", type=int, default=0,
                        help="augment image inputs with random translations of up to N pixels each way (0 = none)")
    parser.add_argument("--flip", action="store_true",
                        help="augment image inputs with random left-right mirroring (clothes yes, digits no)")
    parser.add_argument("--select", choices=["validation", "last"], default="validation",
                        help="keep the epoch with the best validation accuracy (default) or the last one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split and batch order (0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads while training")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="the fine-tuned model: .pt2 (torch.export) or .pt (pickled module)")


def run(args) -> int:
    # torch and the converter load in seconds: imported here so `spikeforge --help` stays fast.
    from spikeforge.converter.calibrate import InputNormalization  # imports torch
    from spikeforge.converter.model_files import load_model  # imports torch
    from spikeforge.converter.qat import save  # imports torch
    from spikeforge.finetuning import finetune  # imports torch

    if args.output.suffix not in (".pt2", ".pt", ".pth"):
        raise InputError(f"-o {args.output}: the fine-tuned model is written as .pt2 (torch.export) or .pt (pickled "
                         f"module)")
    with step(f"loading {args.model}"):
        model = load_model(args.model, None if args.state_dict is None else str(args.state_dict))
    normalization = None
    if args.input_scale is not None or args.input_mean != 0.0 or args.input_std != 1.0:
        normalization = InputNormalization(scale=1.0 if args.input_scale is None else args.input_scale,
                                           mean=args.input_mean, std=args.input_std)
    print(f"fine-tuning for T = {args.timesteps}, {args.weight_bits}-bit weights on {args.dataset}/train, "
          f"{args.epochs} epoch(s)")
    print(f"  {'epoch':>5}  {'loss':>8}  {'validation':>10}  {'additions':>9}  {'time':>7}")

    def progress(record):
        loss = "-" if record["loss"] is None else f"{record['loss']:.4f}"
        note = "  (steps from calibration, before training)" if record["epoch"] == 0 else ""
        print(f"  {record['epoch']:>5}  {loss:>8}  {100 * record['validation_accuracy']:>9.2f}%  "
              f"{record['additions']:>9,.0f}  {record['seconds']:>6.1f}s{note}", flush=True)

    start = time.perf_counter()
    result = finetune(model, args.dataset, timesteps=args.timesteps, weight_bits=args.weight_bits,
                      epochs=args.epochs, samples=args.samples, normalization=normalization,
                      per_channel=args.per_channel, validation=args.validation, lr=args.lr, batch=args.batch,
                      distill=args.distill, input_table=args.input_table == "learn", select=args.select,
                      spike_penalty=args.spike_penalty, penalty_start=args.penalty_start, shift=args.shift,
                      flip=args.flip,
                      seed=args.seed, threads=args.threads, progress=progress)
    seconds = time.perf_counter() - start
    print(f"validation split: {result.validation_samples} of {result.validation_samples + result.train_samples} "
          f"training samples held out (seed {args.seed}); best epoch {result.best_epoch}: "
          f"{100 * result.validation_accuracy:.2f} %")
    for key, measured in result.evaluation.items():
        print(f"test accuracy on {key} ({measured['samples']} samples): float {100 * measured['float']:.2f} %, "
              f"fine-tuned T = {args.timesteps} {100 * measured['finetuned']:.2f} % (= its integer network)")
    steps = ", ".join(f"{name} {_brief(value)}" for name, value in result.steps.items())
    print(f"learned steps: {steps}")
    print(f"fine-tuning took {seconds / 60:.1f} min")
    with step(f"writing {args.output}"):
        save(result.model, args.output)
    scale = result.normalization.scale if result.normalization is not None else 1.0
    option = "" if scale == 255.0 else f" --input-scale {scale:g}"
    print(f"next: spikeforge convert {args.output} --calibrate {args.dataset} -T {args.timesteps}"
          f"{' --weight-bits ' + str(args.weight_bits) if args.weight_bits != 8 else ''}{option} -o NETWORK_DIR")
    return 0


def _brief(value) -> str:
    if isinstance(value, list):
        return f"{min(value):.3g}..{max(value):.3g}"
    return f"{value:.3g}"
