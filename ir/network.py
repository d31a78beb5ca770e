"""The integer spiking network: spikeforge's intermediate representation and on-disk format.

A :class:`Network` is what the converter produces and what the golden model, the HDL generator and
the board flow consume. It holds only integers (see DESIGN.md §1, the arithmetic contract, and §1b for
convolution and pooling):

* ``input_lut``: 256 entries, raw input byte -> T-bit spike code;
* layers, each with an ``out_shape``: :class:`DenseLayer` (a signed ``weight_bits`` weight matrix,
  out x in), :class:`Conv2dLayer` (weights (Co, C, kh, kw), stride, zero padding) — both with an
  integer bias, a threshold ``>= 1`` and an initial potential ``v0`` per output channel — and
  :class:`MaxPool2dLayer` (no arrays: the max of each window's codes).

On disk (DESIGN.md §2) a network is a directory with ``network.json`` (the manifest),
``weights.npz`` (the arrays the manifest names) and ``rom/<layer>.weight.hex`` (``$readmemh``
images; dense address = ``in_index * out_features + out_index``, conv address
``((ci·kh + dy)·kw + dx)·Co + co``). Dense-only networks are written as format version 1, byte for
byte as before; a conv or pool makes it version 2. :func:`load` reads both.

What :func:`load` refuses beyond the manifest's structure: ROM images that are missing or hold other
weights than weights.npz (they are part of the format, for tools that read them instead of the npz;
``load(path, check_rom=False).save(path)`` rewrites them), and values whose arithmetic would leave
exact int64 (:data:`VALUE_BOUND`). Samples are raw bytes (:func:`raw_samples`).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import golden
from .atomic import staged_directory
from .errors import InputError

__all__ = [
    "FORMAT", "VERSION", "AMPLIFICATION", "MAX_TIMESTEPS", "NetworkFormatError",
    "READ_VERSIONS", "DenseShapes", "DenseLayer", "Conv2dLayer", "MaxPool2dLayer", "LAYER_KINDS", "Network", "load",
    "raw_samples", "VALUE_BOUND", "INPUT_SCALE_HINT",
]

FORMAT = "spikeforge-network"
#: The version :meth:`Network.save` writes for networks with conv or pool layers (dense-only ones stay at 1).
VERSION = 2
#: The versions :func:`load` reads.
READ_VERSIONS = (1, 2)
#: The amplification factor k of the iLIF neuron. Only k = 2 makes a spike train a binary number.
AMPLIFICATION = 2
MIN_TIMESTEPS, MAX_TIMESTEPS = 1, 16
MIN_WEIGHT_BITS, MAX_WEIGHT_BITS = 2, 16


#: Biases and initial potentials stay within ±VALUE_BOUND and every potential the golden model (closed
#: form, and for a network read from disk the literal timestep model too) and the hardware compute
#: within ±2·VALUE_BOUND: int64 arithmetic is then exact. Larger values are refused.
VALUE_BOUND = 1 << 61

#: What to do about samples that are not raw bytes (the hint every such refusal carries).
INPUT_SCALE_HINT = ("spikeforge takes the raw bytes 0..255 (uint8) and folds the model's input scaling into the "
                    "first layer: pass the unscaled bytes and give the scaling at conversion (--input-scale 255 "
                    "for a model that saw x/255; InputNormalization(scale=255) in Python)")


class NetworkFormatError(InputError):
    """A network directory or object does not follow the spikeforge network format."""


def raw_samples(samples, what: str = "samples") -> np.ndarray:
    """``samples`` as a uint8 array of raw bytes, or an :class:`InputError` saying why they are not.

    Accepted: integer arrays with values 0..255, and float arrays holding only whole numbers 0..255
    (not all within 0..1). Refused, with :data:`INPUT_SCALE_HINT`: values already scaled (floats in
    0..1 or with fractions), negative values, values above 255, non-numeric arrays.
    """
    try:
        array = np.asarray(samples)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} are not an array of raw bytes ({error})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{what} have dtype {array.dtype}; raw samples are bytes 0..255 (uint8)")
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    span = f"values span {low:g}..{high:g} ({array.dtype})" if array.dtype.kind == "f" else \
        f"values span {low}..{high} ({array.dtype})"
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"{what} hold NaN or infinite values; {INPUT_SCALE_HINT}")
        if high <= 1.0 or np.any(array != np.round(array)):
            raise InputError(f"{what} are not raw bytes: {span}, they look scaled already; {INPUT_SCALE_HINT}")
    if low < 0 or high > 255:
        raise InputError(f"{what} are not raw bytes: {span}, outside 0..255; {INPUT_SCALE_HINT}")
    return array.astype(np.uint8)


def _as_int_array(value, what: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise NetworkFormatError(f"{what} must be an integer array, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise NetworkFormatError(f"{what} holds {array.max()}, which does not fit int64 (at most "
                                 f"{np.iinfo(np.int64).max}; the arithmetic bound is {VALUE_BOUND})")
    array = array.astype(np.int64)
    if array.shape != shape:
        raise NetworkFormatError(f"{what} has shape {array.shape}, expected {shape}")
    return array


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_tuple(value, length: int, what: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``length`` Python ints; a single int is repeated (PyTorch's convention)."""
    if _is_int(value):
        return (int(value),) * length
    try:
        items = tuple(value)
    except TypeError:
        raise NetworkFormatError(f"{what} {value!r} is not an integer or a sequence of {length} integers") from None
    if len(items) != length or not all(_is_int(item) for item in items):
        raise NetworkFormatError(f"{what} {value!r} is not an integer or a sequence of {length} integers")
    return tuple(int(item) for item in items)


