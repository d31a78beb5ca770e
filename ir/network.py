"""The integer spiking network: spikeforge's intermediate representation and on-disk format.

A :class:`Network` is what the converter produces and what the golden model, the HDL generator and
the board flow consume. It holds only integers (see DESIGN.md §1, the arithmetic contract):

* ``input_lut``: 256 entries, raw input byte -> T-bit spike code;
* per layer: a signed ``weight_bits`` weight matrix (out x in), an integer bias, an integer
  threshold ``>= 1`` per output neuron and an initial potential ``v0`` per output neuron.

On disk (DESIGN.md §2) a network is a directory with ``network.json`` (the manifest),
``weights.npz`` (the arrays the manifest names) and ``rom/<layer>.weight.hex`` (``$readmemh``
images, address = ``in_index * out_features + out_index``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import golden
from .atomic import staged_directory
from .errors import InputError

__all__ = [
    "FORMAT", "VERSION", "AMPLIFICATION", "MAX_TIMESTEPS", "NetworkFormatError",
    "DenseLayer", "Network", "load",
]

FORMAT = "spikeforge-network"
VERSION = 1
#: The amplification factor k of the iLIF neuron. Only k = 2 makes a spike train a binary number.
AMPLIFICATION = 2
MIN_TIMESTEPS, MAX_TIMESTEPS = 1, 16
MIN_WEIGHT_BITS, MAX_WEIGHT_BITS = 2, 16


class NetworkFormatError(InputError):
    """A network directory or object does not follow the spikeforge network format."""


def _as_int_array(value, what: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise NetworkFormatError(f"{what} must be an integer array, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.shape != shape:
        raise NetworkFormatError(f"{what} has shape {array.shape}, expected {shape}")
    return array


@dataclass(eq=False)
class DenseLayer:
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
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise NetworkFormatError(f"layer name {self.name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        weight = np.asarray(self.weight)
        if weight.ndim != 2:
            raise NetworkFormatError(f"layer {self.name!r}: weight must be 2-D (out x in), got shape {weight.shape}")
        out_features, in_features = weight.shape
        if out_features < 1 or in_features < 1:
            raise NetworkFormatError(f"layer {self.name!r}: empty weight matrix of shape {weight.shape}")
        self.weight = _as_int_array(weight, f"layer {self.name!r}: weight", weight.shape)
        self.bias = _as_int_array(self.bias, f"layer {self.name!r}: bias", (out_features,))
        self.threshold = _as_int_array(np.broadcast_to(self.threshold, (out_features,)),
                                       f"layer {self.name!r}: threshold", (out_features,))
        self.v0 = _as_int_array(np.broadcast_to(self.v0, (out_features,)),
                                f"layer {self.name!r}: v0", (out_features,))
        if not (isinstance(self.weight_bits, (int, np.integer))
                and MIN_WEIGHT_BITS <= self.weight_bits <= MAX_WEIGHT_BITS):
            raise NetworkFormatError(f"layer {self.name!r}: weight_bits {self.weight_bits!r} is not in "
                                     f"{MIN_WEIGHT_BITS}..{MAX_WEIGHT_BITS}")
        self.weight_bits = int(self.weight_bits)
        low, high = -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1
        if self.weight.min() < low or self.weight.max() > high:
            raise NetworkFormatError(
                f"layer {self.name!r}: weights span {self.weight.min()}..{self.weight.max()}, which does not fit "
                f"{self.weight_bits}-bit two's complement ({low}..{high})")
        if self.threshold.min() < 1:
            raise NetworkFormatError(f"layer {self.name!r}: threshold {self.threshold.min()} < 1; thresholds must be >= 1")
        self.fires = bool(self.fires)

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def rom_words(self) -> np.ndarray:
        """Weights in ROM order: address ``in_index * out_features + out_index``."""
        return self.weight.T.reshape(-1)

    def rom_hex(self) -> str:
        """The ``$readmemh`` image: one ``weight_bits``-wide two's-complement word per line."""
        digits = (self.weight_bits + 3) // 4
        mask = (1 << self.weight_bits) - 1
        words = self.rom_words()
        return "".join(f"{int(w) & mask:0{digits}x}\n" for w in words)

    def accumulator_bound(self, timesteps: int) -> int:
        """Worst-case ``|V|`` during accumulation and fire: ``Σ|W|·(2^T-1) + |b| + |v0|`` over neurons."""
        code_max = (1 << timesteps) - 1
        bound = np.abs(self.weight).sum(axis=1) * code_max + np.abs(self.bias) + np.abs(self.v0)
        return int(bound.max())

    def __eq__(self, other):
        if not isinstance(other, DenseLayer):
            return NotImplemented
        return (self.name == other.name and self.kind == other.kind and self.fires == other.fires
                and self.weight_bits == other.weight_bits
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("weight", "bias", "threshold", "v0")))


