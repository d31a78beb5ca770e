"""PyTorch -> a chain of float layers (dense, conv2d, max pool), through ``torch.fx``.

Works on any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace and on the ``GraphModule`` of
a ``torch.export`` program (``.pt2``), so models need not be ``nn.Sequential``. Supported:

* ``nn.Linear`` / ``F.linear`` / ``aten.linear``;
* ``nn.Conv2d`` / ``F.conv2d`` / ``aten.conv2d`` / ``aten.convolution``: any kernel and stride, zero
  padding (``padding="same"`` for odd kernels), ``groups=1``, ``dilation=1``;
* ``nn.BatchNorm1d`` after a Linear, ``nn.BatchNorm2d`` after a Conv2d (``aten.batch_norm``): folded
  into it (eval mode only);
* ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` / ``aten.relu``;
* ``nn.MaxPool2d`` / ``F.max_pool2d`` / ``aten.max_pool2d(_with_indices)`` without padding, before or
  after the ReLU (they commute), not on the raw input;
* ``nn.AvgPool2d`` / ``nn.AdaptiveAvgPool2d`` (and the ``F``/``aten`` spellings, and ``x.mean((2, 3))``)
  after a ReLU: folded, in float, into the *next* linear layer. A Linear's weights are spread over
  each window and divided by its size; a Conv2d becomes a strided conv on the unpooled map (kernel
  spread and divided by the window size), which needs the pool's stride to equal its kernel. An
  adaptive pool is an ordinary one when its output size divides the input; ``(1, 1)`` = global average;
* ``nn.Flatten``, ``torch.flatten``, ``Tensor.view`` / ``reshape`` / ``flatten`` / ``squeeze`` (any
  reshape of the input; afterwards a flatten to features);
* ``nn.Dropout`` / ``aten.dropout``, ``nn.Identity``, ``Tensor.float`` / ``contiguous`` (no-ops at inference);
* ``spikeforge.nn.QuantReLU`` (``spikeforge::quant_relu``): a ReLU whose learned step becomes the layer's
  activation step (no calibration for that layer);
* a network fine-tuned by :func:`spikeforge.converter.qat.finetune`: ``spikeforge::encode`` at the input
  (the input LUT), Linear/Conv2d on integer weights, ``spikeforge::fire`` after every hidden layer (the
  threshold and ``v0``), and a positive scale of the scores: the integers are taken as they are;
* a positive scalar multiplication or division of the scores after the output layer (argmax unchanged);
* input normalisation written in ``forward``: constant arithmetic on the input before the first layer
  (``x / 255``, ``x - mean``, ``(x - mean) / std``, ``x * s + t``, with scalars, tensors, buffers or
  attributes broadcast against the input, e.g. per channel ``(C, 1, 1)``), also inside a submodule.
  It is folded into the first layer (see :func:`fold_input_affine`).

Everything else raises :class:`ConversionError` naming the node's path and type. The model is run
once on a zero input of the calibration shape to learn every tensor's shape and every constant's
value; the folded chain is checked numerically against the model during conversion.
"""

from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import DenseShapes
from .quant_ops import ENCODE, FIRE, QUANT_RELU

__all__ = ["ConversionError", "FloatLayer", "FloatConv", "FloatMaxPool", "import_model", "fold_input_affine",
           "model_input_shape", "first_layer_kind", "float_forward", "static_batch", "SUPPORTED"]

SUPPORTED = ("Linear, Conv2d (groups=1, dilation=1, zero padding), BatchNorm1d/2d after a Linear/Conv2d, "
             "ReLU (nn.ReLU, F.relu, torch.relu), MaxPool2d (no padding, floor mode), AvgPool2d/"
             "AdaptiveAvgPool2d after a ReLU (folded into the next layer), Flatten/view/reshape, Dropout, "
             "Identity, constant arithmetic on the input (x / 255, (x - mean) / std), spikeforge.nn.QuantReLU, a "
             "positive scale of the scores")


class ConversionError(InputError):
    """The model cannot be converted; the message names the offending module and what is supported."""


# --- the float layers ---------------------------------------------------------------------------------

@dataclass
class Quantized:
    """What a quantisation-aware model fixed about a float layer (all ``None``: nothing, an ordinary layer).

    Attributes
    ----------
    encoder : dict, optional
        First layer of a fine-tuned network: ``scale``, ``offset`` (per input feature) and ``lut`` (256
        codes): the input ``x`` becomes the code ``lut[clip(round(scale·x + offset), 0, 255)]``.
    neuron : dict, optional
        A fine-tuned hidden layer (``spikeforge::fire``): ``threshold`` and ``v0`` (per output channel),
        ``code_max`` and ``step``; its weights and bias are the integers themselves.
    step : array, optional
        A ``QuantReLU`` after this layer: its step (one, or one per channel) and ``code_max``.
    score_scale : float
        A positive constant the model multiplies its scores by (the output layer only).
    """

    encoder: dict | None = None
    neuron: dict | None = None
    step: np.ndarray | None = None
    code_max: int | None = None
    score_scale: float = 1.0

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            return x
        raw = np.clip(np.round(x * self.encoder["scale"] + self.encoder["offset"]), 0, 255).astype(np.int64)
        return self.encoder["lut"][raw].astype(np.float64)

    def activate(self, z: np.ndarray, relu: bool, out_shape) -> np.ndarray:
        """The layer's activation on its flat outputs ``z`` (N, features)."""
        if self.neuron is not None:
            per_channel = _per_feature(self.neuron["threshold"], z.shape[1], out_shape)
            v0 = _per_feature(self.neuron["v0"], z.shape[1], out_shape)
            return np.clip(np.floor((z + v0) / per_channel), 0, self.neuron["code_max"])
        if self.step is not None:
            step = _per_feature(self.step, z.shape[1], out_shape)
            return step * np.clip(np.floor(z / step + 0.5), 0, self.code_max)
        if relu:
            z = np.maximum(z, 0.0)
        return z * self.score_scale if self.score_scale != 1.0 else z