def _check_name(name):
    if not isinstance(name, str) or not name.isidentifier():
        raise NetworkFormatError(f"layer name {name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")


def _check_neuron_arrays(layer, out_channels: int) -> None:
    """Validate and normalise ``bias``, ``threshold``, ``v0`` (one per output channel) and ``weight_bits``."""
    name = layer.name
    layer.bias = _as_int_array(layer.bias, f"layer {name!r}: bias", (out_channels,))
    layer.threshold = _as_int_array(np.broadcast_to(layer.threshold, (out_channels,)),
                                    f"layer {name!r}: threshold", (out_channels,))
    layer.v0 = _as_int_array(np.broadcast_to(layer.v0, (out_channels,)), f"layer {name!r}: v0", (out_channels,))
    if not (_is_int(layer.weight_bits) and MIN_WEIGHT_BITS <= layer.weight_bits <= MAX_WEIGHT_BITS):
        raise NetworkFormatError(f"layer {name!r}: weight_bits {layer.weight_bits!r} is not in "
                                 f"{MIN_WEIGHT_BITS}..{MAX_WEIGHT_BITS}")
    layer.weight_bits = int(layer.weight_bits)
    low, high = -(1 << (layer.weight_bits - 1)), (1 << (layer.weight_bits - 1)) - 1
    if layer.weight.min() < low or layer.weight.max() > high:
        raise NetworkFormatError(
            f"layer {name!r}: weights span {layer.weight.min()}..{layer.weight.max()}, which does not fit "
            f"{layer.weight_bits}-bit two's complement ({low}..{high})")
    if layer.threshold.min() < 1:
        raise NetworkFormatError(f"layer {name!r}: threshold {layer.threshold.min()} < 1; thresholds must be >= 1")
    layer.fires = bool(layer.fires)


def _check_exact(layer, timesteps: int, literal: bool) -> None:
    """Refuse a layer whose potentials could leave the range where int64 arithmetic is exact.

    Every network: ``|b|`` and ``|v0|`` below :data:`VALUE_BOUND` and the accumulator bound
    ``Σ|W|·(2^T-1) + |b| + |v0|`` at most ``2·VALUE_BOUND`` (the closed form and the hardware).
    With ``literal`` (a network read from disk, :func:`load`): the literal timestep model too, which
    doubles a saturated or negative potential T times in the fire phase and compares with ``θ·2^T``:
    a firing layer needs ``bound·2^T`` and ``θ·2^(T+1)`` at most ``2·VALUE_BOUND``.
    """
    name = layer.name
    for key in ("bias", "v0"):
        values = getattr(layer, key)
        if values.min() < -VALUE_BOUND or values.max() > VALUE_BOUND:
            extreme = values.min() if -int(values.min()) > int(values.max()) else values.max()
            raise NetworkFormatError(f"layer {name!r}: {key} {extreme} is out of range: |{key}| must be at most "
                                     f"{VALUE_BOUND} (2^61) for the arithmetic to stay exact in int64")
    limit = 2 * VALUE_BOUND
    bound = layer.accumulator_bound(timesteps)      # safe in int64 now: each term is at most 2^61
    growth = 1 << timesteps if literal and layer.fires else 1
    if bound * growth > limit:
        raise NetworkFormatError(
            f"layer {name!r}: its potential can reach {bound} (Σ|W|·(2^T-1) + |b| + |v0|)"
            + (f", which the literal iLIF model doubles T = {timesteps} times" if growth > 1 else "")
            + f": above {limit} (2^62), where int64 arithmetic stops being exact; at T = {timesteps} the bound "
              f"is {limit // growth}: the bias or v0 is too large")
    if literal and layer.fires and int(layer.threshold.max()) << (timesteps + 1) > limit:
        raise NetworkFormatError(f"layer {name!r}: threshold {layer.threshold.max()}·2^{timesteps + 1} (the literal "
                                 f"model's fire level, doubled) exceeds {limit} (2^62); at T = {timesteps} θ must be "
                                 f"at most {limit >> (timesteps + 1)}")


def _rom_hex(words: np.ndarray, weight_bits: int) -> str:
    digits = (weight_bits + 3) // 4
    mask = (1 << weight_bits) - 1
    return "".join(f"{int(w) & mask:0{digits}x}\n" for w in words)


def _accumulator_bound(weight_rows: np.ndarray, bias: np.ndarray, v0: np.ndarray, timesteps: int) -> int:
    code_max = (1 << timesteps) - 1
    bound = np.abs(weight_rows).sum(axis=1) * code_max + np.abs(bias) + np.abs(v0)
    return int(bound.max())


