"""Quantisation-aware fine-tuning: train the integer iLIF network itself, through PyTorch.

With ``v0 = θ // 2`` the iLIF neuron computes ``clip(floor((W·q + b + v0) / θ), 0, 2^T - 1)``: a T-bit
quantised ReLU (DESIGN.md §1, §8). A network trained with that activation, its weights quantised as
the converter quantises them and its inputs encoded as the hardware encodes them *is* the spiking
network, so at small T (2-3) fine-tuning recovers what post-training conversion loses.

* :class:`QuantReLU` — the neuron as an activation: ``step · clip(floor(z / step + 1/2), 0, 2^T - 1)``
  with a learnable step (one per layer, or one per channel), the LSQ straight-through gradient.
  Usable on its own in any model; :mod:`.torch_import` recognises it and the converter then takes its
  step instead of calibrating the layer.
* :func:`integer_weights` — the weight fake-quantiser: the integers the converter writes
  (:mod:`.quantize`: ``θ = floor((2^(bits-1) - 1) / max|M|)`` with ``M = W·Δ_in/Δ_out``, ``W_int =
  round(θ·M)``, ``b_int = round(θ·b/Δ_out)``, ``v0 = θ // 2``; the output layer ``α = (2^(bits-1) - 1) /
  max|W·Δ_in|``), from the float weights and the two steps around the layer.
* :class:`QuantizedNetwork` — the converter's folded chain (BatchNorm, average pooling and the input
  normalisation folded by :mod:`.torch_import`) rebuilt as a trainable module, every ReLU swapped for
  a :class:`QuantReLU`. Its forward computes the integer network *exactly* (the codes, the integer
  potentials ``W_int·q + b_int`` in float32 below 2^24, :func:`~.quant_ops.fire`) in training and in
  eval mode alike; in training it adds straight-through terms whose value is zero, so gradients reach
  the float weights and the steps. It takes the original model's input (the encoder inverts the input
  normalisation, rounds to the raw byte and applies the input LUT) and returns
  ``scores · scale``: the integer scores times a positive constant, so its eval-mode labels *are* the
  integer network's. ``spikeforge convert`` reads the integers off its graph (no calibration).
* :func:`finetune` — calibrate to initialise the steps, hold out a validation split, train weights, steps and
  the input table (Adam, cosine schedule, cross-entropy plus distillation from the float model), keep the
  epoch with the best validation accuracy (or the last).

Takes arrays; dataset names are resolved by :mod:`spikeforge.finetune`.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .calibrate import InputNormalization, calibrate, fold_normalization, to_numpy_raw
from .quant_ops import EXACT_FLOAT32, encode, fire, quant_relu
from spikeforge.ir import golden
from spikeforge.ir.atomic import copy_file
from spikeforge.ir.network import MAX_TIMESTEPS
from .torch_import import LINEAR_KINDS, ConversionError, float_forward, import_model, model_input_shape

__all__ = ["QuantReLU", "QuantizedNetwork", "IntegerWeights", "integer_weights", "finetune", "FinetuneResult",
           "accuracy", "save", "SELECT_MODES"]


#: How :func:`finetune` picks the epoch it returns.
SELECT_MODES = ("validation", "last")


def _check_timesteps(timesteps):
    if not (isinstance(timesteps, (int, np.integer)) and not isinstance(timesteps, bool)
            and 1 <= timesteps <= MAX_TIMESTEPS):
        raise ConversionError(f"timesteps {timesteps!r} is not in 1..{MAX_TIMESTEPS}")


class QuantReLU(nn.Module):
    """The iLIF neuron as a PyTorch activation: a T-bit quantised ReLU with a learnable step.

    ``forward(z) = step · clip(floor(z / step + 1/2), 0, 2^T - 1)``: what the neuron with ``v0 = θ/2``
    computes (DESIGN.md §8). Gradients are straight-through (LSQ): ``∂/∂z = 1`` where the clip does
    not bind; the step learns from the rounding error inside and from clipping above.

    Parameters
    ----------
    timesteps : int
        T in 1..16: the codes are ``0 .. 2^T - 1``.
    step : float
        Initial step (the activation one spike code stands for).
    channels : int, optional
        One step per channel (dimension 1 of the input) instead of one for the layer.
    convolutional : bool
        With ``channels``: the input is (N, C, H, W) (after a Conv2d), not (N, C).

    Attributes
    ----------
    log_step : Parameter, shape (channels or 1,)
        The step's logarithm (so it stays positive and Adam moves it by relative amounts).
    step : Tensor
        ``exp(log_step)``.
    code_max : int
        ``2^T - 1``.
    """

    def __init__(self, timesteps: int = 2, step: float = 1.0, channels: int | None = None,
                 convolutional: bool = False):
        super().__init__()
        _check_timesteps(timesteps)
        if not (isinstance(step, (int, float, np.floating)) and math.isfinite(step) and step > 0):
            raise ConversionError(f"QuantReLU step {step!r} must be a positive number")
        if channels is not None and not (isinstance(channels, (int, np.integer)) and channels >= 1):
            raise ConversionError(f"QuantReLU channels {channels!r} must be a positive integer or None")
        self.timesteps = int(timesteps)
        self.code_max = (1 << self.timesteps) - 1
        self.channels = None if channels is None else int(channels)
        self.convolutional = bool(convolutional)
        self.log_step = nn.Parameter(torch.full((self.channels or 1,), math.log(float(step))))

    @property
    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step)

    def step_for(self, z: torch.Tensor) -> torch.Tensor:
        """The step shaped to broadcast against ``z`` (N, C, ...)."""
        step = torch.exp(self.log_step)
        if self.channels is None:
            return step
        # No shape check here (torch.fx traces this: no Python branch on a tensor); a wrong channel count
        # fails to broadcast.
        return step.reshape((1, -1, 1, 1) if self.convolutional else (1, -1))

    def forward(self, z):
        return quant_relu(z, self.step_for(z), self.code_max)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}" + (f", channels={self.channels}" if self.channels else "")


@dataclass
class IntegerWeights:
    """One layer's integers, as float tensors (integer-valued), and what they stand for.

    ``weight`` and ``bias`` are ``W_int`` and ``b_int``; for a layer that fires ``threshold`` and ``v0``
    are one per output channel; for the output layer they are ``None`` and ``scale`` is the float
    value of one score unit (``1/α``).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    threshold: torch.Tensor | None
    v0: torch.Tensor | None
    scale: torch.Tensor | None
    #: The output step the codes really stand for, per output channel: ``step_out`` unless even ``θ = 1``
    #: would overflow the weights, then (as the converter does) the smallest step that fits.
    step: torch.Tensor | None = None