def _per_feature(values, features: int, out_shape) -> np.ndarray:
    """One value or one per output channel, spread over a layer's flat (CHW) outputs."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return values
    return np.repeat(values, features // values.size)


@dataclass
class FloatLayer(DenseShapes):
    """A dense layer of the float model after folding: ``z = weight @ x + bias``, then ReLU if ``relu``.

    ``forward`` takes and returns flat ``(N, features)`` float64 arrays, as every float layer does.
    """

    path: str
    weight: np.ndarray      # float64 (out, in)
    bias: np.ndarray        # float64 (out,)
    relu: bool
    kind: str = field(default="dense", init=False)
    quantized: Quantized = field(default_factory=lambda: Quantized())

    def forward(self, x: np.ndarray) -> np.ndarray:
        z = self.quantized.encode(x) @ self.weight.T + self.bias
        return self.quantized.activate(z, self.relu, None)


@dataclass
class FloatConv:
    """A 2-D convolution after folding: ``z = conv2d(x, weight, stride, zero padding) + bias``, then ReLU.

    ``weight`` is float64 ``(Co, C, kh, kw)``, ``bias`` ``(Co,)``, ``in_shape`` ``(C, H, W)``.
    """

    path: str
    weight: np.ndarray
    bias: np.ndarray
    relu: bool
    in_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kind: str = field(default="conv2d", init=False)
    quantized: Quantized = field(default_factory=lambda: Quantized())

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[2:])

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def out_shape(self) -> tuple:
        _, height, width = self.in_shape
        return (self.weight.shape[0],) + tuple(
            (size + 2 * p - k) // s + 1 for size, k, s, p in zip((height, width), self.kernel, self.stride,
                                                                 self.padding))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.quantized.encode(x)
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape((len(x),) + tuple(self.in_shape))
        z = F.conv2d(images, torch.from_numpy(self.weight), torch.from_numpy(self.bias), self.stride, self.padding)
        return self.quantized.activate(z.reshape(len(x), -1).numpy(), self.relu, self.out_shape)


@dataclass
class FloatMaxPool:
    """Max pooling (no padding, floor mode) of the previous layer's activations; passes its codes."""

    path: str
    in_shape: tuple
    kernel: tuple
    stride: tuple
    kind: str = field(default="maxpool2d", init=False)

    @property
    def out_shape(self) -> tuple:
        channels, height, width = self.in_shape
        return (channels,) + tuple((size - k) // s + 1 for size, k, s in zip((height, width), self.kernel,
                                                                             self.stride))

    def forward(self, x: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape((len(x),) + tuple(self.in_shape))
        return F.max_pool2d(images, self.kernel, self.stride).reshape(len(x), -1).numpy()


LINEAR_KINDS = ("dense", "conv2d")


def float_forward(layers, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Run float layers on ``x`` (N, ...) in batches; returns the last layer's flat outputs (float64)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    outputs = []
    for start in range(0, max(len(x), 1), batch):
        y = x[start:start + batch]
        for layer in layers:
            y = layer.forward(y)
        outputs.append(y)
    return np.concatenate(outputs) if outputs else np.zeros((0, int(np.prod(layers[-1].out_shape))))


# --- recognising nodes --------------------------------------------------------------------------------

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      torch.ops.aten.flatten.using_ints, torch.ops.aten.view.default,
                      torch.ops.aten.reshape.default, torch.ops.aten._unsafe_view.default,
                      torch.ops.aten.squeeze.dims, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.default,
                      torch.ops.aten.unsqueeze.default}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_IDENTITY_FUNCTIONS = {F.dropout, torch.dropout, torch.ops.aten.dropout.default, torch.ops.aten.clone.default,
                       torch.ops.aten.alias.default, torch.ops.aten.contiguous.default}
_IDENTITY_METHODS = {"contiguous", "float", "double", "clone", "detach"}
_CAST_FUNCTIONS = {torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype}
_LINEAR_FUNCTIONS = {F.linear, torch.ops.aten.linear.default}
_CONV_FUNCTIONS = {F.conv2d, torch.ops.aten.conv2d.default, torch.ops.aten.conv2d.padding,
                   torch.ops.aten.convolution.default}
_MAXPOOL_FUNCTIONS = {F.max_pool2d, torch.max_pool2d, torch.ops.aten.max_pool2d.default,
                      torch.ops.aten.max_pool2d_with_indices.default}
_AVGPOOL_FUNCTIONS = {F.avg_pool2d, torch.ops.aten.avg_pool2d.default}
_ADAPTIVE_FUNCTIONS = {F.adaptive_avg_pool2d, torch.ops.aten.adaptive_avg_pool2d.default,
                       torch.ops.aten._adaptive_avg_pool2d.default}
_MEAN_FUNCTIONS = {torch.mean, torch.ops.aten.mean.dim}
_BATCHNORM_FUNCTIONS = {torch.ops.aten.batch_norm.default,
                        torch.ops.aten._native_batch_norm_legit_no_training.default}
_SHAPE_METHODS = {"size", "dim"}
_SHAPE_FUNCTIONS = {torch.ops.aten.sym_size.int, torch.ops.aten.sym_numel.default, torch.ops.aten.sym_stride.int}
# Arithmetic: (operation, reversed operands) by target.
_ARITHMETIC_FUNCTIONS = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", torch.ops.aten.add.Tensor: "add",
    torch.ops.aten.add.Scalar: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub", torch.subtract: "sub",
    torch.ops.aten.sub.Tensor: "sub", torch.ops.aten.sub.Scalar: "sub", torch.ops.aten.rsub.Scalar: "rsub",
    torch.ops.aten.rsub.Tensor: "rsub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", torch.multiply: "mul",
    torch.ops.aten.mul.Tensor: "mul", torch.ops.aten.mul.Scalar: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div", torch.divide: "div",
    torch.true_divide: "div", torch.ops.aten.div.Tensor: "div", torch.ops.aten.div.Scalar: "div",
}
_ARITHMETIC_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "subtract": "sub",
                       "mul": "mul", "mul_": "mul", "multiply": "mul", "div": "div", "div_": "div",
                       "divide": "div", "true_divide": "div"}


