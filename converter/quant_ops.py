"""The neuron as PyTorch operators: what a quantisation-aware network computes, one op each.

Three custom operators (``torch.library``, namespace ``spikeforge``) that ``torch.fx`` traces and
``torch.export`` keeps as single nodes, so :mod:`.torch_import` finds them in a traced module and in a
``.pt2`` program alike (importing this module registers them; :mod:`.torch_import` does, so any
spikeforge loader can read a ``.pt2`` that holds them):

* ``spikeforge::encode(x, scale, offset, lut)`` — the input encoder: the raw byte is recovered from
  the model's input ``x`` as ``round(scale · x + offset)`` (the inverse of the input normalisation the
  model was trained with), clipped to 0..255, and mapped through the 256-entry ``lut`` to its spike
  code (DESIGN.md §1: the hardware's input LUT).
* ``spikeforge::fire(potential, threshold, v0, code_max, step)`` — the iLIF neuron's fire phase in
  closed form, ``clip(floor((potential + v0) / threshold), 0, code_max)``, on integer potentials
  ``W·q + b`` (DESIGN.md §1). ``step`` (the activation step the codes stand for) is carried only so a
  converter can record it.
* ``spikeforge::quant_relu(z, step, code_max)`` — the same neuron in the float domain:
  ``step · clip(floor(z / step + 1/2), 0, code_max)``, a T-bit quantised ReLU with step ``step``
  (= the neuron with ``v0 = θ/2``), differentiable with the LSQ straight-through gradient
  (Esser et al. 2020): ``∂/∂z = 1`` where the clip does not bind, else 0; ``∂/∂step = q - z/step``
  inside, ``code_max`` above, 0 below.

Every op takes and returns float tensors; codes are integer-valued floats. Integer sums stay exact in
float32 below 2^24 (:data:`EXACT_FLOAT32`), so a network of these ops computes the integer network
exactly.
"""

from __future__ import annotations

import torch

__all__ = ["encode", "fire", "quant_relu", "EXACT_FLOAT32", "ENCODE", "FIRE", "QUANT_RELU"]

#: float32 represents every integer of magnitude below this exactly (so sums of products of integer
#: weights and codes that stay below it are exact, in any order).
EXACT_FLOAT32 = 1 << 24


# The low-level Library API: ``torch.library.custom_op`` would import torch._dynamo on the first call
# (seconds), this does not. The library object must live as long as the ops.
_LIBRARY = torch.library.Library("spikeforge", "DEF")
_LIBRARY.define("encode(Tensor x, Tensor scale, Tensor offset, Tensor lut) -> Tensor")
_LIBRARY.define("fire(Tensor potential, Tensor threshold, Tensor v0, int code_max, Tensor step) -> Tensor")
_LIBRARY.define("quant_relu(Tensor z, Tensor step, int code_max) -> Tensor")


def _encode(x, scale, offset, lut):
    raw = torch.clamp(torch.round(x * scale + offset), 0, 255).to(torch.int64)
    return lut.to(x.dtype)[raw]


def _fire(potential, threshold, v0, code_max, step):
    return torch.clamp(torch.floor((potential + v0) / threshold), 0, code_max)


def _quant_relu(z, step, code_max):
    return step * torch.clamp(torch.floor(z / step + 0.5), 0, code_max)


def _like_first(first, *rest):
    return torch.empty_like(first)


for _name, _function in (("encode", _encode), ("fire", _fire), ("quant_relu", _quant_relu)):
    _LIBRARY.impl(_name, _function, "CompositeExplicitAutograd")
    torch.library.register_fake(f"spikeforge::{_name}", _like_first, lib=_LIBRARY)


def _quant_relu_setup(ctx, inputs, output):
    z, step, code_max = inputs
    ctx.save_for_backward(z, step)
    ctx.code_max = code_max


def _sum_to(gradient: torch.Tensor, shape) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape`` (a parameter's)."""
    while gradient.dim() > len(shape):
        gradient = gradient.sum(0)
    for axis, size in enumerate(shape):
        if size == 1 and gradient.shape[axis] != 1:
            gradient = gradient.sum(axis, keepdim=True)
    return gradient


def _quant_relu_backward(ctx, grad):
    z, step = ctx.saved_tensors
    x = z / step
    unclipped = torch.floor(x + 0.5)
    inside = (unclipped >= 0) & (unclipped <= ctx.code_max)
    above = unclipped > ctx.code_max
    grad_z = grad * inside
    grad_step = grad * torch.where(inside, unclipped - x, torch.where(above, float(ctx.code_max), 0.0))
    return grad_z, _sum_to(grad_step, step.shape), None


torch.library.register_autograd("spikeforge::quant_relu", _quant_relu_backward, setup_context=_quant_relu_setup,
                                lib=_LIBRARY)

ENCODE = torch.ops.spikeforge.encode.default
FIRE = torch.ops.spikeforge.fire.default
QUANT_RELU = torch.ops.spikeforge.quant_relu.default


def encode(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Input codes ``lut[clip(round(scale·x + offset), 0, 255)]`` (float, integer-valued)."""
    return ENCODE(x, scale, offset, lut)


def fire(potential: torch.Tensor, threshold: torch.Tensor, v0: torch.Tensor, code_max: int,
         step: torch.Tensor) -> torch.Tensor:
    """Output codes ``clip(floor((potential + v0) / threshold), 0, code_max)`` (no gradient)."""
    return FIRE(potential, threshold, v0, code_max, step)


def quant_relu(z: torch.Tensor, step: torch.Tensor, code_max: int) -> torch.Tensor:
    """``step · clip(floor(z / step + 1/2), 0, code_max)`` with the LSQ straight-through gradient."""
    return QUANT_RELU(z, step, code_max)