def _window_output_size(what: str, size: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's floor-mode output size; refuses a window that does not fit even once."""
    span = size + 2 * padding
    if span < kernel:
        raise NetworkFormatError(f"{what}: kernel {kernel} does not fit an input of size {size} with padding "
                                 f"{padding}; the output would be empty")
    return (span - kernel) // stride + 1


def _check_window(name: str, in_shape, kernel, stride, padding):
    """Validate a 2-D window (kernel, stride, padding) over ``in_shape`` (C, H, W); return the normalised tuples."""
    in_shape = _int_tuple(in_shape, 3, f"layer {name!r}: in_shape")
    if min(in_shape) < 1:
        raise NetworkFormatError(f"layer {name!r}: in_shape {in_shape} must be (C, H, W) with every size >= 1")
    kernel = _int_tuple(kernel, 2, f"layer {name!r}: kernel")
    stride = _int_tuple(stride, 2, f"layer {name!r}: stride")
    padding = _int_tuple(padding, 2, f"layer {name!r}: padding")
    if min(kernel) < 1:
        raise NetworkFormatError(f"layer {name!r}: kernel {kernel} must be >= 1")
    if min(stride) < 1:
        raise NetworkFormatError(f"layer {name!r}: stride {stride} must be >= 1")
    if min(padding) < 0 or any(p >= k for p, k in zip(padding, kernel)):
        raise NetworkFormatError(f"layer {name!r}: padding {padding} must be >= 0 and smaller than the kernel "
                                 f"{kernel} (a wider pad only adds outputs that see nothing but padding)")
    out_hw = tuple(_window_output_size(f"layer {name!r}", size, k, s, p)
                   for size, k, s, p in zip(in_shape[1:], kernel, stride, padding))
    return in_shape, kernel, stride, padding, out_hw


class DenseShapes:
    """The shapes of a dense layer, read off its ``(out, in)`` weight matrix (shared by the IR's
    :class:`DenseLayer` and the converter's float layer)."""

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_shape(self) -> tuple[int]:
        """``(in_features,)``: a dense layer sees its input flattened (CHW order after a conv)."""
        return (self.in_features,)

    @property
    def out_shape(self) -> tuple[int]:
        return (self.out_features,)


@dataclass(eq=False)
class DenseLayer(DenseShapes):
    """A fully connected layer of iLIF neurons (``fires=True``) or the output layer (``fires=False``).

    Parameters
    ----------
    name : str
        Unique layer name (the key of folding configs and ROM file names); ``[A-Za-z_][A-Za-z0-9_]*``.
    weight : int array, shape (out_features, in_features)
        Signed weights, each representable in ``weight_bits`` two's-complement bits.
    bias : int array, shape (out_features,)
    threshold : int array, shape (out_features,)
        Firing threshold θ >= 1 per output neuron (a per-layer threshold is a constant array).
    v0 : int array, shape (out_features,)
        Initial membrane potential (0 = floor, θ // 2 = round to nearest).
    weight_bits : int
        2..16.
    fires : bool
        ``True`` for hidden layers (their neurons spike), ``False`` for the output layer (scores).
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray
    v0: np.ndarray
    weight_bits: int
    fires: bool = True
    kind: str = field(default="dense", init=False)

    def __post_init__(self):
        _check_name(self.name)
        weight = np.asarray(self.weight)
        if weight.ndim != 2:
            raise NetworkFormatError(f"layer {self.name!r}: weight must be 2-D (out x in), got shape {weight.shape}")
        out_features, in_features = weight.shape
        if out_features < 1 or in_features < 1:
            raise NetworkFormatError(f"layer {self.name!r}: empty weight matrix of shape {weight.shape}")
        self.weight = _as_int_array(weight, f"layer {self.name!r}: weight", weight.shape)
        _check_neuron_arrays(self, out_features)

    def rom_words(self) -> np.ndarray:
        """Weights in ROM order: address ``in_index * out_features + out_index``."""
        return self.weight.T.reshape(-1)

    def rom_hex(self) -> str:
        """The ``$readmemh`` image: one ``weight_bits``-wide two's-complement word per line."""
        return _rom_hex(self.rom_words(), self.weight_bits)

    def accumulator_bound(self, timesteps: int) -> int:
        """Worst-case ``|V|`` during accumulation and fire: ``Σ|W|·(2^T-1) + |b| + |v0|`` over neurons."""
        return _accumulator_bound(self.weight, self.bias, self.v0, timesteps)

    def __eq__(self, other):
        if not isinstance(other, DenseLayer):
            return NotImplemented
        return (self.name == other.name and self.kind == other.kind and self.fires == other.fires
                and self.weight_bits == other.weight_bits
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("weight", "bias", "threshold", "v0")))