def _arg(node, index, name, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _pair(value, what):
    if isinstance(value, (list, tuple)):
        value = tuple(value)
        if len(value) == 1:
            value = value * 2
    else:
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(f"{what} {value!r}")
    return tuple(int(v) for v in value)


@dataclass
class _Op:
    kind: str
    path: str
    type_name: str
    details: object
    out_shape: tuple | None      # per sample, from the recorded run


def _describe(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, str]:
    """(path, type) of a node, for messages."""
    if node.op == "call_module":
        return node.target, type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return node.name, f"Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    if isinstance(target, torch._ops.OpOverload):
        name = str(target)
    elif target in (F.max_pool2d, F.avg_pool2d, F.conv2d, F.adaptive_avg_pool2d):
        name = f"F.{target.__name__}" if target is not F.max_pool2d else "F.max_pool2d"
    stack = node.meta.get("nn_module_stack")
    path = list(stack.values())[-1][0] if stack else node.name
    return path or node.name, name


class _Classifier:
    """Turns a node on the input's chain into ``(kind, details)``.

    Kinds: linear, conv, batchnorm, relu, maxpool, avgpool, adaptive, mean, reshape, identity,
    arithmetic, shape, guard, unsupported (details = why), bn-training, other.
    """

    def __init__(self, gm, values):
        self.gm = gm
        self.values = values

    def const(self, arg):
        """The value of a constant argument: a recorded node value, or the literal itself."""
        if isinstance(arg, torch.fx.Node):
            if arg not in self.values:
                raise KeyError(arg)
            value = self.values[arg]
        else:
            value = arg
        return value.detach() if isinstance(value, torch.Tensor) else value

    def classify(self, node):
        if node.op == "call_module":
            return self._module(node, self.gm.get_submodule(node.target))
        if node.op == "call_method":
            return self._method(node)
        if node.op == "call_function":
            return self._function(node)
        return "other", None

    # -- modules

    def _module(self, node, module):
        if isinstance(module, nn.Linear):
            return "linear", (module.weight.detach(), None if module.bias is None else module.bias.detach())
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                return "unsupported", f"padding_mode={module.padding_mode!r} (supported: 'zeros')"
            return self._conv_details(module.weight.detach(), None if module.bias is None else module.bias.detach(),
                                      module.stride, module.padding, module.dilation, module.groups)
        if isinstance(module, nn.ReLU):
            return "relu", None
        if isinstance(module, nn.Flatten):
            return "reshape", None
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return "identity", None
        if isinstance(module, nn.MaxPool2d):
            return self._maxpool_details(module.kernel_size, module.stride, module.padding, module.dilation,
                                         module.ceil_mode, module.return_indices)
        if isinstance(module, nn.AvgPool2d):
            return self._avgpool_details(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                         module.divisor_override)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return "adaptive", module.output_size
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.training:
                return "bn-training", None
            if not module.track_running_stats or module.running_mean is None:
                return "unsupported", "no running statistics (track_running_stats=False)"
            weight = module.weight.detach() if module.affine else torch.ones_like(module.running_mean)
            bias = module.bias.detach() if module.affine else torch.zeros_like(module.running_mean)
            return "batchnorm", (weight, bias, module.running_mean.detach(), module.running_var.detach(),
                                 module.eps, 2 if isinstance(module, nn.BatchNorm2d) else 1)
        if node.target.startswith("_guards"):
            return "guard", None
        return "other", None

    # -- methods

    def _method(self, node):
        target = node.target
        if target in ("relu", "relu_"):
            return "relu", None
        if target in _RESHAPE_METHODS:
            return "reshape", None
        if target in _IDENTITY_METHODS:
            return "identity", None
        if target == "to":
            return self._cast([a for a in node.args[1:]] + list(node.kwargs.values()))
        if target in _SHAPE_METHODS:
            return "shape", None
        if target == "mean":
            return "mean", (_arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        if target in _ARITHMETIC_METHODS:
            if node.kwargs.get("rounding_mode") is not None:
                return "unsupported", f"rounding_mode={node.kwargs['rounding_mode']!r}"
            return "arithmetic", (_ARITHMETIC_METHODS[target], node.args[0], _arg(node, 1, "other"),
                                  node.kwargs.get("alpha", 1))
        return "other", None

    def _cast(self, args):
        for a in args:
            if isinstance(a, torch.dtype) and not a.is_floating_point:
                return "unsupported", f"a cast to {a} (supported: floating-point casts)"
        return "identity", None

    # -- functions

    def _function(self, node):
        target = node.target
        args = node.args
        if target in _LINEAR_FUNCTIONS:
            return "linear", (self.const(_arg(node, 1, "weight")), self.const(_arg(node, 2, "bias")))
        if target in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default):
            # A decomposed linear: addmm(bias, x, weight.T) or mm(x, weight.T).
            addmm = target is torch.ops.aten.addmm.default
            matrix = self.const(args[2] if addmm else args[1])
            if addmm and (node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1):
                return "unsupported", "beta/alpha other than 1"
            if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
                return "unsupported", "a matrix that is not a constant 2-D tensor"
            return "linear", (matrix.t(), self.const(args[0]) if addmm else None)
        if target in _CONV_FUNCTIONS:
            weight, bias = self.const(_arg(node, 1, "weight")), self.const(_arg(node, 2, "bias"))
            if target is torch.ops.aten.convolution.default:
                if args[6]:
                    return "unsupported", "a transposed convolution"
                return self._conv_details(weight, bias, args[3], args[4], args[5], args[8])
            return self._conv_details(weight, bias, _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                                      _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1))
        if target in _RELU_FUNCTIONS:
            return "relu", None
        if target is QUANT_RELU:
            return "quant_relu", (self.const(args[1]), args[2])
        if target is ENCODE:
            return "encode", tuple(self.const(a) for a in args[1:4])
        if target is FIRE:
            return "fire", (self.const(args[1]), self.const(args[2]), args[3], self.const(args[4]))
        if target in _RESHAPE_FUNCTIONS:
            return "reshape", None
        if target in _IDENTITY_FUNCTIONS:
            return "identity", None
        if target in _CAST_FUNCTIONS:
            return self._cast(list(args[1:]) + list(node.kwargs.values()))
        if target in _MAXPOOL_FUNCTIONS:
            return self._maxpool_details(_arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                                         _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1),
                                         _arg(node, 5, "ceil_mode", False),
                                         _arg(node, 6, "return_indices", False))
        if target in _AVGPOOL_FUNCTIONS:
            return self._avgpool_details(_arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                                         _arg(node, 3, "padding", 0), _arg(node, 4, "ceil_mode", False),
                                         _arg(node, 6, "divisor_override"))
        if target in _ADAPTIVE_FUNCTIONS:
            return "adaptive", _arg(node, 1, "output_size")
        if target in _MEAN_FUNCTIONS:
            return "mean", (_arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        if target in _BATCHNORM_FUNCTIONS:
            if target is torch.ops.aten.batch_norm.default:
                if args[5]:
                    return "bn-training", None
                weight, bias, mean, var, eps = args[1], args[2], args[3], args[4], args[7]
            else:
                weight, bias, mean, var, eps = args[1], args[2], args[3], args[4], args[6]
            mean, var = self.const(mean), self.const(var)
            if mean is None or var is None:
                return "unsupported", "no running statistics"
            weight = self.const(weight) if weight is not None else torch.ones_like(mean)
            bias = self.const(bias) if bias is not None else torch.zeros_like(mean)
            return "batchnorm", (weight, bias, mean, var, eps, None)
        if target is operator.getitem and isinstance(args[0], torch.fx.Node) and args[0].op == "call_function" \
                and args[0].target in (torch.ops.aten._native_batch_norm_legit_no_training.default,
                                       torch.ops.aten.max_pool2d_with_indices.default):
            return ("identity", None) if args[1] == 0 else ("shape", None)
        if target in _ARITHMETIC_FUNCTIONS:
            if node.kwargs.get("rounding_mode") is not None:
                return "unsupported", f"rounding_mode={node.kwargs['rounding_mode']!r}"
            return "arithmetic", (_ARITHMETIC_FUNCTIONS[target], args[0], _arg(node, 1, "other"),
                                  node.kwargs.get("alpha", 1))
        if target is getattr or target is operator.getitem or target in _SHAPE_FUNCTIONS:
            return "shape", None
        if target is torch.ops.aten._assert_tensor_metadata.default:
            return "guard", None             # torch.export's check before a dtype cast
        return "other", None

    # -- details

    @staticmethod
    def _conv_details(weight, bias, stride, padding, dilation, groups):
        if weight is None or not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            return "unsupported", "a weight that is not a constant (Co, C, kh, kw) tensor"
        if groups != 1:
            return "unsupported", f"groups={groups} (supported: groups=1)"
        try:
            dilation = _pair(dilation, "dilation")
            stride = _pair(stride, "stride")
        except ValueError as error:
            return "unsupported", str(error)
        if dilation != (1, 1):
            return "unsupported", f"dilation={dilation} (supported: dilation=1)"
        kernel = tuple(weight.shape[2:])
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same" and all(k % 2 == 1 for k in kernel) and stride == (1, 1):
                padding = tuple((k - 1) // 2 for k in kernel)
            else:
                return "unsupported", f"padding={padding!r} (supported: integers, 'valid', 'same' with odd kernels)"
        try:
            padding = _pair(padding, "padding")
        except ValueError as error:
            return "unsupported", str(error)
        return "conv", (weight, bias, stride, padding)

    @staticmethod
    def _maxpool_details(kernel, stride, padding, dilation, ceil_mode, return_indices):
        try:
            kernel = _pair(kernel, "kernel_size")
            stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
            padding, dilation = _pair(padding, "padding"), _pair(dilation, "dilation")
        except ValueError as error:
            return "unsupported", str(error)
        if padding != (0, 0):
            return "unsupported", f"padding={padding} (supported: padding=0)"
        if dilation != (1, 1):
            return "unsupported", f"dilation={dilation} (supported: dilation=1)"
        if ceil_mode:
            return "unsupported", "ceil_mode=True (supported: floor mode)"
        if return_indices:
            return "unsupported", "return_indices=True"
        return "maxpool", (kernel, stride)

    @staticmethod
    def _avgpool_details(kernel, stride, padding, ceil_mode, divisor_override):
        try:
            kernel = _pair(kernel, "kernel_size")
            stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
            padding = _pair(padding, "padding")
        except ValueError as error:
            return "unsupported", str(error)
        if padding != (0, 0):
            return "unsupported", f"padding={padding} (supported: padding=0)"
        if ceil_mode:
            return "unsupported", "ceil_mode=True (supported: floor mode)"
        if divisor_override is not None:
            return "unsupported", f"divisor_override={divisor_override}"
        return "avgpool", (kernel, stride)


# --- tracing and recording ----------------------------------------------------------------------------

def _trace(model: nn.Module) -> torch.fx.GraphModule:
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        raise ConversionError(f"torch.fx cannot trace {type(model).__name__}: {error}. Models with data-dependent "
                              f"control flow can be converted through torch.export (save a .pt2)") from None


def _prepare(model) -> torch.fx.GraphModule:
    if not isinstance(model, nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if model.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConversionError(f"{type(model).__name__} is in training mode and has BatchNorm: call model.eval() "
                              f"first so its running statistics are used")
    with warnings.catch_warnings():
        # torch 2.13 deep-copying an exported GraphModule's tree specs warns about its own deprecated
        # LeafSpec check: noise for the user, nothing they can act on.
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*", category=FutureWarning)
        copied = copy.deepcopy(model)
    gm = _trace(copied.eval())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model takes {len(placeholders)} inputs; supported: exactly one input tensor")
    return gm


def _exported_shape(gm) -> tuple | None:
    """(batch, *sample shape) of a torch.export program's input when it is static (batch may be None)."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    value = placeholder.meta.get("val")
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        return None
    return tuple(dims)


def static_batch(model) -> int | None:
    """The batch size a ``torch.export`` program was exported with, when it is not dynamic (else None)."""
    if not isinstance(model, torch.fx.GraphModule):
        return None
    shape = _exported_shape(model)
    return None if shape is None else shape[0]


def _first_layer(gm):
    """('conv', in_channels) or ('dense', in_features) of the first Conv2d/Linear in graph order, or None."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, nn.Conv2d):
                return "conv", module.in_channels
            if isinstance(module, nn.Linear):
                return "dense", module.in_features
        elif node.op == "call_function" and (node.target in _CONV_FUNCTIONS or node.target in _LINEAR_FUNCTIONS):
            weight = _arg(node, 1, "weight")
            value = None
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
                value = gm
                for part in weight.target.split("."):
                    value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                return ("conv", value.shape[1]) if node.target in _CONV_FUNCTIONS else ("dense", value.shape[1])
            return None
    return None


def first_layer_kind(model):
    """What the model starts with: ``("conv", in_channels)``, ``("dense", in_features)`` or ``None``."""
    return _first_layer(_prepare(model))


def model_input_shape(model, sample_shape, input_shape=None) -> tuple:
    """The shape of one model input for calibration samples of shape ``sample_shape`` (no batch).

    ``input_shape`` when given; else a ``torch.export`` program's own input shape; else for a model
    that starts with a Conv2d of ``C`` input channels: ``(C, H, W)`` samples as they are and ``(H, W)``
    samples as ``(1, H, W)`` when ``C == 1``; else the samples' own shape. The element counts must agree.
    """
    sample_shape = tuple(int(d) for d in sample_shape)
    count = int(np.prod(sample_shape))
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if int(np.prod(input_shape)) != count:
            raise ConversionError(f"input_shape {input_shape} does not match calibration samples of shape "
                                  f"{sample_shape} ({count} values each)")
        return input_shape
    gm = _prepare(model)
    exported = _exported_shape(gm)
    if exported is not None:
        shape = exported[1:]
        if int(np.prod(shape)) != count:
            raise ConversionError(f"the exported program takes inputs of shape {shape} ({int(np.prod(shape))} "
                                  f"values) but the calibration samples have shape {sample_shape} ({count} values)")
        return shape
    first = _first_layer(gm)
    if first is not None and first[0] == "conv":
        channels = first[1]
        if len(sample_shape) == 3 and sample_shape[0] == channels:
            return sample_shape
        if len(sample_shape) == 2 and channels == 1:
            return (1,) + sample_shape
        if _runs_on(gm, sample_shape):
            return sample_shape            # the model reshapes its input itself (x.view(-1, 1, 28, 28))
        raise ConversionError(f"calibration samples of shape {sample_shape} cannot be read as (C, H, W) with C = "
                              f"{channels} (the first Conv2d's in_channels); pass samples as (N, {channels}, H, W)"
                              + (" or (N, H, W)" if channels == 1 else "") + ", or give input_shape "
                              f"(--input-shape C,H,W)")
    return sample_shape


def _runs_on(gm, sample_shape) -> bool:
    """Whether the model accepts a batch of two zero samples of ``sample_shape``."""
    try:
        with torch.no_grad():
            gm(torch.zeros((2,) + tuple(sample_shape)))
    except Exception:  # the user's forward can raise anything: it does not take this shape
        return False
    return True


class _Recorder(torch.fx.Interpreter):
    """Runs the graph once and keeps each node's per-sample output shape and every constant's value."""

    def __init__(self, gm, dependent):
        super().__init__(gm)
        self.dependent = dependent
        self.shapes = {}
        self.values = {}

    def run_node(self, node):
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            self.shapes[node] = tuple(result.shape)
        elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
            self.shapes[node] = tuple(result[0].shape)
        if node not in self.dependent or not isinstance(result, (torch.Tensor, tuple, list)):
            self.values[node] = result
        return result


def _record(gm, input_shape, batch):
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    dependent = set()
    for node in gm.graph.nodes:
        if node is placeholder or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    recorder = _Recorder(gm, dependent)
    example = torch.zeros((batch,) + tuple(input_shape), dtype=torch.float32)
    try:
        with torch.no_grad():
            recorder.run(example)
    except Exception as error:  # the user's forward can raise anything
        raise ConversionError(f"running the model on an input of shape {tuple(example.shape)} failed: "
                              f"{error}") from None
    return recorder, dependent


# --- the import ---------------------------------------------------------------------------------------

def import_model(model: nn.Module, input_shape=None) -> list:
    """Trace ``model`` and return its float layers (FloatLayer, FloatConv, FloatMaxPool) with BatchNorm,
    average pooling and the in-forward input normalisation folded in.

    Parameters
    ----------
    model : nn.Module or torch.fx.GraphModule
    input_shape : tuple, optional
        Shape of one model input (no batch). Needed for convolutional models (see
        :func:`model_input_shape`); a dense model defaults to its first Linear's ``(in_features,)``.

    Raises
    ------
    ConversionError
        For an unsupported module or function (naming its path and type), a model in training mode with
        BatchNorm, a missing ReLU between two layers, a branching graph (residual adds), a ReLU after the
        output layer, or non-finite weights.
    """
    gm = _prepare(model)
    if input_shape is None:
        exported = _exported_shape(gm)
        first = _first_layer(gm)
        if exported is not None:
            input_shape = exported[1:]
        elif first is not None and first[0] == "dense":
            input_shape = (first[1],)
        else:
            raise ConversionError("the model starts with a Conv2d: give the input shape (C, H, W)")
    input_shape = tuple(int(d) for d in input_shape)
    _refuse_unsupported(gm)
    exported = _exported_shape(gm)
    batch = exported[0] if exported is not None and exported[0] is not None else 2
    recorder, dependent = _record(gm, input_shape, batch)
    classifier = _Classifier(gm, recorder.values)

    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    current = placeholder
    chain = {current}
    ops = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "output":
            result = node.args[0]
            if isinstance(result, (tuple, list)):
                if len(result) != 1:
                    raise ConversionError(f"the model returns {len(result)} outputs; supported: one score tensor")
                result = result[0]
            if result is not current:
                raise ConversionError("the model's output is not the end of its single chain of layers; "
                                      f"supported: {SUPPORTED} in a chain")
            break
        if node not in dependent:
            continue                       # a constant: its value is recorded
        path, type_name = _describe(node, gm)
        try:
            kind, details = classifier.classify(node)
        except KeyError:
            raise ConversionError(f"{path!r}: {type_name} takes a tensor computed from the input as a weight; "
                                  f"supported: {SUPPORTED}") from None
        if kind == "guard" or (kind == "shape" and node.op != "call_module"):
            continue
        tensors = [a for a in node.all_input_nodes if a in dependent and a in recorder.shapes]
        if any(a is not current for a in tensors) or len([a for a in _flat_args(node) if a is current]) > 1:
            raise ConversionError(f"{path!r}: {type_name} combines several tensors (a branch or residual "
                                  f"connection); supported: a single chain of {SUPPORTED}")
        if not tensors:
            continue
        _refuse_kind(kind, path, type_name, details)
        if kind == "arithmetic":
            details = _arithmetic(details, current, classifier, path, type_name)
        shape = recorder.shapes.get(node)
        if shape is not None and (not shape or shape[0] != batch):
            raise ConversionError(f"{path!r}: {type_name} mixes samples of a batch (output shape {shape} for a "
                                  f"batch of {batch}); supported: per-sample operations")
        ops.append(_Op(kind, path, type_name, details, None if shape is None else shape[1:]))
        current = node
        chain.add(node)
    return _Fold(input_shape).run(ops)


def _refuse_kind(kind: str, path: str, type_name: str, details) -> None:
    """Raise the ConversionError for an op the classifier judged unconvertible (no-op for the others)."""
    if kind == "bn-training":
        raise ConversionError(f"{path!r}: {type_name} is in training mode; call model.eval() first")
    if kind == "unsupported":
        raise ConversionError(f"{path!r}: {type_name} with {details} is not supported; supported: {SUPPORTED}")
    if kind == "other":
        raise ConversionError(f"{path!r}: {type_name} is not supported; supported: {SUPPORTED}")


def _refuse_unsupported(gm):
    """Name an unsupported op on the input's path before running the model (which it might break)."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    dependent = {placeholder}
    classifier = _Classifier(gm, {})
    for node in gm.graph.nodes:
        if node is placeholder or node.op == "output" or not any(a in dependent for a in node.all_input_nodes):
            continue
        dependent.add(node)
        try:
            kind, details = classifier.classify(node)
        except KeyError:               # a constant not known before the run: judged after it
            continue
        path, type_name = _describe(node, gm)
        _refuse_kind(kind, path, type_name, details)


def _flat_args(node):
    flat = []
    for a in list(node.args) + list(node.kwargs.values()):
        if isinstance(a, (tuple, list)):
            flat.extend(a)
        else:
            flat.append(a)
    return flat


def _arithmetic(details, current, classifier, path, type_name):
    """``(operation, constant)`` of ``current <op> constant`` (or ``constant - current`` as ``rsub``)."""
    operation, left, right, alpha = details
    if left is current:
        constant = right
    elif right is current:
        constant = left
        if operation == "div":
            raise ConversionError(f"{path!r}: {type_name} divides a constant by the input; supported: "
                                  f"constant arithmetic x / c, x - c, x + c, x * c on the input")
        operation = {"sub": "rsub", "rsub": "sub"}.get(operation, operation)
    else:
        raise ConversionError(f"{path!r}: {type_name} is not supported; supported: {SUPPORTED}")
    value = classifier.const(constant)
    if isinstance(value, torch.Tensor):
        value = value.double().numpy()
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = np.float64(value)
    else:
        raise ConversionError(f"{path!r}: {type_name} with a {type(value).__name__} operand is not supported; "
                              f"supported: numbers and constant tensors")
    if operation in ("add", "sub", "rsub"):
        value = value * float(alpha) if operation in ("add", "sub") else value
        if operation == "rsub" and alpha != 1:
            raise ConversionError(f"{path!r}: {type_name} with alpha={alpha} is not supported")
    return operation, np.asarray(value, dtype=np.float64)


def fold_input_affine(layer, scale: np.ndarray, offset: np.ndarray, where: str):
    """Fold ``x = scale * raw + offset`` (elementwise over the layer's input, flat arrays) into ``layer``.

    A Linear takes any per-element affine map. A Conv2d takes one that is constant per channel, and an
    offset only without zero padding: the hardware pads with raw 0, the model pads its *normalised*
    input with 0, so a shifted input would change the border outputs.
    """
    if layer.kind == "dense":
        weight = layer.weight * scale[None, :]
        bias = layer.bias + layer.weight @ offset
        folded = FloatLayer(layer.path, weight, bias, layer.relu)
    else:
        channels = layer.in_shape[0]
        scale_map = scale.reshape(layer.in_shape).reshape(channels, -1)
        offset_map = offset.reshape(layer.in_shape).reshape(channels, -1)
        for name, values in (("scale", scale_map), ("offset", offset_map)):
            if not np.allclose(values, values[:, :1], rtol=1e-12, atol=0):
                raise ConversionError(f"{layer.path!r}: the input {where} has a {name} that varies within a channel; "
                                      f"a Conv2d takes one scale and one offset per input channel")
        channel_scale, channel_offset = scale_map[:, 0], offset_map[:, 0]
        if np.any(channel_offset != 0) and tuple(layer.padding) != (0, 0):
            raise ConversionError(
                f"{layer.path!r}: the input {where} shifts the input (offset {_brief(channel_offset)}), which cannot "
                f"be folded into a Conv2d with zero padding {tuple(layer.padding)}: the hardware pads with raw 0 but "
                f"the model pads its normalised input with 0. Supported: a scale only (x / 255, x / std) before a "
                f"padded Conv2d, or padding=0")
        weight = layer.weight * channel_scale[None, :, None, None]
        bias = layer.bias + layer.weight.sum(axis=(2, 3)) @ channel_offset
        folded = FloatConv(layer.path, weight, bias, layer.relu, layer.in_shape, layer.stride, layer.padding)
    folded.quantized = layer.quantized             # a QuantReLU's step stays with its layer
    if not (np.isfinite(folded.weight).all() and np.isfinite(folded.bias).all()):
        raise ConversionError(f"{layer.path!r}: folding the input {where} gives non-finite weights (a division "
                              f"by zero?)")
    return folded


def _brief(values) -> str:
    values = np.asarray(values).reshape(-1)
    text = ", ".join(f"{v:.4g}" for v in values[:4])
    return f"[{text}{', ...' if values.size > 4 else ''}]"


class _Fold:
    """Walks the recognised ops, tracking the per-sample shape, and builds the float layers."""

    def __init__(self, input_shape):
        self.shape = tuple(input_shape)
        self.features = int(np.prod(self.shape))
        self.scale = np.ones(self.features)        # in-forward input arithmetic: x = scale * input + offset
        self.offset = np.zeros(self.features)
        self.arithmetic = None                     # the path of the first constant arithmetic, if any
        self.layers = []
        self.pool = None                           # a pending average pool: dict(path, in_shape, kernel, stride)
        self.previous = None                       # kind of the previous meaningful op
        self.encoder = None                        # spikeforge::encode seen: a fine-tuned (integer) network
        self.scaled = None                         # the op that scaled the scores (nothing may follow it)

    # -- helpers

    def _last_linear(self):
        for layer in reversed(self.layers):
            if layer.kind in LINEAR_KINDS:
                return layer
        return None

    def _expect_map(self, op):
        if len(self.shape) != 3:
            raise ConversionError(f"{op.path!r}: {op.type_name} takes a (C, H, W) map, but its input has shape "
                                  f"{self.shape}")

    def _check_shape(self, op, shape):
        if op.out_shape is not None and tuple(op.out_shape) != tuple(shape):
            raise ConversionError(f"{op.path!r}: {op.type_name} outputs shape {tuple(op.out_shape)} in the model, "
                                  f"the converter computed {tuple(shape)}; supported: {SUPPORTED}")

    def _before_linear(self, op):
        """Checks shared by Linear and Conv2d: a ReLU after the previous linear layer."""
        last = self._last_linear()
        if last is not None and not last.relu:
            raise ConversionError(f"{op.path!r}: {op.type_name} follows {last.path!r} with no ReLU between them; "
                                  f"spiking neurons need a ReLU after every hidden layer")

    def _add_linear(self, layer, op):
        if not (np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()):
            raise ConversionError(f"{layer.path!r}: {op.type_name} has non-finite weights or bias (NaN or inf)")
        if self.encoder is not None and not self.layers:
            layer.quantized.encoder = self.encoder
        if not self.layers and self.arithmetic is not None:
            layer = fold_input_affine(layer, self.scale, self.offset, f"arithmetic in forward ({self.arithmetic!r})")
        self.layers.append(layer)
        self.shape = layer.out_shape

    # -- the walk

    def run(self, ops):
        for op in ops:
            if self.scaled is not None and op.kind not in ("identity", "reshape"):
                scaled = self.scaled
                raise ConversionError(f"{scaled.path!r}: {scaled.type_name} (constant arithmetic) after "
                                      f"{self.layers[-1].path!r} is not supported; supported: constant arithmetic on "
                                      f"the input, before the first layer, or a positive scale of the scores")
            if self.encoder is not None and op.kind in _NOT_IN_FINETUNED:
                raise ConversionError(f"{op.path!r}: {op.type_name} in a fine-tuned network (one that encodes its input "
                                      f"with spikeforge::encode) is not supported; such a network holds only integer "
                                      f"Linear/Conv2d layers, spikeforge::fire neurons, max pools and flattens")
            handler = getattr(self, "_" + op.kind)
            handler(op)
            if op.kind not in ("identity", "reshape"):
                self.previous = op.kind
        return self._finish()

    def _identity(self, op):
        pass

    def _reshape(self, op):
        new = tuple(op.out_shape)
        if not self.layers and self.pool is None:
            self.shape = new                       # any reshape of the input (element order is kept)
        elif len(new) == 1 or new == self.shape:
            self.shape = new
        else:
            raise ConversionError(f"{op.path!r}: {op.type_name} reshapes {self.shape} to {new}; supported after the "
                                  f"first layer: a flatten to features")

    def _arithmetic(self, op):
        operation, value = op.details
        last = self.layers[-1] if self.layers else None
        if last is not None and last.kind in LINEAR_KINDS and not last.relu and self.pool is None \
                and operation in ("mul", "div") and value.size == 1 and float(value.reshape(-1)[0]) > 0:
            # Maybe the scores times a positive constant (temperature, a fine-tuned network's score unit):
            # no label changes. Refused in run() if anything but a no-op follows.
            factor = float(value.reshape(-1)[0])
            last.quantized.score_scale *= factor if operation == "mul" else 1.0 / factor
            self.scaled = op
            return
        if self.encoder is not None and not self.layers:
            raise ConversionError(f"{op.path!r}: {op.type_name} (constant arithmetic) between spikeforge::encode and "
                                  f"the first layer is not supported")
        if self.layers or self.pool is not None:
            after = self.layers[-1].path if self.layers else self.pool["path"]
            raise ConversionError(f"{op.path!r}: {op.type_name} (constant arithmetic) after {after!r} is not "
                                  f"supported; supported: constant arithmetic on the input, before the first layer")
        batch_shape = (1,) + self.shape
        try:
            broadcast = np.broadcast_shapes(value.shape, batch_shape)
        except ValueError:
            broadcast = None
        if broadcast != batch_shape:
            raise ConversionError(f"{op.path!r}: {op.type_name} with a constant of shape {value.shape} does not "
                                  f"broadcast against the input's shape {self.shape} (per sample); supported: "
                                  f"scalars, per-channel (C, 1, 1) / (1, C, 1, 1) or per-feature constants")
        flat = np.broadcast_to(value, batch_shape).reshape(-1)
        if operation == "add":
            self.offset = self.offset + flat
        elif operation == "sub":
            self.offset = self.offset - flat
        elif operation == "rsub":
            self.scale, self.offset = -self.scale, flat - self.offset
        elif operation == "mul":
            self.scale, self.offset = self.scale * flat, self.offset * flat
        elif operation == "div":
            if np.any(flat == 0):
                raise ConversionError(f"{op.path!r}: {op.type_name} divides the input by 0")
            self.scale, self.offset = self.scale / flat, self.offset / flat
        self.arithmetic = self.arithmetic or op.path

    def _linear(self, op):
        weight, bias = op.details
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ConversionError(f"{op.path!r}: {op.type_name} has no constant 2-D weight")
        weight = weight.double().numpy().copy()
        bias = np.zeros(weight.shape[0]) if bias is None else bias.double().numpy().copy()
        self._before_linear(op)
        if len(self.shape) != 1:
            raise ConversionError(f"{op.path!r}: {op.type_name} is applied to a tensor of shape {self.shape} per "
                                  f"sample; flatten it to features first (nn.Flatten, torch.flatten(x, 1))")
        if self.shape[0] != weight.shape[1]:
            source = self.layers[-1].path if self.layers else "the input"
            raise ConversionError(f"{op.path!r}: takes {weight.shape[1]} features but {source!r} gives "
                                  f"{self.shape[0]}")
        if self.pool is not None:
            weight = _spread_dense(weight, self.pool)
            self.pool = None
        self._add_linear(FloatLayer(op.path, weight, bias, relu=False), op)
        self._check_shape(op, self.shape)

    def _conv(self, op):
        weight, bias, stride, padding = op.details
        weight = weight.double().numpy().copy()
        bias = np.zeros(weight.shape[0]) if bias is None else bias.double().numpy().copy()
        self._before_linear(op)
        self._expect_map(op)
        if self.shape[0] != weight.shape[1]:
            raise ConversionError(f"{op.path!r}: {op.type_name} takes {weight.shape[1]} channels but its input has "
                                  f"{self.shape[0]} (shape {self.shape})")
        in_shape = self.shape
        if self.pool is not None:
            weight, stride, padding, in_shape = _spread_conv(op, weight, stride, padding, self.pool)
            self.pool = None
        if any(p >= k for p, k in zip(padding, weight.shape[2:])):
            raise ConversionError(f"{op.path!r}: {op.type_name} has padding {padding} >= its kernel "
                                  f"{tuple(weight.shape[2:])}; supported: padding smaller than the kernel")
        layer = FloatConv(op.path, weight, bias, False, in_shape, stride, padding)
        if min(layer.out_shape[1:]) < 1:
            raise ConversionError(f"{op.path!r}: {op.type_name}'s kernel does not fit its input {in_shape}")
        self._add_linear(layer, op)
        self._check_shape(op, self.shape)

    def _batchnorm(self, op):
        gamma, beta, mean, var, eps, dims = op.details
        last = self.layers[-1] if self.layers else None
        if self.previous not in ("linear", "conv") or (dims == 2 and last.kind != "conv2d") or \
                (dims == 1 and last.kind != "dense"):
            raise ConversionError(f"{op.path!r}: {op.type_name} must directly follow a "
                                  f"{'Conv2d' if dims == 2 else 'Linear' if dims == 1 else 'Linear or Conv2d'} "
                                  f"to be folded; supported: {SUPPORTED}")
        gamma, beta, mean, var = (t.double().numpy() for t in (gamma, beta, mean, var))
        scale = gamma / np.sqrt(var + eps)
        shape = (-1,) + (1,) * (last.weight.ndim - 1)
        last.weight = last.weight * scale.reshape(shape)
        last.bias = (last.bias - mean) * scale + beta
        if not (np.isfinite(last.weight).all() and np.isfinite(last.bias).all()):
            raise ConversionError(f"{op.path!r}: {op.type_name} folds into non-finite weights (NaN or inf)")

    def _relu(self, op):
        last = self._last_linear()
        if last is None:
            raise ConversionError(f"{op.path!r}: {op.type_name} on the model's input is not supported; a ReLU "
                                  f"must follow a Linear or Conv2d")
        if self.pool is not None and self.pool["before_relu"]:
            raise ConversionError(f"{self.pool['path']!r}: {self.pool['type']} between {last.path!r} and its ReLU is "
                                  f"not supported; average pooling is folded into the next layer and must follow "
                                  f"the ReLU")
        # relu(maxpool(z)) == maxpool(relu(z)), and a pending average of ReLU outputs is never negative.
        last.relu = True

    def _encode(self, op):
        scale, offset, lut = (np.asarray(torch.as_tensor(v).double().numpy(), dtype=np.float64) for v in op.details)
        if self.layers or self.pool is not None or self.encoder is not None:
            raise ConversionError(f"{op.path!r}: spikeforge::encode must come before the first layer, once")
        if lut.shape != (256,):
            raise ConversionError(f"{op.path!r}: spikeforge::encode's LUT has shape {lut.shape}; expected (256,)")
        count = self.features
        try:
            scale = np.broadcast_to(scale, (1,) + self.shape).reshape(-1)
            offset = np.broadcast_to(offset, (1,) + self.shape).reshape(-1)
        except ValueError:
            raise ConversionError(f"{op.path!r}: spikeforge::encode's scale/offset do not broadcast against the input "
                                  f"shape {self.shape}") from None
        if scale.size != count:
            raise ConversionError(f"{op.path!r}: spikeforge::encode's scale has {scale.size} values for {count} inputs")
        # Earlier input arithmetic x' = s·x + t composes: raw = a·x' + b = (a·s)·x + (a·t + b).
        self.encoder = {"scale": scale * self.scale, "offset": scale * self.offset + offset, "lut": lut,
                        "path": op.path}
        self.scale, self.offset, self.arithmetic = np.ones(count), np.zeros(count), None

    def _fire(self, op):
        threshold, v0, code_max, step = op.details
        last = self._last_linear()
        if self.encoder is None:
            raise ConversionError(f"{op.path!r}: spikeforge::fire in a network whose input is not encoded by "
                                  f"spikeforge::encode; supported: the networks spikeforge.finetune writes")
        if last is None or self.previous not in ("linear", "conv") or last.relu:
            raise ConversionError(f"{op.path!r}: spikeforge::fire must directly follow a Linear or Conv2d")
        channels = last.out_channels
        values = {}
        for name, value in (("threshold", threshold), ("v0", v0), ("step", step)):
            array = torch.as_tensor(value).double().numpy().reshape(-1)
            if array.size == 1:
                array = np.full(channels, array[0])
            if array.size != channels:
                raise ConversionError(f"{op.path!r}: spikeforge::fire's {name} has {array.size} values for "
                                      f"{channels} output channels of {last.path!r}")
            values[name] = array
        last.relu = True
        last.quantized.neuron = {**values, "code_max": int(code_max)}

    def _quant_relu(self, op):
        step, code_max = op.details
        self._relu(op)
        last = self._last_linear()
        last.quantized.step = torch.as_tensor(step).double().numpy().reshape(-1).copy()
        last.quantized.code_max = int(code_max)

    def _maxpool(self, op):
        kernel, stride = op.details
        if not self.layers:
            raise ConversionError(f"{op.path!r}: {op.type_name} of the raw input is not supported; supported: max "
                                  f"pooling after a Conv2d")
        if self.pool is not None:
            raise ConversionError(f"{op.path!r}: {op.type_name} after the average pool {self.pool['path']!r} is "
                                  f"not supported; supported: max pooling after a Conv2d (before or after its ReLU)")
        self._expect_map(op)
        if any(k > size for k, size in zip(kernel, self.shape[1:])):
            raise ConversionError(f"{op.path!r}: {op.type_name}'s kernel {kernel} does not fit its input {self.shape}")
        layer = FloatMaxPool(op.path, self.shape, kernel, stride)
        self.layers.append(layer)
        self.shape = layer.out_shape
        self._check_shape(op, self.shape)

    def _pool(self, op, kernel, stride):
        """An average pool over ``kernel`` windows with ``stride``: held until the next linear layer."""
        self._expect_map(op)
        last = self._last_linear()
        # Before a ReLU the pool cannot be folded forward; whether one follows (refused in _relu) or
        # nothing does (the output layer's pool, refused in _finish) decides the message.
        before_relu = last.path if last is not None and not last.relu else None
        channels, height, width = self.shape
        if any(k > size for k, size in zip(kernel, (height, width))):
            raise ConversionError(f"{op.path!r}: {op.type_name}'s kernel {kernel} does not fit its input {self.shape}")
        if self.pool is None:
            self.pool = {"path": op.path, "type": op.type_name, "in_shape": self.shape, "kernel": kernel,
                         "stride": stride, "before_relu": before_relu}
        else:
            held = self.pool
            if held["kernel"] != held["stride"] or kernel != stride:
                raise ConversionError(f"{op.path!r}: {op.type_name} after the average pool {held['path']!r} can be "
                                      f"folded only when both pools' strides equal their kernels")
            self.pool = {"path": held["path"], "type": held["type"], "in_shape": held["in_shape"],
                         "kernel": tuple(a * b for a, b in zip(held["kernel"], kernel)),
                         "stride": tuple(a * b for a, b in zip(held["stride"], stride)),
                         "before_relu": held["before_relu"]}
        self.shape = (channels,) + tuple((size - k) // s + 1 for size, k, s in zip((height, width), kernel, stride))

    def _avgpool(self, op):
        self._pool(op, *op.details)
        self._check_shape(op, self.shape)

    def _adaptive(self, op):
        self._expect_map(op)
        size = op.details
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2:
            raise ConversionError(f"{op.path!r}: {op.type_name} with output size {op.details!r} is not supported")
        _, height, width = self.shape
        size = tuple(s if s is not None else full for s, full in zip(size, (height, width)))
        if any(full % s for s, full in zip(size, (height, width))):
            raise ConversionError(f"{op.path!r}: {op.type_name} with output size {size} on a {height}x{width} map "
                                  f"cannot be folded exactly; supported: an output size that divides the input "
                                  f"(then it is an AvgPool2d)")
        kernel = (height // size[0], width // size[1])
        self._pool(op, kernel, kernel)
        self._check_shape(op, self.shape)

    def _mean(self, op):
        dims, keepdim = op.details
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        self._expect_map(op)
        if sorted(d % 4 for d in dims) != [2, 3]:
            raise ConversionError(f"{op.path!r}: {op.type_name} over dims {dims} is not supported; supported: the "
                                  f"mean over (2, 3), a global average pool")
        channels, height, width = self.shape
        self._pool(op, (height, width), (height, width))
        if not keepdim:
            self.shape = (channels,)
        self._check_shape(op, self.shape)

    def _finish(self):
        if self.pool is not None:
            raise ConversionError(f"{self.pool['path']!r}: {self.pool['type']} after the last layer cannot be folded "
                                  f"(average pooling is folded into the next Linear or Conv2d)")
        linear = [layer for layer in self.layers if layer.kind in LINEAR_KINDS]
        if not linear:
            raise ConversionError(f"the model has no Linear or Conv2d layer; supported: {SUPPORTED}")
        last = self.layers[-1]
        if last.kind == "maxpool2d":
            raise ConversionError(f"{last.path!r}: max pooling after the output layer is not supported; the scores "
                                  f"must be the last Linear's output")
        if last.relu:
            raise ConversionError(f"{last.path!r}: the output layer is followed by a ReLU; the scores must be "
                                  f"the last layer's output (remove the final ReLU)")
        if self.encoder is not None:
            for layer in linear[:-1]:
                if layer.quantized.neuron is None:
                    raise ConversionError(f"{layer.path!r}: a hidden layer of a fine-tuned network (one that encodes "
                                          f"its input with spikeforge::encode) must end in spikeforge::fire")
        return self.layers


#: Op kinds a fine-tuned network cannot hold: its layers are integers already (nothing to fold into
#: them) and its neurons are spikeforge::fire.
_NOT_IN_FINETUNED = ("batchnorm", "avgpool", "adaptive", "mean", "relu", "quant_relu")


def _spread_dense(weight, pool):
    """A Linear after an average pool, as one Linear on the unpooled map: weights spread and divided."""
    channels, height, width = pool["in_shape"]
    (kh, kw), (sh, sw) = pool["kernel"], pool["stride"]
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    pooled = weight.reshape(weight.shape[0], channels, out_h, out_w) / (kh * kw)
    spread = np.zeros((weight.shape[0], channels, height, width))
    for dy in range(kh):
        for dx in range(kw):
            spread[:, :, dy:dy + sh * (out_h - 1) + 1:sh, dx:dx + sw * (out_w - 1) + 1:sw] += pooled
    return spread.reshape(weight.shape[0], -1)


def _spread_conv(op, weight, stride, padding, pool):
    """A Conv2d after an average pool (stride == kernel) as a strided Conv2d on the unpooled map."""
    (kh, kw), (sh, sw) = pool["kernel"], pool["stride"]
    if (kh, kw) != (sh, sw):
        raise ConversionError(f"{pool['path']!r}: {pool['type']} with kernel {(kh, kw)} and stride {(sh, sw)} "
                              f"before the Conv2d {op.path!r} cannot be folded exactly; supported: stride equal "
                              f"to the kernel")
    _, height, width = pool["in_shape"]
    if tuple(padding) != (0, 0) and (height % kh or width % kw):
        raise ConversionError(f"{pool['path']!r}: {pool['type']} drops the last rows/columns of its {height}x{width} "
                              f"input, so the padded Conv2d {op.path!r} after it cannot be folded exactly; "
                              f"supported: a pool kernel that divides the map, or padding=0")
    spread = np.repeat(np.repeat(weight, kh, axis=2), kw, axis=3) / (kh * kw)
    return (spread, (stride[0] * kh, stride[1] * kw), (padding[0] * kh, padding[1] * kw), pool["in_shape"])
