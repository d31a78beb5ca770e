"""Quantisation-aware fine-tuning: QuantReLU, the weight fake-quantiser, the fine-tuned network and its exact
conversion (fx-traced module and torch.export program)."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.cnn_models import load_digits_cnn
from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.convert import ConversionError, convert
from spikeforge.converter.model_files import load_model
from spikeforge.converter.qat import QuantReLU, finetune, integer_weights, save
from spikeforge.converter.quantize import quantize_layers
from spikeforge.converter.torch_import import FloatLayer
from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import load_digits_mlp
from spikeforge.ir import golden

SCALE = InputNormalization(scale=255.0)


def test_quant_relu_is_the_clip_floor_neuron_with_lsq_gradients():
    neuron = QuantReLU(timesteps=2, step=0.5)
    z = torch.tensor([-1.0, 0.2, 0.26, 0.74, 1.3, 1.76, 5.0], requires_grad=True)
    out = neuron(z)
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.5, 1.5, 1.5])     # 0.5 · clip(floor(z/0.5 + 1/2), 0, 3)
    out.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # ∂/∂step: q - z/step inside, 3 above, 0 below; through log_step: times step.
    x = z.detach() / 0.5
    q = torch.clamp(torch.floor(x + 0.5), 0, 3)
    inside = (torch.floor(x + 0.5) >= 0) & (torch.floor(x + 0.5) <= 3)
    expected = torch.where(inside, q - x, torch.where(torch.floor(x + 0.5) > 3, 3.0, 0.0)).sum() * 0.5
    assert float(neuron.log_step.grad) == pytest.approx(float(expected), rel=1e-5)


def test_quant_relu_refuses_bad_arguments():
    with pytest.raises(ConversionError, match=r"timesteps 0 is not in 1\.\.16"):
        QuantReLU(timesteps=0)
    with pytest.raises(ConversionError, match=r"QuantReLU step -1 must be a positive number"):
        QuantReLU(timesteps=2, step=-1)


@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_weights_match_the_converters_quantisation(per_channel):
    rng = np.random.default_rng(3)
    weight, bias = rng.normal(size=(6, 5)), rng.normal(size=6)
    hidden = FloatLayer("a", weight, bias, relu=True)
    output = FloatLayer("b", rng.normal(size=(3, 6)), rng.normal(size=3), relu=False)
    input_max, scale, timesteps = 200.0, 3.7, 3
    layers, _ = quantize_layers([hidden, output], input_max, [scale], timesteps, 8, per_channel=per_channel)
    step_in, step_out = torch.tensor([input_max / 7]), torch.tensor([scale / 7])
    mine = integer_weights(torch.tensor(weight), torch.tensor(bias), step_in, step_out, 8, per_channel)
    assert np.array_equal(mine.weight.numpy(), layers[0].weight)
    assert np.array_equal(mine.bias.numpy(), layers[0].bias)
    assert np.array_equal(mine.threshold.numpy(), layers[0].threshold)
    assert np.array_equal(mine.v0.numpy(), layers[0].v0)
    scores = integer_weights(torch.tensor(output.weight), torch.tensor(output.bias), mine.step[:1], None, 8)
    assert np.array_equal(scores.weight.numpy(), layers[1].weight)
    assert np.array_equal(scores.bias.numpy(), layers[1].bias)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _agreement(model, net, samples, normalization):
    with torch.no_grad():
        own = model(torch.tensor(normalization.apply(samples), dtype=torch.float32))
    result = net.run(samples.astype(np.uint8))
    return np.mean(own.argmax(1).numpy() == result.labels), own.numpy(), result


@pytest.mark.slow     # torch.export and its loader: seconds each
def test_finetuned_mlp_converts_exactly_with_its_learned_steps(digits, tmp_path):
    train, test = digits
    result = finetune(load_digits_mlp(), train.samples[:300], train.labels[:300], timesteps=2, epochs=1,
                      normalization=SCALE, batch=64)
    assert [r["epoch"] for r in result.history] == [0, 1]
    assert result.validation_samples == 30 and result.train_samples == 270
    model = result.model
    # The converter reads the integers off the graph: no calibration, the learned steps recorded.
    net = convert(model, train.samples[:50], timesteps=2, normalization=SCALE)
    assert net.calibration["method"] == "finetuned"
    assert net.calibration["activation_steps"] == pytest.approx([result.steps["fc1"], result.steps["fc2"]])
    agree, own, golden = _agreement(model, net, test.samples, SCALE)
    assert agree == 1.0
    # The model's eval-mode outputs are the integer scores times one positive constant.
    ratio = own / np.where(golden.scores == 0, np.nan, golden.scores)
    assert np.nanmax(ratio) == pytest.approx(np.nanmin(ratio), rel=1e-5)
    # Same network from a torch.export program on disk.
    path = save(model, tmp_path / "qat.pt2")
    again = convert(load_model(str(path)), train.samples[:50], timesteps=2, normalization=SCALE)
    for a, b in zip(net.layers, again.layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.threshold, b.threshold)
    assert np.array_equal(net.input_lut, again.input_lut)


@pytest.mark.parametrize("per_channel", [False, True])
def test_finetuned_cnn_converts_exactly(digits, per_channel):
    train, test = digits
    result = finetune(load_digits_cnn(), train.images[:200], train.labels[:200], timesteps=2, epochs=1,
                      per_channel=per_channel, batch=50)
    assert isinstance(result.steps["conv1"], list if per_channel else float)
    net = convert(result.model, train.images[:50], timesteps=2)
    assert [layer.kind for layer in net.layers] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "dense"]
    assert (len(set(net.layers[0].threshold.tolist())) > 1) == per_channel
    agree, _, _ = _agreement(result.model, net, test.images[:200], InputNormalization())
    assert agree == 1.0


def test_a_learned_input_table_converts_exactly(digits):
    train, test = digits
    result = finetune(load_digits_mlp(), train.samples[:300], train.labels[:300], timesteps=2, epochs=2,
                      normalization=SCALE, batch=32, input_table=True, table_lr=100.0, distill=1.0, select="last")
    model = result.model
    assert result.best_epoch == 2                                   # select="last"
    lut = model.input_lut().numpy()
    uniform = np.clip(np.round(np.arange(256) / result.steps["input"]), 0, 3)
    assert not np.array_equal(lut, uniform)                         # the table learned
    net = convert(model, train.samples[:50], timesteps=2, normalization=SCALE)
    assert np.array_equal(net.input_lut, lut)
    agree, _, _ = _agreement(model, net, test.samples, SCALE)
    assert agree == 1.0


def _strided_cnn():
    """Stride, a non-square kernel, padding on one axis and padding beyond the kernel's reach: border pixels reach
    few taps. 1x8x8 -> 4x4x7 -> 6x3x5 -> 10."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, (3, 2), stride=(2, 1), padding=(1, 0)), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(90, 10))