@dataclass(eq=False)
class Conv2dLayer:
    """A 2-D convolution of iLIF neurons (``fires=True``) or, as the last linear op, the output layer.

    ``V[co,y,x] = Σ W[co,ci,dy,dx] · q[ci, y·sh+dy-ph, x·sw+dx-pw] + b[co] + v0[co]`` with zero padding
    (DESIGN.md §1b); groups = 1 and dilation = 1 (other values are not representable).

    Parameters
    ----------
    name : str
        Unique layer name; ``[A-Za-z_][A-Za-z0-9_]*``.
    weight : int array, shape (Co, C, kh, kw)
        Signed ``weight_bits`` weights, PyTorch's layout.
    bias : int array, shape (Co,)
    threshold : int array, shape (Co,) or scalar
        θ >= 1 per output channel (a scalar is one threshold for the layer).
    v0 : int array, shape (Co,) or scalar
        Initial potential per output channel.
    weight_bits : int
        2..16.
    in_shape : (C, H, W)
        The input map; ``C`` must equal the weight's second dimension.
    stride : int or (sh, sw)
        >= 1.
    padding : int or (ph, pw)
        Zero padding, ``0 <= p < kernel``.
    fires : bool
        ``False`` only for the output layer (scores are the CHW flatten of ``V`` without ``v0``).

    Attributes
    ----------
    kernel : (kh, kw)
    out_shape : (Co, Ho, Wo)
    in_features, out_features : int
        ``C·H·W`` and ``Co·Ho·Wo``.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray
    v0: np.ndarray
    weight_bits: int
    in_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    fires: bool = True
    kind: str = field(default="conv2d", init=False)

    def __post_init__(self):
        _check_name(self.name)
        weight = np.asarray(self.weight)
        if weight.ndim != 4 or min(weight.shape) < 1:
            raise NetworkFormatError(f"layer {self.name!r}: conv2d weight must be 4-D (Co, C, kh, kw) and "
                                     f"non-empty, got shape {weight.shape}")
        self.weight = _as_int_array(weight, f"layer {self.name!r}: weight", weight.shape)
        self.in_shape, kernel, self.stride, self.padding, self._out_hw = _check_window(
            self.name, self.in_shape, weight.shape[2:], self.stride, self.padding)
        if weight.shape[1] != self.in_shape[0]:
            raise NetworkFormatError(f"layer {self.name!r}: weight {weight.shape} takes {weight.shape[1]} input "
                                     f"channels, but in_shape {self.in_shape} has {self.in_shape[0]}")
        _check_neuron_arrays(self, weight.shape[0])

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(int(k) for k in self.weight.shape[2:])

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels,) + self._out_hw

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_features(self) -> int:
        return int(np.prod(self.out_shape))

    def rom_words(self) -> np.ndarray:
        """Weights in ROM order: address ``((ci·kh + dy)·kw + dx)·Co + co``."""
        return self.weight.transpose(1, 2, 3, 0).reshape(-1)

    def rom_hex(self) -> str:
        """The ``$readmemh`` image: one ``weight_bits``-wide two's-complement word per line."""
        return _rom_hex(self.rom_words(), self.weight_bits)

    def accumulator_bound(self, timesteps: int) -> int:
        """Worst-case ``|V|``: ``max over co of Σ|W[co]|·(2^T-1) + |b| + |v0|`` (padding ignored)."""
        return _accumulator_bound(self.weight.reshape(self.out_channels, -1), self.bias, self.v0, timesteps)

    def __eq__(self, other):
        if not isinstance(other, Conv2dLayer):
            return NotImplemented
        return (self.name == other.name and self.fires == other.fires and self.weight_bits == other.weight_bits
                and self.in_shape == other.in_shape and self.stride == other.stride
                and self.padding == other.padding
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("weight", "bias", "threshold", "v0")))


@dataclass(eq=False)
class MaxPool2dLayer:
    """Max pooling of spike codes over ``kernel`` windows (no padding, floor mode, DESIGN.md §1b).

    It has no arrays and no neurons of its own: it passes the largest code of each window on, so it
    always "fires" (``fires`` is ``True``) and is never the last layer.

    Parameters
    ----------
    name : str
    in_shape : (C, H, W)
    kernel : int or (kh, kw)
    stride : int or (sh, sw), optional
        Defaults to the kernel (PyTorch's default).

    Attributes
    ----------
    out_shape : (C, Ho, Wo)
    in_features, out_features : int
    padding : (0, 0)
        Always zero; present so code may treat windows uniformly.
    """

    name: str
    in_shape: tuple
    kernel: tuple
    stride: tuple = None
    kind: str = field(default="maxpool2d", init=False)
    fires: bool = field(default=True, init=False)

    def __post_init__(self):
        _check_name(self.name)
        stride = self.kernel if self.stride is None else self.stride
        self.in_shape, self.kernel, self.stride, _, self._out_hw = _check_window(
            self.name, self.in_shape, self.kernel, stride, 0)

    @property
    def padding(self) -> tuple[int, int]:
        return (0, 0)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.in_shape[0],) + self._out_hw

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_features(self) -> int:
        return int(np.prod(self.out_shape))

    def __eq__(self, other):
        if not isinstance(other, MaxPool2dLayer):
            return NotImplemented
        return (self.name == other.name and self.in_shape == other.in_shape and self.kernel == other.kernel
                and self.stride == other.stride)


