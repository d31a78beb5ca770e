"""``spikeforge.finetune``: quantisation-aware fine-tuning with dataset names resolved.

    result = spikeforge.finetune(model, "digits", timesteps=2, epochs=30)
    spikeforge.nn.save(result.model, "model_qat.pt2")      # then: spikeforge convert model_qat.pt2 ... -T 2
    net = spikeforge.convert(result.model, "digits", timesteps=2)   # the learned steps, nothing calibrated

A dataset name gives its training split (the first ``samples`` when given; a validation part is held
out of it) and its input scale: ``raw / 255`` unless the model classifies raw bytes better (it
normalises its input itself, like :class:`spikeforge.cnn_models.ImageCNN`); the float model and the
fine-tuned network are measured on its test split (``result.evaluation``). Arrays go straight to
:func:`spikeforge.converter.qat.finetune` (``data = (raw_samples, labels)``), which the model takes
as raw bytes unless ``normalization`` says otherwise.
"""

from __future__ import annotations

import numpy as np

from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.convert import float_model_outputs
from spikeforge.converter.qat import FinetuneResult, accuracy
from spikeforge.converter.qat import finetune as finetune_arrays
from spikeforge.datasets import load as load_dataset
from spikeforge.ir.errors import InputError

__all__ = ["finetune", "dataset_normalization"]


def dataset_normalization(model, dataset, input_shape=None, samples: int = 500) -> InputNormalization:
    """``raw / input_scale`` (the dataset's default), or raw bytes when the model classifies those better (it
    normalises its input itself)."""
    raw, labels = dataset.samples[:samples], dataset.labels[:samples]
    scaled = InputNormalization(scale=dataset.input_scale)
    outputs, _ = float_model_outputs(model, raw, normalization=scaled, input_shape=input_shape)
    as_bytes, _ = float_model_outputs(model, raw, normalization=InputNormalization(), input_shape=input_shape)
    if np.mean(as_bytes.argmax(1) == labels) > np.mean(outputs.argmax(1) == labels) + 0.3:
        return InputNormalization()
    return scaled


def finetune(model, data, *, timesteps: int, weight_bits=8, epochs: int = 5, samples: int | None = None,
             normalization: InputNormalization | None = None, input_shape=None, **options) -> FinetuneResult:
    """Fine-tune ``model`` so its T-timestep iLIF network reaches the float accuracy (see
    :func:`spikeforge.converter.qat.finetune` for ``options``: ``per_channel``, ``validation``, ``batch``,
    ``lr``, ``distill``, ``input_table``, ``select``, ``step_lr``, ``spike_penalty``, ``penalty_start``, ``shift``,
    ``flip``, ``seed``, ``threads``, ``progress``).

    ``data`` is a dataset name or MNIST-format directory, or ``(raw_samples, labels)``; ``samples``
    keeps only the first N training samples.
    """
    if samples is not None and not (isinstance(samples, (int, np.integer)) and samples >= 10):
        raise InputError(f"samples {samples!r} must be an integer >= 10")
    if isinstance(data, str):
        train = load_dataset(data, "train")          # raises DatasetError naming the accepted names
        test = load_dataset(data, "test")
        if normalization is None:
            normalization = dataset_normalization(model, train, input_shape)
        images, labels = train.samples[:samples], train.labels[:samples]
    else:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise InputError(f"data must be a dataset name or (raw_samples, labels), got {type(data).__name__}")
        images, labels = data
        images, labels = images[:samples], labels[:samples]
        test = None
    result = finetune_arrays(model, images, labels, timesteps=timesteps, weight_bits=weight_bits, epochs=epochs,
                             normalization=normalization, input_shape=input_shape, **options)
    if test is not None:
        normalization = normalization or InputNormalization()
        floats, _ = float_model_outputs(model, test.samples, normalization=normalization, input_shape=input_shape)
        inputs = normalization.apply(test.samples).reshape((len(test.samples),) + result.model.input_shape)
        result.evaluation[f"{test.name}/test"] = {
            "samples": len(test), "float": float(np.mean(floats.argmax(1) == test.labels)),
            "finetuned": accuracy(result.model, inputs.astype(np.float32), test.labels)}
    return result