def integer_weights(weight: torch.Tensor, bias: torch.Tensor, step_in: torch.Tensor, step_out, weight_bits: int,
                    per_channel: bool = False, conv: bool | None = None) -> IntegerWeights:
    """The converter's weight quantisation (see the module docstring), on torch tensors, without gradient.

    Parameters
    ----------
    weight, bias : the float layer, ``(O, I)`` or ``(O, C, kh, kw)``, and ``(O,)``.
    step_in : the step of the layer's input codes, shape ``(1,)`` or one per input feature (dense) /
        input channel (conv).
    step_out : the step of its output codes, shape ``(1,)`` or ``(O,)``, or ``None`` for the output layer
        (it does not fire).
    weight_bits : int
        Signed width, 2..16.
    per_channel : bool
        One threshold per output channel (the weights' scale per row) instead of one per layer.
    conv : bool, optional
        Whether the layer is a convolution (default: a 4-D weight).

    Written without data-dependent Python branches, so ``torch.fx`` and ``torch.export`` trace it.
    """
    weight, bias, step_in = weight.detach(), bias.detach(), step_in.detach()
    conv = weight.dim() == 4 if conv is None else conv
    top = float((1 << (weight_bits - 1)) - 1)
    scaled = weight * step_in.reshape((1, -1, 1, 1) if conv else (1, -1))   # the weights on input codes
    rows = weight.shape[0]
    if step_out is None:
        alpha = top / torch.clamp(scaled.abs().max(), min=1e-30)
        return IntegerWeights(torch.round(alpha * scaled), torch.round(alpha * bias), None, None, 1.0 / alpha)
    # Should θ fall below 1 the step grows instead, so nothing overflows (as in quantize.py).
    smallest = scaled.abs().max() / top
    effective = torch.maximum(step_out.detach().reshape(-1), smallest)     # (1,) or one per output channel
    step_out = effective.expand(rows)
    per_row = (-1, 1, 1, 1) if conv else (-1, 1)
    codes = scaled / step_out.reshape(per_row)                          # M: the weights on codes, in output codes
    magnitude = codes.abs().reshape(rows, -1).amax(1)
    if not per_channel:
        magnitude = magnitude.max().expand(rows)
    threshold = torch.clamp(torch.floor(top / torch.clamp(magnitude, min=1e-30)), min=1.0)
    integer = torch.clamp(torch.round(threshold.reshape(per_row) * codes), -top - 1, top)
    return IntegerWeights(integer, torch.round(threshold * bias / step_out), threshold, torch.floor(threshold / 2),
                          None, effective)


def _surrogate(hard: torch.Tensor, soft: torch.Tensor, low: float | None = None, high: float | None = None):
    """``hard`` in value, ``soft``'s gradient (only where ``low <= soft < high``): a straight-through estimator."""
    delta = soft - soft.detach()
    if low is not None:
        delta = delta * ((soft.detach() >= low) & (soft.detach() < high))
    return hard + delta