@dataclass(eq=False)
class Network:
    """An integer spiking network of iLIF neurons (k = 2), ready for the golden model and the HDL.

    Parameters
    ----------
    timesteps : int
        T in 1..16: a spike train is T bits, first step = most significant bit.
    input_shape : tuple of int
        Shape of one raw sample (e.g. ``(8, 8)``); flattened row-major into the first layer.
    input_lut : int array, shape (256,)
        Raw byte -> T-bit input code.
    layers : list of DenseLayer
        All but the last fire; the last is the output layer.
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
        if not (isinstance(self.timesteps, (int, np.integer)) and MIN_TIMESTEPS <= self.timesteps <= MAX_TIMESTEPS):
            raise NetworkFormatError(f"timesteps {self.timesteps!r} is not in {MIN_TIMESTEPS}..{MAX_TIMESTEPS}")
        self.timesteps = int(self.timesteps)
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.input_lut = _as_int_array(self.input_lut, "input LUT", (256,))
        if self.input_lut.min() < 0 or self.input_lut.max() > self.code_max:
            raise NetworkFormatError(f"input LUT codes span {self.input_lut.min()}..{self.input_lut.max()}, "
                                     f"outside 0..{self.code_max} (T = {self.timesteps})")
        self.layers = list(self.layers)
        if not self.layers:
            raise NetworkFormatError("a network needs at least one layer")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise NetworkFormatError(f"layer names must be unique, got {names}")
        expected_in = int(np.prod(self.input_shape))
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, DenseLayer):
                raise NetworkFormatError(f"layer {index} is a {type(layer).__name__}; supported: DenseLayer")
            if layer.in_features != expected_in:
                raise NetworkFormatError(f"layer {layer.name!r} takes {layer.in_features} inputs, but its input "
                                         f"has {expected_in}")
            is_last = index == len(self.layers) - 1
            if layer.fires == is_last:
                raise NetworkFormatError(f"layer {layer.name!r}: fires={layer.fires}, but only the last layer "
                                         f"(the output layer) may have fires=False, and it must")
            expected_in = layer.out_features
        if np.any(self.output_layer.v0 != 0):
            raise NetworkFormatError(f"output layer {self.output_layer.name!r}: v0 must be 0 (scores are W·q + b)")
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
        return self.layers[:-1]

    @property
    def output_layer(self) -> DenseLayer:
        return self.layers[-1]

    def layer(self, name: str) -> DenseLayer:
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
            theta = layer.threshold
            theta_text = f"θ {theta.min()}" if theta.min() == theta.max() else f"θ {theta.min()}..{theta.max()}"
            role = "iLIF" if layer.fires else "output"
            lines.append(f"  {layer.name:<10} {role:<6} {layer.in_features:>5} -> {layer.out_features:<5} "
                         f"{layer.weight_bits}-bit weights, {theta_text}")
        return "\n".join(lines)

    # -- running -----------------------------------------------------------------------------------

    def run(self, samples):
        """Classify raw samples with the golden model (closed form); see :func:`spikeforge.ir.golden.run`."""
        return golden.run(self, samples)

    # -- persistence -------------------------------------------------------------------------------

    def manifest(self) -> dict:
        layers = []
        for layer in self.layers:
            layers.append({
                "name": layer.name, "kind": layer.kind,
                "in_features": layer.in_features, "out_features": layer.out_features,
                "weight_bits": layer.weight_bits, "fires": layer.fires,
                "weight": f"{layer.name}.weight", "bias": f"{layer.name}.bias",
                "threshold": f"{layer.name}.threshold", "v0": f"{layer.name}.v0",
                "rom": f"rom/{layer.name}.weight.hex",
                "accumulator_bound": layer.accumulator_bound(self.timesteps),
            })
        return {
            "format": FORMAT, "version": VERSION,
            "timesteps": self.timesteps, "amplification": self.amplification,
            "input": {"shape": list(self.input_shape), "lut": "input.lut"},
            "layers": layers, "classes": list(self.classes),
            "calibration": self.calibration,
        }

    def arrays(self) -> dict:
        arrays = {"input.lut": self.input_lut}
        for layer in self.layers:
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
            for layer in self.layers:
                (staging / "rom" / f"{layer.name}.weight.hex").write_text(layer.rom_hex())
            (staging / "network.json").write_text(json.dumps(self.manifest(), indent=2) + "\n")
        return path

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return (self.timesteps == other.timesteps and self.input_shape == other.input_shape
                and np.array_equal(self.input_lut, other.input_lut) and self.layers == other.layers
                and self.classes == other.classes and self.calibration == other.calibration)


def load(path) -> Network:
    """Read a network directory written by :meth:`Network.save` (or by any tool following DESIGN.md §2)."""
    path = Path(path)
    manifest_path = path / "network.json"
    if not manifest_path.is_file():
        raise NetworkFormatError(f"{path} is not a spikeforge network: {manifest_path} not found")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise NetworkFormatError(f"{manifest_path}: not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT:
        raise NetworkFormatError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise NetworkFormatError(f"{manifest_path}: version {manifest.get('version')!r} is not supported "
                                 f"(this spikeforge reads version {VERSION})")
    if manifest.get("amplification", AMPLIFICATION) != AMPLIFICATION:
        raise NetworkFormatError(f"{manifest_path}: amplification {manifest.get('amplification')!r} is not "
                                 f"supported (only k = {AMPLIFICATION})")
    weights_path = path / "weights.npz"
    if not weights_path.is_file():
        raise NetworkFormatError(f"{path}: {weights_path.name} not found")
    with np.load(weights_path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}

    def array(key):
        if key not in arrays:
            raise NetworkFormatError(f"{weights_path}: array {key!r} named by the manifest is missing "
                                     f"(present: {', '.join(sorted(arrays)) or 'none'})")
        return arrays[key]

    try:
        layers = []
        for entry in manifest["layers"]:
            if entry.get("kind") != "dense":
                raise NetworkFormatError(f"{manifest_path}: layer {entry.get('name')!r} has kind "
                                         f"{entry.get('kind')!r}; supported: 'dense'")
            layer = DenseLayer(name=entry["name"], weight=array(entry["weight"]), bias=array(entry["bias"]),
                               threshold=array(entry["threshold"]), v0=array(entry["v0"]),
                               weight_bits=entry["weight_bits"], fires=entry["fires"])
            if (layer.in_features, layer.out_features) != (entry["in_features"], entry["out_features"]):
                raise NetworkFormatError(f"{manifest_path}: layer {layer.name!r} declares "
                                         f"{entry['in_features']}->{entry['out_features']} but its weight is "
                                         f"{layer.out_features}x{layer.in_features}")
            layers.append(layer)
        return Network(timesteps=manifest["timesteps"], input_shape=manifest["input"]["shape"],
                       input_lut=array(manifest["input"]["lut"]), layers=layers,
                       classes=manifest["classes"], calibration=manifest.get("calibration", {}))
    except KeyError as error:
        raise NetworkFormatError(f"{manifest_path}: required key {error.args[0]!r} is missing") from None
