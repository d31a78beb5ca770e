"""spikeforge: trained PyTorch networks -> pipelined iLIF spiking accelerators for FPGAs.

The public Python API::

    import spikeforge
    net = spikeforge.convert(model, calibration_data, timesteps=8, weight_bits=8)
    net.save("build/net")
    net = spikeforge.load("build/net")
    result = net.run(samples)            # golden model: result.labels, result.scores
"""

__version__ = "0.1.0"

from spikeforge.ir.network import DenseLayer, Network, NetworkFormatError, load  # noqa: E402

__all__ = ["__version__", "DenseLayer", "Network", "NetworkFormatError", "load", "convert", "ConversionError",
           "InputNormalization", "ChanceLevelWarning", "finetune", "nn"]


def __getattr__(name):
    # The converter imports torch (slow): only load it when asked for.
    if name == "convert":          # dataset names resolved here; the converter itself takes arrays
        from spikeforge.conversion import convert
        return convert
    if name in ("InputNormalization", "ChanceLevelWarning"):     # the scale defaults to the data's (255 for images)
        from spikeforge import conversion
        return getattr(conversion, name)
    if name == "finetune":         # quantisation-aware fine-tuning, dataset names resolved (spikeforge.finetuning)
        from spikeforge.finetuning import finetune
        return finetune
    if name == "nn":               # QuantReLU and the fine-tuned network's modules (imports torch)
        import spikeforge.nn
        return spikeforge.nn
    if name == "ConversionError":
        from spikeforge.converter.torch_import import ConversionError
        return ConversionError
    raise AttributeError(f"module 'spikeforge' has no attribute {name!r}")
