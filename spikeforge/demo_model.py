"""The demo models: a 64-64-32-10 MLP for scikit-learn's 8x8 digits, trained with a fixed seed, and
the digits CNN of :mod:`spikeforge.cnn_models` (``spikeforge demo --cnn``).

A trained copy of each ships with the package (``spikeforge/data/digits_mlp.pt``, ``digits_cnn.pt``,
state dicts) so the demo and the tests see the same weights on every machine; :func:`train_digits_mlp`
and :func:`~spikeforge.cnn_models.train_digits_cnn` reproduce them. :data:`DEMO_MODELS` says, per
model, how the demo loads, trains, exports, scores and converts it (:class:`DemoModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge import cnn_models
from spikeforge.datasets import load as load_dataset

__all__ = ["DigitsMLP", "train_digits_mlp", "load_digits_mlp", "float_accuracy", "WEIGHTS", "INPUT_SCALE",
           "DemoModel", "DEMO_MODELS"]

WEIGHTS = Path(__file__).parent / "data" / "digits_mlp.pt"
#: The model sees ``raw / 255``.
INPUT_SCALE = 255.0


class DigitsMLP(nn.Module):
    """64 -> 64 -> 32 -> 10, ReLU, dropout while training. Written as a plain module (not
    ``nn.Sequential``) so conversion goes through torch.fx tracing of ``forward``."""

    def __init__(self, hidden=(64, 32), dropout: float = 0.2):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def train_digits_mlp(seed: int = 0, epochs: int = 200, progress=None) -> DigitsMLP:
    """Train the demo model on the digits training split (about 2 s on a laptop core)."""
    train = load_dataset("digits", "train")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitsMLP()
    x = torch.tensor(train.normalized())
    y = torch.tensor(train.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        schedule.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    return model.eval()


def load_digits_mlp() -> DigitsMLP:
    """The shipped, trained demo model (eval mode)."""
    model = DigitsMLP()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def float_accuracy(model: nn.Module, dataset) -> float:
    with torch.no_grad():
        scores = model(torch.tensor(dataset.normalized()))
    return float(np.mean(scores.argmax(1).numpy() == dataset.labels))


def _cnn_float_accuracy(model: nn.Module, dataset) -> float:
    return cnn_models.float_accuracy(model, dataset.images, dataset.labels)


@dataclass(frozen=True)
class DemoModel:
    """One model the demo can run: how it is loaded, trained, exported, scored and converted.

    Attributes
    ----------
    key, title : str
        ``mlp`` / ``cnn``, and what the demo prints (``64-64-32-10 MLP``).
    load : callable () -> nn.Module
        The shipped, trained model (eval mode).
    train : callable (progress) -> nn.Module
        Trains it again from its fixed seed; ``progress(done, total)`` after each epoch.
    epochs : int
        Of :attr:`train` (the progress bar's length).
    example_shape : tuple
        One sample's shape as the model takes it (the export's example input, batch of 2).
    input_scale : float or None
        The convert step's ``input_scale``: None when the dataset's ``/255`` applies, 1 for a model that
        divides by 255 in ``forward`` (fed raw bytes).
    timesteps : int
        The demo's default T.
    float_accuracy : callable (model, dataset) -> float
    """

    key: str
    title: str
    load: Callable
    train: Callable
    epochs: int
    example_shape: tuple
    input_scale: float | None
    timesteps: int
    float_accuracy: Callable


DEMO_MODELS = {
    "mlp": DemoModel("mlp", "64-64-32-10 MLP", load_digits_mlp, lambda progress: train_digits_mlp(progress=progress),
                     200, (8, 8), None, 8, float_accuracy),
    "cnn": DemoModel("cnn", "digits CNN (1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> 10)",
                     cnn_models.load_digits_cnn, lambda progress: cnn_models.train_digits_cnn(progress=progress),
                     cnn_models.DIGITS_RECIPE["epochs"], (1, 8, 8), 1.0, 4, _cnn_float_accuracy),
}
