"""PyTorch -> a chain of float dense layers, through ``torch.fx``.

Works on any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace and on the ``GraphModule`` of
a ``torch.export`` program (``.pt2``), so models need not be ``nn.Sequential``. Supported:

* ``nn.Linear`` / ``aten.linear``;
* ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` / ``aten.relu``;
* ``nn.Flatten``, ``torch.flatten``, ``Tensor.view`` / ``reshape`` / ``flatten`` to 1-D features;
* ``nn.Dropout`` / ``aten.dropout`` and ``nn.Identity`` (ignored at inference);
* ``nn.BatchNorm1d`` / ``aten.batch_norm`` directly after a Linear (folded into it; eval mode only).

Everything else raises :class:`ConversionError` naming the node's path and type. The result is
checked numerically against the model itself during calibration (see :mod:`.calibrate`).
"""

from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from spikeforge.ir.errors import InputError

__all__ = ["ConversionError", "FloatLayer", "import_model", "SUPPORTED"]

SUPPORTED = ("Linear, ReLU (nn.ReLU, F.relu, torch.relu), Flatten/view/reshape to 1-D, Dropout, Identity, "
             "BatchNorm1d after a Linear")


class ConversionError(InputError):
    """The model cannot be converted; the message names the offending module and what is supported."""


@dataclass
class FloatLayer:
    """A dense layer of the float model after folding: ``z = weight @ x + bias``, then ReLU if ``relu``."""

    path: str
    weight: np.ndarray      # float64 (out, in)
    bias: np.ndarray        # float64 (out,)
    relu: bool

    def forward(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weight.T + self.bias
        return np.maximum(z, 0.0) if self.relu else z


_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape, torch.ops.aten.flatten.using_ints, torch.ops.aten.view.default,
                      torch.ops.aten.reshape.default, torch.ops.aten._unsafe_view.default}
_IDENTITY_FUNCTIONS = {F.dropout, torch.dropout, torch.ops.aten.dropout.default, torch.ops.aten.clone.default,
                       torch.ops.aten.alias.default}
_LINEAR_FUNCTIONS = {F.linear, torch.ops.aten.linear.default}
_BATCHNORM_FUNCTIONS = {torch.ops.aten.batch_norm.default,
                        torch.ops.aten._native_batch_norm_legit_no_training.default}
_SHAPE_METHODS = {"size", "dim"}


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
    stack = node.meta.get("nn_module_stack")
    path = list(stack.values())[-1][0] if stack else node.name
    return path or node.name, name


def _tensor(gm, arg) -> torch.Tensor | None:
    if arg is None:
        return None
    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
        value = gm
        for part in arg.target.split("."):
            value = getattr(value, part)
        return value.detach()
    raise ConversionError(f"expected a parameter, got {arg!r}")