#: The layer classes a :class:`Network` holds, by their ``kind``.
LAYER_KINDS = {"dense": DenseLayer, "conv2d": Conv2dLayer, "maxpool2d": MaxPool2dLayer}


@dataclass(eq=False)
class Network:
    """An integer spiking network of iLIF neurons (k = 2), ready for the golden model and the HDL.

    Parameters
    ----------
    timesteps : int
        T in 1..16: a spike train is T bits, first step = most significant bit.
    input_shape : tuple of int
        Shape of one raw sample: ``(features,)`` or ``(H, W)`` for a dense first layer (flattened
        row-major), ``(C, H, W)`` or ``(H, W)`` (meaning ``(1, H, W)``) for a conv or pool first layer.
    input_lut : int array, shape (256,)
        Raw byte -> T-bit input code.
    layers : list of DenseLayer, Conv2dLayer, MaxPool2dLayer
        Their shapes chain (a dense layer after a map takes its CHW flatten). Every linear layer but
        the last fires; the last is the output layer (``fires=False``, dense or a conv); a pool is never last.
    classes : list of str
        Class names, one per output neuron.
    calibration : dict
        Free-form, JSON-serialisable record of how the network was made (scales, method, accuracy).
    """

    timesteps: int
    input_shape: tuple
    input_lut: np.ndarray
    layers: list
    classes: list
    calibration: dict = field(default_factory=dict)
    amplification: int = field(default=AMPLIFICATION, init=False)

    def __post_init__(self):
        if not (_is_int(self.timesteps) and MIN_TIMESTEPS <= self.timesteps <= MAX_TIMESTEPS):
            raise NetworkFormatError(f"timesteps {self.timesteps!r} is not in {MIN_TIMESTEPS}..{MAX_TIMESTEPS}")
        self.timesteps = int(self.timesteps)
        try:
            self.input_shape = tuple(int(d) for d in self.input_shape)
        except (TypeError, ValueError):
            raise NetworkFormatError(f"input shape {self.input_shape!r} is not a sequence of integers") from None
        if not self.input_shape or min(self.input_shape) < 1:
            raise NetworkFormatError(f"input shape {self.input_shape} must hold at least one size, each >= 1")
        self.input_lut = _as_int_array(self.input_lut, "input LUT", (256,))
        if self.input_lut.min() < 0 or self.input_lut.max() > self.code_max:
            raise NetworkFormatError(f"input LUT codes span {self.input_lut.min()}..{self.input_lut.max()}, "
                                     f"outside 0..{self.code_max} (T = {self.timesteps})")
        self.layers = list(self.layers)
        if not self.layers:
            raise NetworkFormatError("a network needs at least one layer")
        names = [getattr(layer, "name", None) for layer in self.layers]
        if len(set(names)) != len(names):
            raise NetworkFormatError(f"layer names must be unique, got {names}")
        shape = self.input_shape
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, tuple(LAYER_KINDS.values())):
                raise NetworkFormatError(f"layer {index} is a {type(layer).__name__}; supported: DenseLayer, "
                                         f"Conv2dLayer, MaxPool2dLayer")
            if isinstance(layer, DenseLayer):
                if layer.in_features != int(np.prod(shape)):
                    raise NetworkFormatError(f"layer {layer.name!r} takes {layer.in_features} inputs, but its "
                                             f"input has {int(np.prod(shape))}")
            else:
                map_shape = (1,) + shape if len(shape) == 2 and index == 0 else shape
                if len(map_shape) != 3:
                    raise NetworkFormatError(
                        f"layer {layer.name!r} ({layer.kind}) takes a [C, H, W] map, but its input has shape "
                        f"{list(shape)}" + (" (a map cannot follow a dense layer)" if index else ""))
                if map_shape != layer.in_shape:
                    raise NetworkFormatError(f"layer {layer.name!r} takes in_shape {list(layer.in_shape)}, but "
                                             f"its input has shape {list(map_shape)}")
            is_last = index == len(self.layers) - 1
            if isinstance(layer, MaxPool2dLayer):
                if is_last:
                    raise NetworkFormatError(f"layer {layer.name!r}: a maxpool2d cannot be the last layer; the "
                                             f"output layer is dense (or a conv)")
            elif layer.fires == is_last:
                raise NetworkFormatError(f"layer {layer.name!r}: fires={layer.fires}, but only the last layer "
                                         f"(the output layer) may have fires=False, and it must")
            shape = layer.out_shape
        for layer in self.linear_layers:
            _check_exact(layer, self.timesteps, literal=False)
        if np.any(self.output_layer.v0 != 0):
            raise NetworkFormatError(f"output layer {self.output_layer.name!r}: v0 must be 0 (scores are W·q + b)")
        if not all(isinstance(c, (str, int, np.integer)) and not isinstance(c, bool) for c in self.classes):
            raise NetworkFormatError(f"class names must be strings (or integers), got {list(self.classes)[:10]!r}")
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) != self.layers[-1].out_features:
            raise NetworkFormatError(f"{len(self.classes)} class names for {self.layers[-1].out_features} outputs")
        self.calibration = dict(self.calibration)

    # -- derived facts -----------------------------------------------------------------------------

    @property
    def code_max(self) -> int:
        """The largest spike code, ``2^T - 1`` (a neuron that fires every timestep)."""
        return (1 << self.timesteps) - 1

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    @property
    def hidden_layers(self) -> list:
        """Every layer but the output layer (pools included)."""
        return self.layers[:-1]

    @property
    def linear_layers(self) -> list:
        """The layers with weights (dense and conv2d), in order; the last is the output layer."""
        return [layer for layer in self.layers if not isinstance(layer, MaxPool2dLayer)]

    @property
    def output_layer(self):
        return self.layers[-1]

    @property
    def has_conv(self) -> bool:
        """True when any layer is a conv2d."""
        return any(layer.kind == "conv2d" for layer in self.layers)

    @property
    def has_maps(self) -> bool:
        """True when a conv or pool layer is present (the network needs format version 2)."""
        return any(not isinstance(layer, DenseLayer) for layer in self.layers)

    def layer(self, name: str):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def score_bound(self) -> int:
        """Worst-case ``|score|`` of the output layer."""
        return self.output_layer.accumulator_bound(self.timesteps)

    def describe(self) -> str:
        """One line per layer, for people."""
        lines = [f"T = {self.timesteps}, input {'x'.join(map(str, self.input_shape))} bytes -> "
                 f"{self.in_features} codes"]
        for layer in self.layers:
            lines.append(f"  {layer.name:<10} " + _describe_layer(layer))
        return "\n".join(lines)

    # -- running -----------------------------------------------------------------------------------

    def run(self, samples):
        """Classify raw samples with the golden model (closed form); see :func:`spikeforge.ir.golden.run`.

        ``samples`` are raw bytes (:func:`raw_samples`): scaled, negative or too large values are refused.
        """
        return golden.run(self, raw_samples(samples))

    # -- persistence -------------------------------------------------------------------------------

    @property
    def format_version(self) -> int:
        """1 for a dense-only network (the bytes older tools read), 2 when a conv or pool is present."""
        return VERSION if self.has_maps else 1

    def manifest(self) -> dict:
        layers = []
        for layer in self.layers:
            if isinstance(layer, MaxPool2dLayer):
                layers.append({"name": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
                               "out_shape": list(layer.out_shape), "kernel": list(layer.kernel),
                               "stride": list(layer.stride)})
                continue
            entry = {"name": layer.name, "kind": layer.kind}
            if isinstance(layer, Conv2dLayer):
                entry.update({"in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
                              "kernel": list(layer.kernel), "stride": list(layer.stride),
                              "padding": list(layer.padding)})
            entry.update({
                "in_features": layer.in_features, "out_features": layer.out_features,
                "weight_bits": layer.weight_bits, "fires": layer.fires,
                "weight": f"{layer.name}.weight", "bias": f"{layer.name}.bias",
                "threshold": f"{layer.name}.threshold", "v0": f"{layer.name}.v0",
                "rom": f"rom/{layer.name}.weight.hex",
                "accumulator_bound": layer.accumulator_bound(self.timesteps),
            })
            layers.append(entry)
        return {
            "format": FORMAT, "version": self.format_version,
            "timesteps": self.timesteps, "amplification": self.amplification,
            "input": {"shape": list(self.input_shape), "lut": "input.lut"},
            "layers": layers, "classes": list(self.classes),
            "calibration": self.calibration,
        }

    def arrays(self) -> dict:
        arrays = {"input.lut": self.input_lut}
        for layer in self.linear_layers:
            for key in ("weight", "bias", "threshold", "v0"):
                arrays[f"{layer.name}.{key}"] = getattr(layer, key)
        return arrays

    def save(self, path) -> Path:
        """Write the network directory atomically (a temporary sibling, then a rename).

        An existing network directory at ``path`` is replaced; any other existing path is refused.
        """
        path = Path(path)
        if path.exists() and not (path / "network.json").is_file():
            if not path.is_dir() or any(path.iterdir()):
                raise FileExistsError(f"{path} exists and is not a spikeforge network directory; refusing to "
                                      f"overwrite it")
        with staged_directory(path) as staging:
            (staging / "rom").mkdir()
            with open(staging / "weights.npz", "wb") as f:
                np.savez(f, **self.arrays())
            for layer in self.linear_layers:
                (staging / "rom" / f"{layer.name}.weight.hex").write_text(layer.rom_hex())
            (staging / "network.json").write_text(json.dumps(self.manifest(), indent=2) + "\n")
        return path

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return (self.timesteps == other.timesteps and self.input_shape == other.input_shape
                and np.array_equal(self.input_lut, other.input_lut) and self.layers == other.layers
                and self.classes == other.classes and self.calibration == other.calibration)


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def _theta_text(theta: np.ndarray) -> str:
    return f"θ {theta.min()}" if theta.min() == theta.max() else f"θ {theta.min()}..{theta.max()}"