@pytest.mark.parametrize("kind, timesteps", [("mlp", 2), ("mlp", 3), ("cnn", 2), ("strided-cnn", 3)])
def test_the_networks_count_of_additions_is_the_golden_models(digits, kind, timesteps):
    """The differentiable count the spike penalty trains on equals golden.spike_driven_additions, sample by
    sample: popcounts of the codes, a dense layer's outputs and a conv's in-map taps times channels."""
    train, test = digits
    model, images, normalization = {
        "mlp": lambda: (load_digits_mlp(), train.samples, SCALE),
        "cnn": lambda: (load_digits_cnn(), train.images, InputNormalization()),
        "strided-cnn": lambda: (_strided_cnn(), train.images, InputNormalization(scale=255.0)),
    }[kind]()
    tuned = finetune(model, images[:200], train.labels[:200], timesteps=timesteps, epochs=1, batch=50,
                     normalization=normalization).model
    net = convert(tuned, images[:50], timesteps=timesteps, normalization=normalization)
    samples = test.samples if kind == "mlp" else test.images
    run = net.run(samples)
    if kind == "strided-cnn":       # spikes reach the second conv, whose border inputs reach fewer taps
        fanout = golden.spike_fanout(net.layers[1])
        assert run.input_spikes(per_feature=True)[1].sum() > 0 and fanout.min() < fanout.max()
    expected = golden.spike_driven_additions(net, run.input_spikes(per_feature=True))
    with torch.no_grad():
        scores, additions = tuned.scores_and_additions(torch.tensor(normalization.apply(samples), dtype=torch.float32))
    assert np.array_equal(additions.numpy(), expected)
    assert np.array_equal(scores.argmax(1).numpy(), run.labels)
    # A network pickled before the fan-out buffers existed (they are not saved) gets them back when loaded.
    old = copy.deepcopy(tuned)
    for module in old.layers:
        del module._buffers["fanout"]
    with torch.no_grad():
        _, recounted = pickle.loads(pickle.dumps(old)).scores_and_additions(
            torch.tensor(normalization.apply(samples), dtype=torch.float32))
    assert np.array_equal(recounted.numpy(), expected)