def _classify(node, gm):
    """(kind, details) where kind is linear / relu / flatten / identity / batchnorm / shape / other."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.Linear):
            return "linear", (module.weight.detach(), None if module.bias is None else module.bias.detach())
        if isinstance(module, nn.ReLU):
            return "relu", None
        if isinstance(module, nn.Flatten):
            return "flatten", None
        if isinstance(module, (nn.Dropout, nn.Identity)):
            return "identity", None
        if isinstance(module, nn.BatchNorm1d):
            if module.training:
                return "bn-training", None
            if not module.track_running_stats or module.running_mean is None:
                return "other", None
            weight = module.weight.detach() if module.affine else torch.ones_like(module.running_mean)
            bias = module.bias.detach() if module.affine else torch.zeros_like(module.running_mean)
            return "batchnorm", (weight, bias, module.running_mean.detach(), module.running_var.detach(), module.eps)
        if node.target.startswith("_guards"):
            return "guard", None
        return "other", None
    if node.op == "call_method":
        if node.target == "relu":
            return "relu", None
        if node.target in ("view", "reshape", "flatten"):
            return "flatten", None
        if node.target in ("contiguous",):
            return "identity", None
        if node.target in _SHAPE_METHODS:
            return "shape", None
        return "other", None
    if node.op == "call_function":
        target = node.target
        if target in _LINEAR_FUNCTIONS:
            weight = _tensor(gm, node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            return "linear", (weight, _tensor(gm, bias))
        if target in _RELU_FUNCTIONS:
            return "relu", None
        if target in _FLATTEN_FUNCTIONS:
            return "flatten", None
        if target in _IDENTITY_FUNCTIONS:
            return "identity", None
        if target in _BATCHNORM_FUNCTIONS:
            args = node.args
            if target is torch.ops.aten.batch_norm.default:
                if args[5]:
                    return "bn-training", None
                weight, bias, mean, var, eps = args[1], args[2], args[3], args[4], args[7]
            else:
                weight, bias, mean, var, eps = args[1], args[2], args[3], args[4], args[6]
            mean, var = _tensor(gm, mean), _tensor(gm, var)
            weight = _tensor(gm, weight) if weight is not None else torch.ones_like(mean)
            bias = _tensor(gm, bias) if bias is not None else torch.zeros_like(mean)
            return "batchnorm", (weight, bias, mean, var, eps)
        if target is operator.getitem and node.args[0].op == "call_function" and \
                node.args[0].target is torch.ops.aten._native_batch_norm_legit_no_training.default:
            return ("identity", None) if node.args[1] == 0 else ("shape", None)
        if target is getattr or target is operator.getitem:
            return "shape", None
        return "other", None
    return "other", None


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        raise ConversionError(f"torch.fx cannot trace {type(model).__name__}: {error}. Models with data-dependent "
                              f"control flow can be converted through torch.export (save a .pt2)") from None


def import_model(model: nn.Module) -> list[FloatLayer]:
    """Trace ``model`` and return its dense layers with BatchNorm folded in.

    Raises
    ------
    ConversionError
        For an unsupported module or function (naming its path and type), a model in training mode with
        BatchNorm, a missing ReLU between two Linears, a branching graph (residual adds), a ReLU after the
        output layer, or non-finite weights.
    """
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
    current = placeholders[0]
    chain = {current}
    ops = []                               # (kind, path, type, details)
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
        inputs = [a for a in node.all_input_nodes if a in chain]
        kind, details = _classify(node, gm)
        path, type_name = _describe(node, gm)
        if kind == "guard" or (kind == "shape" and node.op != "call_module"):
            continue
        if not inputs:
            if kind == "other":
                raise ConversionError(f"{path!r}: {type_name} is not supported; supported: {SUPPORTED}")
            continue
        if any(a is not current for a in inputs):
            raise ConversionError(f"{path!r}: {type_name} combines several tensors (a branch or residual "
                                  f"connection); supported: a single chain of {SUPPORTED}")
        if kind == "bn-training":
            raise ConversionError(f"{path!r}: {type_name} is in training mode; call model.eval() first")
        if kind == "other":
            raise ConversionError(f"{path!r}: {type_name} is not supported; supported: {SUPPORTED}")
        ops.append((kind, path, type_name, details))
        current = node
        chain.add(node)
    return _fold(ops)


def _fold(ops) -> list[FloatLayer]:
    layers: list[FloatLayer] = []
    previous = None                        # kind of the previous meaningful op
    for kind, path, type_name, details in ops:
        if kind in ("identity", "flatten"):
            continue
        if kind == "linear":
            if previous in ("linear", "batchnorm"):
                last = layers[-1]
                raise ConversionError(f"{path!r}: {type_name} follows {last.path!r} with no ReLU between them; "
                                      f"spiking neurons need a ReLU after every hidden Linear")
            weight, bias = details
            weight = weight.double().numpy().copy()
            bias = np.zeros(weight.shape[0]) if bias is None else bias.double().numpy().copy()
            if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
                raise ConversionError(f"{path!r}: {type_name} has non-finite weights or bias (NaN or inf)")
            layers.append(FloatLayer(path, weight, bias, relu=False))
        elif kind == "batchnorm":
            if previous != "linear":
                raise ConversionError(f"{path!r}: {type_name} must directly follow a Linear to be folded; "
                                      f"supported: {SUPPORTED}")
            gamma, beta, mean, var, eps = (t.double().numpy() if isinstance(t, torch.Tensor) else t for t in details)
            scale = gamma / np.sqrt(var + eps)
            layer = layers[-1]
            layer.weight = layer.weight * scale[:, None]
            layer.bias = (layer.bias - mean) * scale + beta
            if not (np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()):
                raise ConversionError(f"{path!r}: {type_name} folds into non-finite weights (NaN or inf)")
        elif kind == "relu":
            if previous is None:
                raise ConversionError(f"{path!r}: {type_name} on the model's input is not supported; a ReLU "
                                      f"must follow a Linear")
            if previous == "relu":
                continue                   # relu(relu(x)) == relu(x)
            layers[-1].relu = True
        previous = kind
    if not layers:
        raise ConversionError(f"the model has no Linear layer; supported: {SUPPORTED}")
    if layers[-1].relu:
        raise ConversionError(f"{layers[-1].path!r}: the output layer is followed by a ReLU; the scores must be "
                              f"the last Linear's output (remove the final ReLU)")
    for index, (a, b) in enumerate(zip(layers, layers[1:])):
        if a.weight.shape[0] != b.weight.shape[1]:
            raise ConversionError(f"{b.path!r}: takes {b.weight.shape[1]} features but {a.path!r} gives "
                                  f"{a.weight.shape[0]}")
    return layers