def _describe_layer(layer) -> str:
    if isinstance(layer, MaxPool2dLayer):
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        stride = "" if layer.stride == layer.kernel else f" s{sh}" if sh == sw else f" s{sh}x{sw}"
        return f"maxpool {kh}x{kw}{stride}  {_shape_text(layer.in_shape)} -> {_shape_text(layer.out_shape)}"
    role = "iLIF" if layer.fires else "output"
    if isinstance(layer, DenseLayer):
        return (f"{role:<6} {layer.in_features:>5} -> {layer.out_features:<5} "
                f"{layer.weight_bits}-bit weights, {_theta_text(layer.threshold)}")
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    stride = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
    padding = f"p{ph}" if ph == pw else f"p{ph}x{pw}"
    return (f"{role:<6} conv {kh}x{kw} {stride} {padding}  {_shape_text(layer.in_shape)} -> "
            f"{_shape_text(layer.out_shape)}  {layer.weight_bits}-bit weights, {_theta_text(layer.threshold)}")


# -- loading ---------------------------------------------------------------------------------------

_SUPPORTED_KINDS = ", ".join(repr(kind) for kind in LAYER_KINDS)


def _get(mapping: dict, key: str, where: str, kind, kind_text: str):
    """``mapping[key]``, refusing a missing key or a value of the wrong JSON type with the key's name."""
    if key not in mapping:
        raise NetworkFormatError(f"{where}: required key {key!r} is missing")
    value = mapping[key]
    if kind is int:
        ok = _is_int(value)
    elif kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise NetworkFormatError(f"{where}: key {key!r} must be {kind_text}, got {value!r}")
    return value