class QuantizedNetwork(nn.Module):
    """The converter's folded float chain as a trainable module that computes the integer network.

    Built by :meth:`from_layers` (see :func:`finetune`). ``forward(x)`` takes what the original model
    took (any shape holding ``prod(input_shape)`` values per sample) and returns ``scores · scale``
    (N, classes). ``layers`` holds the float weights (``nn.Linear``/``nn.Conv2d``, stored divided by a
    fixed per-layer gain so every layer's parameters are O(1) for the optimiser), ``neurons`` one
    :class:`QuantReLU` per hidden layer, ``log_input_step`` the input encoder's step.
    """

    def __init__(self, plan: list, input_shape, timesteps: int, weight_bits: list, per_channel: bool,
                 input_scale: np.ndarray, input_offset: np.ndarray, input_step: float, steps: list,
                 layers: list, names: list):
        super().__init__()
        self.plan = [tuple(p) for p in plan]
        self.input_shape = tuple(int(d) for d in input_shape)
        self.timesteps = int(timesteps)
        self.code_max = (1 << self.timesteps) - 1
        self.weight_bits = [int(b) for b in weight_bits]
        self.per_channel = bool(per_channel)
        self.names = list(names)
        features = int(np.prod(self.input_shape))
        self.register_buffer("input_scale", torch.tensor(np.broadcast_to(input_scale, features).reshape(
            self.input_shape), dtype=torch.float32))
        self.register_buffer("input_offset", torch.tensor(np.broadcast_to(input_offset, features).reshape(
            self.input_shape), dtype=torch.float32))
        self.log_input_step = nn.Parameter(torch.tensor([math.log(input_step)], dtype=torch.float32))
        # The input table is free (the hardware's LUT maps any byte to any code): per raw byte, a learned shift
        # of its code, in steps. Zero = the uniform encoder round(raw / Δ_0).
        self.input_shift = nn.Parameter(torch.zeros(256))
        modules, neurons = [], []
        for index, layer in enumerate(layers):
            if layer.kind == "dense":
                module = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
            else:
                module = nn.Conv2d(layer.weight.shape[1], layer.weight.shape[0], layer.kernel, layer.stride,
                                   layer.padding)
            weight_gain = float(np.abs(layer.weight).max()) or 1.0
            bias_gain = float(np.abs(layer.bias).max()) or 1.0
            module.register_buffer("weight_gain", torch.tensor(weight_gain))
            module.register_buffer("bias_gain", torch.tensor(bias_gain))
            # Additions one input spike causes, shaped as one sample's input: the golden model's count, so the
            # spike penalty and the additions column count what the hardware does. Derived, so not saved.
            module.register_buffer("fanout", _fanout(module, layer.in_shape), persistent=False)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(layer.weight / weight_gain))
                module.bias.copy_(torch.from_numpy(layer.bias / bias_gain))
            modules.append(module)
            if index < len(layers) - 1:
                channels = layer.out_channels if per_channel else None
                neurons.append(QuantReLU(timesteps, steps[index], channels, layer.kind == "conv2d"))
        self.layers = nn.ModuleList(modules)
        self.neurons = nn.ModuleList(neurons)

    # -- construction

    @classmethod
    def from_layers(cls, folded: list, input_shape, normalization: InputNormalization, *, timesteps: int,
                    weight_bits, per_channel: bool, input_step: float, steps: list, names=None):
        """Rebuild ``folded`` (float layers on raw bytes: :func:`.torch_import.import_model` then
        :func:`.calibrate.fold_normalization`) as a network taking the normalised input."""
        plan, layers = [], []
        shape = tuple(input_shape)
        for layer in folded:
            if layer.kind in LINEAR_KINDS:
                if layer.kind == "dense" and len(shape) != 1:
                    plan.append(("flatten",))
                plan.append(("layer", len(layers)))
                layers.append(layer)
            else:
                plan.append(("maxpool", tuple(layer.kernel), tuple(layer.stride)))
            shape = tuple(layer.out_shape)
        bits = list(weight_bits) if isinstance(weight_bits, (list, tuple)) else [weight_bits] * len(layers)
        if len(bits) != len(layers):
            raise ConversionError(f"{len(bits)} weight_bits values for {len(layers)} layers with weights")
        for b in bits:
            if not (isinstance(b, (int, np.integer)) and 2 <= b <= 16):
                raise ConversionError(f"weight_bits {b!r} is not in 2..16")
        # The model's input x = a·raw + b (normalisation); the encoder inverts it: raw = x/a - b/a.
        first_shape = tuple(folded[0].in_shape) if folded[0].kind != "dense" else tuple(input_shape)
        if int(np.prod(first_shape)) != int(np.prod(input_shape)):
            first_shape = tuple(input_shape)
        a, b = normalization.affine(first_shape if len(first_shape) == 3 else (int(np.prod(first_shape)),))
        names = list(names) if names else [f"layer{i + 1}" for i in range(len(layers))]
        return cls(plan, first_shape, timesteps, bits, per_channel, 1.0 / a, -b / a, input_step, steps, layers,
                   names)

    def __setstate__(self, state):
        super().__setstate__(state)
        # A network pickled before the fan-out buffers existed: derive them, as the constructor does.
        shape = self.input_shape
        for entry in self.plan:
            if entry[0] == "flatten":
                shape = (int(np.prod(shape)),)
            elif entry[0] == "maxpool":
                shape = _pooled(shape, entry[1], entry[2])
            else:
                module = self.layers[entry[1]]
                if "fanout" not in module._buffers:
                    module.register_buffer("fanout", _fanout(module, shape), persistent=False)
                shape = self._layer_shape(entry[1], shape)

    # -- the forward

    def input_step(self) -> torch.Tensor:
        return torch.exp(self.log_input_step)

    def input_lut(self) -> torch.Tensor:
        """The encoder: raw byte -> code ``clip(round(raw / Δ_0 + shift[raw]), 0, 2^T - 1)`` (DESIGN.md §1; the
        shifts are zero unless the table was learned)."""
        raw = torch.arange(256, dtype=torch.float32)
        return torch.clamp(torch.round(raw / self.input_step().detach() + self.input_shift.detach()), 0,
                           self.code_max)

    def weights(self, index: int):
        module = self.layers[index]
        return module.weight * module.weight_gain, module.bias * module.bias_gain

    def integers(self) -> list:
        """Every layer's :class:`IntegerWeights` for the current parameters (what conversion writes)."""
        with torch.no_grad():
            return self._run(None)[1]

    def scores_and_additions(self, x):
        """``(scores · scale, additions)``: the forward, and per sample the spike-driven additions of the integer
        network (every layer's input spikes times their fan-out, as
        :func:`spikeforge.ir.golden.spike_driven_additions` counts them; float32, exact while a sample's count is
        below 2^24). In training the count carries a
        gradient (a code ``q`` stands for ``q · T / (2^T - 1)`` spikes), so a loss can ask for fewer spikes."""
        scores, _, additions = self._run(x, count=True)
        return scores, additions

    def _layer_shape(self, index, shape):
        module = self.layers[index]
        if isinstance(module, nn.Linear):
            return (module.out_features,)
        return (module.out_channels,) + tuple(
            (size + 2 * p - k) // s + 1 for size, k, s, p in zip(shape[1:], module.kernel_size, module.stride,
                                                                 module.padding))

    def _per_channel_view(self, values, conv: bool):
        """One value (shape (1,)) or one per channel, shaped against activations (N, C) or (N, C, H, W)."""
        return values.reshape((1, -1, 1, 1) if conv else (1, -1))

    def forward(self, x):
        return self._run(x)[0]

    def _run(self, x, count: bool = False):
        """``(scores · scale, integers, additions)``; with ``x = None`` only the integers, ``additions`` only with
        ``count``. Static Python control flow only (the plan, the layer kinds, ``per_channel``), so torch.fx and
        torch.export trace it."""
        step_in = self.input_step()
        codes = None
        if x is not None:
            x = x.reshape((x.shape[0],) + self.input_shape)
            codes = encode(x, self.input_scale, self.input_offset, self.input_lut())
            if self.training:
                raw = torch.clamp(torch.round(x * self.input_scale + self.input_offset), 0, 255)
                codes = _surrogate(codes, raw / step_in + self.input_shift[raw.to(torch.int64)], -0.5,
                                   self.code_max + 0.5)
        shape = self.input_shape
        per_feature = False                  # whether step_in holds one value per channel / feature
        integers = []
        additions = None
        last = len(self.layers) - 1
        for entry in self.plan:
            if entry[0] == "flatten":
                if per_feature and len(shape) == 3:
                    step_in = step_in.reshape(-1).repeat_interleave(int(shape[1] * shape[2]))
                shape = (int(np.prod(shape)),)
                if codes is not None:
                    codes = torch.flatten(codes, 1)
                continue
            if entry[0] == "maxpool":
                shape = _pooled(shape, entry[1], entry[2])
                if codes is not None:
                    codes = F.max_pool2d(codes, entry[1], entry[2])
                continue
            index = entry[1]
            module = self.layers[index]
            conv = isinstance(module, nn.Conv2d)
            weight, bias = self.weights(index)
            fires = index < last
            step_out = self.neurons[index].step if fires else None
            integer = integer_weights(weight, bias, step_in, step_out, self.weight_bits[index], self.per_channel,
                                      conv=conv)
            integers.append(integer)
            shape = self._layer_shape(index, shape)
            if fires:          # the effective step (grown where θ would fall below 1), with the parameter's gradient
                step_out = torch.maximum(step_out, integer.step)
            if codes is None:
                step_in, per_feature = (step_out, self.per_channel) if fires else (step_in, per_feature)
                continue
            if count:
                layer_additions = _additions(codes, self.timesteps, self.code_max, module.fanout)
                additions = layer_additions if additions is None else additions + layer_additions
            # The integer path carries no gradient (its value is exact); the float path below carries it.
            potential = self._layer_op(module, codes.detach() if self.training else codes, integer.weight,
                                       integer.bias)
            soft = None
            if self.training:
                scaled = codes * (step_in.reshape((1, -1, 1, 1)) if conv else step_in)
                soft = self._layer_op(module, scaled, weight, bias)
            if not fires:
                scores = potential * integer.scale
                return (_surrogate(scores, soft) if self.training else scores), integers, additions
            codes = fire(potential, self._per_channel_view(integer.threshold, conv),
                         self._per_channel_view(integer.v0, conv), self.code_max, step_out.detach())
            if self.training:
                codes = _surrogate(codes, soft / self._per_channel_view(step_out, conv), -0.5, self.code_max + 0.5)
            step_in, per_feature = step_out, self.per_channel
        return None, integers, None

    @staticmethod
    def _layer_op(module, x, weight, bias):
        if isinstance(module, nn.Linear):
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, module.stride, module.padding)

    # -- checks

    def exactness_bound(self) -> float:
        """The largest potential any layer can reach, ``Σ|W_int|·(2^T - 1) + |b_int| + v0``; float32 is exact
        below 2^24."""
        bound = 0.0
        for integer in self.integers():
            rows = integer.weight.abs().reshape(integer.weight.shape[0], -1).sum(1) * self.code_max
            rows = rows + integer.bias.abs() + (integer.v0 if integer.v0 is not None else 0)
            bound = max(bound, float(rows.max()))
        return bound

    def steps(self) -> dict:
        """The learned steps: ``{"input": Δ_0, name: [Δ per channel or one], ...}``."""
        out = {"input": float(self.input_step().detach())}
        for name, neuron in zip(self.names, self.neurons):
            values = neuron.step.detach().tolist()
            out[name] = values[0] if len(values) == 1 else values
        return out