def test_a_spike_penalty_trades_additions_and_starts_when_asked(digits):
    """Same seed and recipe, with and without the penalty: the penalised network makes fewer spike-driven
    additions (validation and test) and still converts exactly; with ``penalty_start`` the epochs before it are
    the unpenalised run's."""
    train, test = digits
    runs = {}
    for penalty, start in ((0.0, 0.0), (3.0, 0.0), (3.0, 0.5)):
        result = finetune(load_digits_mlp(), train.samples[:400], train.labels[:400], timesteps=2, epochs=4,
                          normalization=SCALE, batch=32, lr=5e-3, select="last", spike_penalty=penalty,
                          penalty_start=start)
        assert all("additions" in record for record in result.history)
        assert result.history[0]["additions"] > 0
        net = convert(result.model, train.samples[:50], timesteps=2, normalization=SCALE)
        agree, _, run = _agreement(result.model, net, test.samples, SCALE)
        assert agree == 1.0
        runs[penalty, start] = (result.history, golden.spike_driven_additions(net, run.input_spikes()).mean())
    plain, penalised, late = runs[0.0, 0.0], runs[3.0, 0.0], runs[3.0, 0.5]
    assert penalised[0][-1]["additions"] < 0.8 * plain[0][-1]["additions"]     # validation additions
    assert penalised[1] < 0.8 * plain[1]                                      # the integer network on the test split
    assert [r["additions"] for r in late[0][:3]] == [r["additions"] for r in plain[0][:3]]   # epochs 1-2: no penalty
    assert late[0][-1]["additions"] < plain[0][-1]["additions"]
    # Choosing by validation accuracy keeps an epoch trained with the penalty, never one from before it.
    kept = finetune(load_digits_mlp(), train.samples[:400], train.labels[:400], timesteps=2, epochs=4,
                    normalization=SCALE, batch=32, lr=5e-3, spike_penalty=3.0, penalty_start=0.5)
    assert kept.best_epoch >= 3


def test_finetuned_network_refuses_another_t_or_fewer_weight_bits(digits):
    train, _ = digits
    model = finetune(load_digits_mlp(), train.samples[:100], train.labels[:100], timesteps=2, epochs=0,
                     normalization=SCALE).model
    with pytest.raises(ConversionError, match=r"fine-tuned for T = 2; convert it with timesteps 2 \(asked: 3\)"):
        convert(model, train.samples[:20], timesteps=3, normalization=SCALE)
    with pytest.raises(ConversionError, match=r"the fine-tuned weights need 8 bits; weight_bits 4 is too narrow"):
        convert(model, train.samples[:20], timesteps=2, weight_bits=4, normalization=SCALE)