def _get_shape(mapping: dict, key: str, where: str, length: int) -> tuple[int, ...]:
    value = _get(mapping, key, where, list, f"a list of {length} integers")
    if len(value) != length or not all(_is_int(v) for v in value):
        raise NetworkFormatError(f"{where}: key {key!r} must be a list of {length} integers, got {value!r}")
    return tuple(value)


def _read_arrays(weights_path: Path) -> dict:
    try:
        # Open the file here: np.load leaks its own handle when the archive is corrupt.
        with open(weights_path, "rb") as file, np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise NetworkFormatError(f"{weights_path}: not a readable .npz archive ({type(error).__name__}: "
                                 f"{error})") from None


def _load_layer(entry, index: int, version: int, where: str, array):
    if not isinstance(entry, dict):
        raise NetworkFormatError(f"{where}: layer {index} must be an object, got {entry!r}")
    name = _get(entry, "name", f"{where}: layer {index}", str, "a string")
    where = f"{where}: layer {name!r}"
    kind = _get(entry, "kind", where, str, "a string")
    if kind not in LAYER_KINDS:
        raise NetworkFormatError(f"{where} has kind {kind!r}; supported: {_SUPPORTED_KINDS}")
    if kind != "dense" and version < 2:
        raise NetworkFormatError(f"{where} has kind {kind!r}, which needs format version 2 (this is version "
                                 f"{version})")
    for key in ("groups", "dilation"):
        if key in entry and entry[key] not in (1, [1, 1]):
            raise NetworkFormatError(f"{where}: {key} {entry[key]!r} is not supported; only {key} = 1")
    if kind == "maxpool2d":
        layer = MaxPool2dLayer(name=name, in_shape=_get_shape(entry, "in_shape", where, 3),
                               kernel=_get_shape(entry, "kernel", where, 2),
                               stride=_get_shape(entry, "stride", where, 2))
    else:
        def named_array(key):
            return array(_get(entry, key, where, str, "the name of an array in weights.npz"))
        arrays = {key: named_array(key) for key in ("weight", "bias", "threshold", "v0")}
        weight_bits = _get(entry, "weight_bits", where, int, "an integer")
        fires = _get(entry, "fires", where, bool, "true or false")
        if kind == "dense":
            layer = DenseLayer(name=name, weight_bits=weight_bits, fires=fires, **arrays)
        else:
            in_shape = _get_shape(entry, "in_shape", where, 3)
            kernel = _get_shape(entry, "kernel", where, 2)
            if arrays["weight"].ndim == 4 and tuple(arrays["weight"].shape[2:]) != kernel:
                raise NetworkFormatError(f"{where} declares kernel {list(kernel)} but its weight has shape "
                                         f"{list(arrays['weight'].shape)}")
            layer = Conv2dLayer(name=name, weight_bits=weight_bits, fires=fires, in_shape=in_shape,
                                stride=_get_shape(entry, "stride", where, 2),
                                padding=_get_shape(entry, "padding", where, 2), **arrays)
        declared = (_get(entry, "in_features", where, int, "an integer"),
                    _get(entry, "out_features", where, int, "an integer"))
        if declared != (layer.in_features, layer.out_features):
            raise NetworkFormatError(f"{where} declares {declared[0]}->{declared[1]} features but its weight "
                                     f"{list(layer.weight.shape)} gives {layer.in_features}->{layer.out_features}")
    if kind != "dense":
        out_shape = _get_shape(entry, "out_shape", where, 3)
        if out_shape != layer.out_shape:
            source = "in_shape and window" if kind == "maxpool2d" else "weight and window"
            raise NetworkFormatError(f"{where} declares out_shape {list(out_shape)} but its {source} give "
                                     f"{list(layer.out_shape)}")
    return layer