def _additions(codes: torch.Tensor, timesteps: int, code_max: int, fanout: torch.Tensor) -> torch.Tensor:
    """Per sample, the additions the codes' spikes cause: exact in float32 while a sample's count stays below
    2^24 (16.7 million). Its gradient is that of ``codes · T / (2^T - 1)`` spikes: a code stands for its mean
    number of 1 bits."""
    hard = codes.detach()
    bits = sum(torch.remainder(torch.floor(hard / (1 << bit)), 2) for bit in range(timesteps))
    spikes = bits + (codes - hard) * (timesteps / code_max)         # the popcount in value
    return (spikes * fanout).flatten(1).sum(1)


def _fanout(module, in_shape) -> torch.Tensor:
    """:func:`spikeforge.ir.golden.spike_fanout` of an ``nn.Linear`` or ``nn.Conv2d`` seeing ``in_shape``, shaped as
    one sample's input (float32)."""
    in_shape = tuple(int(d) for d in in_shape)
    if isinstance(module, nn.Linear):
        layer = SimpleNamespace(kind="dense", in_features=module.in_features, out_features=module.out_features)
    else:
        out = tuple((size + 2 * p - k) // s + 1 for size, k, s, p in zip(in_shape[1:], module.kernel_size,
                                                                        module.stride, module.padding))
        layer = SimpleNamespace(kind="conv2d", in_shape=in_shape, out_shape=(module.out_channels,) + out,
                                kernel=tuple(module.kernel_size), stride=tuple(module.stride),
                                padding=tuple(module.padding), out_channels=module.out_channels)
    return torch.from_numpy(golden.spike_fanout(layer).reshape(in_shape).astype(np.float32))


