"""``spikeforge.nn``: PyTorch modules for training networks that *are* integer iLIF networks.

    import spikeforge.nn
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64),
                                spikeforge.nn.QuantReLU(timesteps=2), torch.nn.Linear(64, 10))

* :class:`QuantReLU` — the neuron as an activation: ``step · clip(floor(z / step + 1/2), 0, 2^T - 1)``, a
  learnable step (per layer or per channel), straight-through (LSQ) gradients. ``spikeforge convert``
  takes its step as the layer's activation step instead of calibrating it.
* :class:`QuantizedNetwork` — what :func:`spikeforge.finetune` returns: the model rebuilt with every ReLU
  a QuantReLU, its weights quantised as the converter quantises them (:func:`integer_weights`) and its
  input encoded as the hardware encodes it; it computes the integer network exactly.
* :func:`encode`, :func:`fire`, :func:`quant_relu` — the ``spikeforge::`` PyTorch operators they are
  made of (importing this module registers them, which loading a fine-tuned ``.pt2`` needs).

The maths lives in :mod:`spikeforge.converter.qat` and :mod:`spikeforge.converter.quant_ops`.
"""

from spikeforge.converter.qat import IntegerWeights, QuantizedNetwork, QuantReLU, integer_weights, save
from spikeforge.converter.quant_ops import encode, fire, quant_relu

__all__ = ["QuantReLU", "QuantizedNetwork", "IntegerWeights", "integer_weights", "encode", "fire", "quant_relu",
           "save"]