def _check_rom(path: Path, entry: dict, layer) -> None:
    """Refuse a ``rom/<layer>.weight.hex`` that is missing or holds other weights than weights.npz."""
    relative = entry.get("rom") if isinstance(entry.get("rom"), str) else f"rom/{layer.name}.weight.hex"
    rom_path = path / relative
    remedy = (f"the ROM images are part of the format and must equal weights.npz; if weights.npz is right, "
              f"rewrite them with spikeforge.load({str(path)!r}, check_rom=False).save({str(path)!r})")
    try:
        text = rom_path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise NetworkFormatError(f"{rom_path}: layer {layer.name!r}'s ROM image cannot be read "
                                 f"({type(error).__name__}); {remedy}") from None
    if text == layer.rom_hex():
        return
    expected = layer.rom_words()
    mask, sign = (1 << layer.weight_bits) - 1, 1 << (layer.weight_bits - 1)
    try:
        words = [int(word, 16) for word in text.split()]
    except ValueError:
        raise NetworkFormatError(f"{rom_path}: not a $readmemh image of hex words; {remedy}") from None
    if len(words) != len(expected):
        raise NetworkFormatError(f"{rom_path} holds {len(words)} words, but layer {layer.name!r} has "
                                 f"{len(expected)} weights in weights.npz; {remedy}")
    for address, (word, weight) in enumerate(zip(words, expected)):
        if word > mask or (word ^ sign) - sign != weight:
            raise NetworkFormatError(f"{rom_path} contradicts weights.npz: address {address} holds {word:x}, but "
                                     f"the weight there is {int(weight)} ({int(weight) & mask:x}); {remedy}")


def load(path, *, check_rom: bool = True) -> Network:
    """Read a network directory written by :meth:`Network.save` (or by any tool following DESIGN.md §2).

    Reads format versions 1 (dense only) and 2 (conv2d and maxpool2d too). Every malformed manifest
    or array file is a :class:`NetworkFormatError` naming the key or file at fault. The arrays come
    from weights.npz; the ``rom/*.hex`` images must hold the same weights (a missing or contradicting
    image is refused), unless ``check_rom`` is false (to repair a directory: load it so, then save it).
    """
    path = Path(path)
    manifest_path = path / "network.json"
    if not manifest_path.is_file():
        raise NetworkFormatError(f"{path} is not a spikeforge network: {manifest_path} not found")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NetworkFormatError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise NetworkFormatError(f"{manifest_path}: the manifest must be a JSON object, got "
                                 f"{type(manifest).__name__}")
    where = str(manifest_path)
    if manifest.get("format") != FORMAT:
        raise NetworkFormatError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    version = manifest.get("version")
    if not _is_int(version) or version not in READ_VERSIONS:
        raise NetworkFormatError(f"{manifest_path}: version {version!r} is not supported "
                                 f"(this spikeforge reads versions {', '.join(map(str, READ_VERSIONS))})")
    if manifest.get("amplification", AMPLIFICATION) != AMPLIFICATION:
        raise NetworkFormatError(f"{manifest_path}: amplification {manifest.get('amplification')!r} is not "
                                 f"supported (only k = {AMPLIFICATION})")
    entries = _get(manifest, "layers", where, list, "a list of layer objects")
    timesteps = _get(manifest, "timesteps", where, int, "an integer")
    input_entry = _get(manifest, "input", where, dict, "an object with 'shape' and 'lut'")
    input_shape = _get(input_entry, "shape", f"{where}: input", list, "a list of integers")
    if not input_shape or not all(_is_int(size) for size in input_shape):
        raise NetworkFormatError(f"{where}: input: key 'shape' must be a non-empty list of integers, got "
                                 f"{input_shape!r}")
    lut_key = _get(input_entry, "lut", f"{where}: input", str, "the name of an array in weights.npz")
    classes = _get(manifest, "classes", where, list, "a list of class names")
    calibration = manifest.get("calibration", {})
    if not isinstance(calibration, dict):
        raise NetworkFormatError(f"{where}: key 'calibration' must be an object, got {calibration!r}")
    weights_path = path / "weights.npz"
    if not weights_path.is_file():
        raise NetworkFormatError(f"{path}: {weights_path.name} not found")
    arrays = _read_arrays(weights_path)

    def array(key):
        if key not in arrays:
            raise NetworkFormatError(f"{weights_path}: array {key!r} named by the manifest is missing "
                                     f"(present: {', '.join(sorted(arrays)) or 'none'})")
        return arrays[key]

    layers = [_load_layer(entry, index, version, where, array) for index, entry in enumerate(entries)]
    net = Network(timesteps=timesteps, input_shape=input_shape, input_lut=array(lut_key), layers=layers,
                  classes=classes, calibration=calibration)
    for layer in net.linear_layers:
        _check_exact(layer, net.timesteps, literal=True)
    if check_rom:
        for entry, layer in zip(entries, layers):
            if not isinstance(layer, MaxPool2dLayer):
                _check_rom(path, entry, layer)
    return net