def _pooled(shape, kernel, stride):
    channels, height, width = shape
    return (channels,) + tuple((size - k) // s + 1 for size, k, s in zip((height, width), kernel, stride))


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes
    ----------
    model : QuantizedNetwork
        The fine-tuned network (eval mode), at its best validation epoch.
    history : list of dict
        Per epoch (0 = the calibrated start, before any training): ``epoch``, ``loss`` (mean training
        loss, ``None`` at 0), ``validation_accuracy``, ``validation_loss``, ``additions`` (mean spike-driven
        additions per validation sample), ``seconds``.
    best_epoch : int
    train_samples, validation_samples : int
    seconds : float
        Wall time of calibration and training.
    steps : dict
        The learned steps (:meth:`QuantizedNetwork.steps`).
    """

    model: QuantizedNetwork
    history: list
    best_epoch: int
    train_samples: int
    validation_samples: int
    seconds: float
    steps: dict = field(default_factory=dict)
    initial_steps: dict = field(default_factory=dict)
    #: Filled by callers that know a test split: ``{"dataset/test": {"float": acc, "finetuned": acc}}``.
    evaluation: dict = field(default_factory=dict)
    #: The input normalisation the network was fine-tuned with (what ``spikeforge convert`` must be given).
    normalization: InputNormalization | None = None

    @property
    def validation_accuracy(self) -> float:
        return self.history[self.best_epoch]["validation_accuracy"]

    def to_json(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch, "train_samples": self.train_samples,
                "validation_samples": self.validation_samples, "seconds": self.seconds, "steps": self.steps,
                "initial_steps": self.initial_steps, "validation_accuracy": self.validation_accuracy,
                "evaluation": self.evaluation,
                "normalization": None if self.normalization is None else self.normalization.as_dict()}


def accuracy(model: nn.Module, inputs: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    """Eval-mode accuracy of ``model`` on model inputs (lowest index on ties, as the hardware)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            scores = model(torch.as_tensor(inputs[start:start + batch], dtype=torch.float32))
            correct += int((scores.argmax(1).numpy() == np.asarray(labels[start:start + batch])).sum())
    return correct / max(len(inputs), 1)


def _validate(model, inputs, labels, batch: int = 1000) -> dict:
    """Eval-mode accuracy, mean cross-entropy and mean spike-driven additions on the validation split."""
    model.eval()
    correct, total, additions = 0, 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            scores, counted = model.scores_and_additions(torch.as_tensor(inputs[start:start + batch],
                                                                         dtype=torch.float32))
            target = torch.as_tensor(labels[start:start + batch], dtype=torch.int64)
            correct += int((scores.argmax(1) == target).sum())
            total += float(F.cross_entropy(scores, target, reduction="sum"))
            additions += float(counted.double().sum())
    return {"validation_accuracy": correct / len(inputs), "validation_loss": total / len(inputs),
            "additions": additions / len(inputs)}


def finetune(model: nn.Module, images, labels, *, timesteps: int, weight_bits=8, epochs: int = 5,
             per_channel: bool = False, normalization: InputNormalization | None = None, input_shape=None,
             validation: float = 0.1, batch: int = 128, lr: float = 1e-3, seed: int = 0, percentile: float = 99.9,
             calibration_samples: int = 5000, distill: float = 1.0, step_lr: float = 1.0,
             input_table: bool = True, table_lr: float = 10.0, select: str = "validation",
             spike_penalty: float = 0.0, penalty_start: float = 0.0, shift: int = 0, flip: bool = False,
             threads: int | None = None, progress=None) -> FinetuneResult:
    """Fine-tune ``model`` for T-timestep iLIF: the returned network computes the integer network exactly.

    Parameters
    ----------
    model : torch.nn.Module
        A trained classifier the converter accepts (its ReLUs, of any spelling, become :class:`QuantReLU`).
    images : array (N, ...)
        Raw training samples (bytes, 0..255), as ``spikeforge.convert`` takes them.
    labels : int array (N,)
    timesteps : int
        T in 1..16.
    weight_bits : int or list of int
        Per layer with weights when a list.
    epochs : int
        Passes over the training part (>= 0; 0 = calibrate only).
    per_channel : bool
        One threshold and one step per output channel.
    normalization : InputNormalization
        How the model's input is made from raw bytes (default: the model takes raw bytes).
    validation : float
        Fraction of the samples held out (a fixed shuffle by ``seed``) to pick the best epoch; 0 < it < 1.
    batch, lr, seed : Adam with a cosine schedule from ``lr`` (relative: every layer's weights are O(1)).
    percentile : float
        The calibration that initialises the steps (as ``spikeforge.convert``'s default clip).
    calibration_samples : int
        Calibrate on at most this many training samples.
    distill : float
        Weight of a distillation term: the KL divergence from the float model's output distribution
        (``loss = cross-entropy + distill · KL``); 0 = labels only. Default 1: the float model's soft labels
        steady the training (on the 8 digits seeds the mean gap to float shrank from 1.6 to 1.1 points).
    step_lr : float
        The steps' learning rate relative to the weights' (``lr · step_lr``).
    input_table : bool
        Learn the input table too: the hardware's 256-entry LUT may map any byte to any code, so each raw
        byte's code ``round(raw / Δ_0 + shift[raw])`` gets a learned shift (straight-through, learning rate
        ``lr · table_lr``). Off: the uniform encoder ``round(raw / Δ_0)``. On by default: at T = 2 the input
        has only four codes, and where their boundaries sit matters.
    select : str
        ``"validation"``: keep the epoch with the best validation accuracy (ties: the lower validation loss);
        ``"last"``: keep the last epoch (the validation split is still measured and reported).
    spike_penalty : float
        Weight of an activity term: the batch's spike-driven additions (every layer's input spikes times
        their fan-out, the event-driven hardware's accumulate work) relative to the calibrated network's on
        the validation split, ``loss += spike_penalty · additions / additions_0``; 0 (default) = off. It
        trades accuracy for sparsity; the history records the validation additions of every epoch (and the
        training loss includes the term). With ``select="validation"`` only epochs trained with the penalty
        are candidates.
    penalty_start : float
        The fraction of the epochs trained before the spike penalty starts (0 <= it < 1; default 0: from the
        first). Starting it halfway lets the network fit first and then shed spikes at the lower learning
        rate of the cosine schedule's second half: on the 8 digits seeds at T = 2, penalty 0.2 from halfway
        kept all 8 within 1 point of float with 30 % fewer additions, where penalties from the start lost
        more than a point on 2-3 seeds for the same saving.
    shift : int
        Augment the training images ((H, W) or (C, H, W)) with random translations by up to this many pixels
        each way (a fresh draw per sample and epoch; the vacated border holds the raw byte 0); 0 (default) = none.
        Images are channels first, as PyTorch's. The distillation targets stay the float model's outputs on the
        image as it was. Use the augmentation the float model was trained with: on a Fashion-MNIST CNN trained
        without it, ``shift=1`` cost 0.6 points (part of that may be the targets of the unshifted image).
    flip : bool
        Augment the training images with random left-right mirroring (for datasets where a mirrored sample keeps
        its label: clothes, not digits).
    threads : int, optional
        torch CPU threads while training (restored afterwards).
    progress : callable, optional
        ``progress(record)`` after each epoch (and once for epoch 0) with the history entry.
    """
    _check_timesteps(timesteps)
    for name, value, low in (("epochs", epochs, 0), ("batch", batch, 1)):
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
            raise ConversionError(f"{name} {value!r} must be an integer >= {low}")
    if not (isinstance(validation, (int, float)) and 0 < validation < 1):
        raise ConversionError(f"validation fraction {validation!r} is not in (0, 1)")
    for name, value in (("learning rate", lr), ("step_lr", step_lr), ("table_lr", table_lr)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
            raise ConversionError(f"{name} {value!r} must be a positive number")
    for name, value in (("distill", distill), ("spike_penalty", spike_penalty)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
                and math.isfinite(value)):
            raise ConversionError(f"{name} {value!r} must be a number >= 0")
    if not (isinstance(penalty_start, (int, float)) and not isinstance(penalty_start, bool)
            and 0 <= penalty_start < 1):
        raise ConversionError(f"penalty_start {penalty_start!r} is not in [0, 1): the fraction of the epochs before "
                              f"the spike penalty starts")
    if select not in SELECT_MODES:
        raise ConversionError(f"select {select!r} is not one of {', '.join(map(repr, SELECT_MODES))}")
    if not (isinstance(shift, (int, np.integer)) and not isinstance(shift, bool) and 0 <= shift <= 8):
        raise ConversionError(f"shift {shift!r} is not an integer in 0..8 (pixels)")
    if not isinstance(flip, bool):
        raise ConversionError(f"flip {flip!r} must be True or False")
    raw = to_numpy_raw(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if raw.ndim < 2 or len(raw) != len(labels):
        raise ConversionError(f"{len(labels)} labels for training samples of shape {raw.shape}")
    if len(raw) < 10:
        raise ConversionError(f"{len(raw)} training samples are too few to hold out a validation split (>= 10)")
    normalization = normalization or InputNormalization()
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        order = np.random.default_rng(seed).permutation(len(raw))
        held = max(1, int(round(validation * len(raw))))
        valid_rows, train_rows = order[:held], order[held:]
        input_shape = model_input_shape(model, raw.shape[1:], input_shape)
        if (shift or flip) and len(input_shape) not in (2, 3):
            raise ConversionError(f"shift and flip augment images, (H, W) or (C, H, W); the model's input has shape "
                                  f"{tuple(input_shape)}")
        float_layers = import_model(model, input_shape)
        folded = fold_normalization(float_layers, normalization, input_shape)
        calibration_rows = train_rows[:calibration_samples]
        measured = calibrate(folded, raw[calibration_rows], percentile=percentile)
        code_max = (1 << timesteps) - 1
        network = QuantizedNetwork.from_layers(
            folded, input_shape, normalization, timesteps=timesteps, weight_bits=weight_bits,
            per_channel=per_channel, input_step=measured.input_max / code_max,
            steps=[scale / code_max for scale in measured.activation_scales],
            names=[layer.path for layer in float_layers if layer.kind in LINEAR_KINDS])
        bound = network.exactness_bound()
        if bound >= EXACT_FLOAT32:
            raise ConversionError(f"a layer's potential can reach {bound:.3g} >= 2^24, beyond float32's exact "
                                  f"integers; use fewer weight bits or timesteps")
        inputs = normalization.apply(raw.reshape((len(raw),) + tuple(input_shape))).astype(np.float32)
        x_train, y_train = torch.from_numpy(inputs[train_rows]), torch.from_numpy(labels[train_rows])
        x_valid, y_valid = inputs[valid_rows], labels[valid_rows]
        teacher = torch.from_numpy(float_forward(folded, raw[train_rows]).astype(np.float32)) if distill else None
        background = torch.from_numpy(normalization.apply(np.zeros((1,) + tuple(input_shape))).astype(np.float32))
        initial_steps = network.steps()
        history = [{"epoch": 0, "loss": None, **_validate(network, x_valid, y_valid),
                    "seconds": time.perf_counter() - start}]
        if progress is not None:
            progress(history[0])
        reference_additions = max(history[0]["additions"], 1.0)
        best_state, best_epoch = copy.deepcopy(network.state_dict()), 0
        # The first epoch trained with the spike penalty (0 without one). Only it and later ones may be kept: an
        # earlier one would quietly drop the penalty the user asked for.
        first_penalised = math.floor(penalty_start * epochs + 1e-9) + 1 if spike_penalty > 0 else 0
        if epochs:
            generator = torch.Generator().manual_seed(seed)
            groups = [{"params": list(network.layers.parameters()), "lr": lr},
                      {"params": list(network.neurons.parameters()) + [network.log_input_step], "lr": lr * step_lr}]
            if input_table:
                groups.append({"params": [network.input_shift], "lr": lr * table_lr})
            optimizer = torch.optim.Adam(groups)
            steps_total = epochs * ((len(x_train) + batch - 1) // batch)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps_total)
            for epoch in range(1, epochs + 1):
                began = time.perf_counter()
                network.train()
                penalised = spike_penalty > 0 and epoch >= first_penalised
                total, count = 0.0, 0
                permutation = torch.randperm(len(x_train), generator=generator)
                for begin in range(0, len(x_train), batch):
                    rows = permutation[begin:begin + batch]
                    optimizer.zero_grad()
                    x = _augment(x_train[rows], shift, flip, background, generator) if shift or flip else x_train[rows]
                    if penalised:
                        logits, additions = network.scores_and_additions(x)
                    else:
                        logits = network(x)
                    loss = F.cross_entropy(logits, y_train[rows])
                    if penalised:
                        loss = loss + spike_penalty * additions.mean() / reference_additions
                    if teacher is not None:
                        loss = loss + distill * F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher[rows], 1),
                                                         reduction="batchmean", log_target=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total += float(loss.detach()) * len(rows)
                    count += len(rows)
                record = {"epoch": epoch, "loss": total / count, **_validate(network, x_valid, y_valid),
                          "seconds": time.perf_counter() - began}
                history.append(record)
                best = history[best_epoch]
                # Small validation splits saturate: equal accuracy goes to the lower validation loss.
                if select == "last" or (epoch >= first_penalised and (best_epoch < first_penalised or (
                        record["validation_accuracy"], -record["validation_loss"]) >
                        (best["validation_accuracy"], -best["validation_loss"]))):
                    best_state, best_epoch = copy.deepcopy(network.state_dict()), epoch
                if progress is not None:
                    progress(record)
        network.load_state_dict(best_state)
        network.eval()
        bound = network.exactness_bound()
        if bound >= EXACT_FLOAT32:
            raise ConversionError(f"after fine-tuning a layer's potential can reach {bound:.3g} >= 2^24, beyond "
                                  f"float32's exact integers; use fewer weight bits or timesteps")
    finally:
        torch.set_num_threads(previous_threads)
    return FinetuneResult(model=network, history=history, best_epoch=best_epoch, train_samples=len(train_rows),
                          validation_samples=len(valid_rows), seconds=time.perf_counter() - start,
                          steps=network.steps(), initial_steps=initial_steps, normalization=normalization)


def _augment(x: torch.Tensor, shift: int, flip: bool, background: torch.Tensor, generator) -> torch.Tensor:
    """Images ``x`` (N, [C,] H, W) randomly mirrored left-right (with ``flip``) and translated by up to ``shift``
    pixels each way, the vacated border filled with ``background`` (1, [C,] H, W): the model input of the raw
    byte 0."""
    count = x.shape[0]
    if flip:
        mirrored = (torch.rand(count, generator=generator) < 0.5).reshape((-1,) + (1,) * (x.dim() - 1))
        x = torch.where(mirrored, x.flip(-1), x)
    if shift:
        height, width = x.shape[-2:]
        padded = F.pad(x - background, (shift, shift, shift, shift))
        offsets = torch.randint(0, 2 * shift + 1, (2, count), generator=generator)
        moved = torch.empty_like(x)
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                rows = (offsets[0] == dy) & (offsets[1] == dx)
                moved[rows] = padded[rows, ..., dy:dy + height, dx:dx + width]
        x = moved + background
    return x


def save(network: QuantizedNetwork, path) -> Path:
    """Write a fine-tuned network for ``spikeforge convert``: ``.pt2`` (a ``torch.export`` program with a
    dynamic batch; loading it needs the ``spikeforge::`` ops registered: ``import spikeforge.nn`` or any
    spikeforge loader) or ``.pt``/``.pth`` (the pickled module). Written atomically."""
    path = Path(path)
    if path.suffix not in (".pt2", ".pt", ".pth"):
        raise ConversionError(f"{path}: a fine-tuned model is saved as .pt2 (torch.export) or .pt/.pth (pickled "
                              f"module)")
    network = network.eval()
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / path.name
        if path.suffix == ".pt2":
            example = torch.zeros((2,) + network.input_shape)
            program = torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, staged)
        else:
            torch.save(network, staged)
        return copy_file(staged, path)
