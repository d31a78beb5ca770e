"""The demo model: a 64-64-32-10 MLP for scikit-learn's 8x8 digits, trained with a fixed seed.

A trained copy ships with the package (``spikeforge/data/digits_mlp.pt``, a state dict) so the demo
and the tests see the same weights on every machine; :func:`train_digits_mlp` reproduces it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.datasets import load as load_dataset

__all__ = ["DigitsMLP", "train_digits_mlp", "load_digits_mlp", "float_accuracy", "WEIGHTS", "INPUT_SCALE"]

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