def test_a_quant_relu_model_converts_with_its_step_instead_of_calibration(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), QuantReLU(timesteps=3, step=0.4), nn.Linear(32, 10))
    x = torch.tensor(SCALE.apply(train.samples[:200]), dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(20):
        optimiser.zero_grad()
        F.cross_entropy(model(x), torch.tensor(train.labels[:200])).backward()
        optimiser.step()
    model.eval()
    step = float(model[2].step.detach())
    assert step != pytest.approx(0.4)                          # it learned
    net = convert(model, train.samples[:200], timesteps=3, normalization=SCALE)
    assert net.calibration["learned_steps"] == ["layer1"]
    assert net.calibration["activation_steps"] == pytest.approx([step], rel=1e-6)
    with pytest.raises(ConversionError, match=r"'1': its QuantReLU was trained for T = 3 \(codes 0\.\.7\); convert "
                                              r"with timesteps 3"):
        convert(model, train.samples[:200], timesteps=2, normalization=SCALE)
    per_channel = nn.Sequential(nn.Linear(64, 8), QuantReLU(timesteps=2, channels=8), nn.Linear(8, 10)).eval()
    with pytest.raises(ConversionError, match=r"a QuantReLU with one step per channel converts only as part of a "
                                              r"network spikeforge.finetune wrote"):
        convert(per_channel, train.samples[:50].reshape(50, 64), timesteps=2, normalization=SCALE)


def test_a_positive_scale_of_the_scores_is_allowed_and_changes_nothing(digits):
    train, _ = digits

    class Scaled(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):
            return self.base(x) * 3.0

    base = load_digits_mlp()
    plain = convert(base, train.samples[:100], timesteps=4, normalization=SCALE)
    scaled = convert(Scaled(base).eval(), train.samples[:100], timesteps=4, normalization=SCALE)
    for a, b in zip(plain.layers, scaled.layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)


def test_augmentation_moves_and_mirrors_each_image_and_fills_with_the_background():
    from spikeforge.converter.qat import _augment

    images = torch.arange(1, 6 * 2 * 5 * 4 + 1, dtype=torch.float32).reshape(6, 2, 5, 4)
    background = torch.tensor([-1.0, -2.0]).reshape(1, 2, 1, 1).expand(1, 2, 5, 4)
    moved = _augment(images, 2, True, background, torch.Generator().manual_seed(0))
    padded = torch.cat([background.expand(6, 2, 5, 4)] * 3, 2)
    padded = torch.cat([padded] * 3, 3)
    seen = set()
    for index, (image, out) in enumerate(zip(images, moved)):
        matches = []
        for mirrored, source in ((False, image), (True, image.flip(-1))):
            canvas = padded[index].clone()
            canvas[:, 5:10, 4:8] = source
            matches += [(mirrored, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                        if torch.equal(canvas[:, 5 - dy:10 - dy, 4 - dx:8 - dx], out)]
        assert len(matches) == 1, matches               # exactly one mirroring and translation
        seen.add(matches[0])
    assert len(seen) > 2                                # a fresh draw per sample


@pytest.mark.slow     # fine-tunes the digits CNN with augmentation and converts: ~5 s
def test_an_augmented_cnn_converts_exactly(digits):
    train, test = digits
    result = finetune(load_digits_cnn(), train.images[:300], train.labels[:300], timesteps=2, epochs=2, batch=50,
                      shift=1, flip=True, select="last")
    net = convert(result.model, train.images[:50], timesteps=2)
    agree, _, _ = _agreement(result.model, net, test.images, InputNormalization())
    assert agree == 1.0
    plain = finetune(load_digits_cnn(), train.images[:300], train.labels[:300], timesteps=2, epochs=2, batch=50,
                     select="last")
    # Epoch 1's batch order is drawn before any augmentation draw: a different loss there is the augmentation's.
    assert plain.history[1]["loss"] != result.history[1]["loss"]
    # nn.Module's own conversions work on the network (a method of it once shadowed nn.Module._apply).
    moved = result.model.to("cpu").double().float()
    assert agree == 1.0 and moved is result.model


def test_finetune_refuses_bad_arguments(digits):
    train, _ = digits
    model = load_digits_mlp()
    with pytest.raises(ConversionError, match=r"validation fraction 1.5 is not in \(0, 1\)"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, validation=1.5)
    with pytest.raises(ConversionError, match=r"epochs -1 must be an integer >= 0"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, epochs=-1)
    with pytest.raises(ConversionError, match=r"49 labels for training samples of shape \(50, 8, 8\)"):
        finetune(model, train.samples[:50], train.labels[:49], timesteps=2)
    with pytest.raises(ConversionError, match=r"select 'best' is not one of 'validation', 'last'"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, select="best")
    with pytest.raises(ConversionError, match=r"step_lr 0 must be a positive number"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, step_lr=0)
    with pytest.raises(ConversionError, match=r"distill -1 must be a number >= 0"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, distill=-1)
    with pytest.raises(ConversionError, match=r"spike_penalty nan must be a number >= 0"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, spike_penalty=float("nan"))
    with pytest.raises(ConversionError, match=r"penalty_start 1 is not in \[0, 1\)"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, spike_penalty=0.1, penalty_start=1)
    with pytest.raises(ConversionError, match=r"shift -1 is not an integer in 0\.\.8 \(pixels\)"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, shift=-1)
    with pytest.raises(ConversionError, match=r"flip 1 must be True or False"):
        finetune(model, train.samples[:50], train.labels[:50], timesteps=2, flip=1)
    with pytest.raises(ConversionError, match=r"shift and flip augment images, \(H, W\) or \(C, H, W\); the model's "
                                              r"input has shape \(64,\)"):
        finetune(model, train.samples[:50].reshape(50, 64), train.labels[:50], timesteps=2, shift=1)
    with pytest.raises(ConversionError, match=r"a fine-tuned model is saved as \.pt2"):
        save(finetune(model, train.samples[:50], train.labels[:50], timesteps=2, epochs=0).model, "x.onnx")


@pytest.mark.slow     # fine-tunes, evaluates the test split, converts: ~10 s
def test_finetune_command_prints_epochs_and_writes_a_model_convert_takes(tmp_path, capsys):
    from spikeforge import cli

    factory = tmp_path / "mlp.py"
    factory.write_text("from spikeforge.demo_model import load_digits_mlp\n\ndef make():\n    return load_digits_mlp()\n")
    out = tmp_path / "qat.pt"
    status = cli.main(["finetune", f"{factory}:make", "--dataset", "digits", "-T", "2", "--epochs", "1",
                       "--samples", "200", "--threads", "1", "--distill", "0.5", "--select", "last", "--spike-penalty", "0.1",
                       "--penalty-start", "0.5", "-o", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "(steps from calibration, before training)" in printed
    assert "epoch      loss  validation  additions" in printed
    assert "validation split: 20 of 200 training samples held out (seed 0)" in printed
    assert "test accuracy on digits/test (540 samples): float 97.96 %, fine-tuned T = 2" in printed
    assert "next: spikeforge convert" in printed and out.is_file()
    assert cli.main(["convert", str(out), "--calibrate", "digits", "-T", "2", "-o", str(tmp_path / "net")]) == 0
    assert "finetuned" in (tmp_path / "net" / "network.json").read_text()
    assert cli.main(["finetune", f"{factory}:make", "--dataset", "digits", "-T", "2", "-o",
                     str(tmp_path / "x.onnx")]) == 2
    capsys.readouterr()
    assert cli.main(["finetune", f"{factory}:make", "--dataset", "digits", "-T", "2", "--spike-penalty", "-1", "-o",
                     str(tmp_path / "y.pt")]) == 2
    assert "spike_penalty -1.0 must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()
    assert cli.main(["finetune", f"{factory}:make", "--dataset", "digits", "-T", "2", "--shift", "9", "-o",
                     str(tmp_path / "y.pt")]) == 2
    assert "shift 9 is not an integer in 0..8 (pixels)" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()
