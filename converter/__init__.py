"""PyTorch model -> integer iLIF network (calibration, quantisation, the on-disk format)."""

from spikeforge.ir.network import (AMPLIFICATION, FORMAT, MAX_TIMESTEPS, VERSION, DenseLayer, Network,
                      NetworkFormatError, load)

__all__ = ["AMPLIFICATION", "FORMAT", "MAX_TIMESTEPS", "VERSION", "DenseLayer", "Network",
           "NetworkFormatError", "load"]
