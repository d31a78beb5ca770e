"""Small convolutional networks for the image datasets, and their reproducible training.

* :class:`ImageCNN` — ``conv(c1, 3x3, pad 1) -> ReLU -> maxpool 2 -> conv(c2, 3x3, pad 1) -> ReLU ->
  maxpool 2 -> flatten -> linear``, with the input normalisation ``x / 255`` inside ``forward`` (as users
  write it): the model takes raw bytes as (N, C, H, W) floats, the same array the converter calibrates on
  and the hardware is fed. Written as a plain module (not ``nn.Sequential``) so conversion goes through
  torch.fx tracing of ``forward``.
* The digits CNN (1x8x8 -> 16 -> 32 channels -> 10; 6,000 weights, small enough for an iCE40): a trained
  copy ships with the package (``spikeforge/data/digits_cnn.pt``, a state dict) so the demo's conv path
  and the tests see the same weights everywhere; :func:`train_digits_cnn` reproduces it.
* :func:`fit` trains any of them: Adam, a cosine learning-rate schedule, a fixed seed, torch on the CPU.
  The benchmarks train the Fashion-MNIST and MNIST-5k CNNs with it (nothing is downloaded).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.datasets import load
from spikeforge.ir.errors import InputError

__all__ = ["ImageCNN", "digits_cnn", "fit", "train_digits_cnn", "load_digits_cnn", "float_accuracy",
           "DIGITS_WEIGHTS", "DIGITS_RECIPE"]

DIGITS_WEIGHTS = Path(__file__).parent / "data" / "digits_cnn.pt"


class ImageCNN(nn.Module):
    """Two 3x3 conv blocks (each conv, ReLU, 2x2 max pool) and a linear classifier.

    Parameters
    ----------
    input_shape : (C, H, W)
        Of the raw images (H and W divisible by 4).
    channels : (c1, c2)
        Output channels of the two convolutions.
    classes : int
    hidden : int or None
        Width of a hidden dense layer (ReLU) between the convolutions and the classifier; none when ``None``.
    """

    def __init__(self, input_shape=(1, 28, 28), channels=(16, 32), classes: int = 10, hidden: int | None = None):
        super().__init__()
        depth, height, width = input_shape
        if height % 4 or width % 4:
            raise InputError(f"input_shape {tuple(input_shape)}: height and width must be divisible by 4 "
                             f"(two 2x2 max pools)")
        self.input_shape = tuple(input_shape)
        self.conv1 = nn.Conv2d(depth, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        features = channels[1] * (height // 4) * (width // 4)
        self.hidden = nn.Linear(features, hidden) if hidden else None
        self.fc = nn.Linear(hidden or features, classes)

    def forward(self, x):
        x = x / 255.0
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        if self.hidden is not None:
            x = F.relu(self.hidden(x))
        return self.fc(x)


def digits_cnn() -> ImageCNN:
    """The digits CNN's architecture, untrained: 1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> 10."""
    return ImageCNN((1, 8, 8), (16, 32), 10)


def fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int = 0, lr: float = 2e-3,
        weight_decay: float = 0.0, batch: int = 64, threads: int | None = 2, progress=None) -> list:
    """Train ``model`` in place on raw (N, C, H, W) byte images; return the seconds each epoch took.

    Adam with a per-step cosine schedule from ``lr`` to 0 and cross-entropy loss; the batch order comes
    from a generator seeded with ``seed`` and the initial weights are drawn after ``torch.manual_seed(seed)``
    by the caller (see :func:`train_digits_cnn`). ``threads`` pins torch's CPU threads while training
    (``None`` leaves them): the same seed and thread count give the same weights. ``progress(epoch,
    epochs)`` is called after each epoch. The model is left in eval mode.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        x = torch.tensor(np.asarray(images), dtype=torch.float32)
        y = torch.tensor(np.asarray(labels), dtype=torch.int64)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * ((len(x) + batch - 1) // batch)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for begin in range(0, len(x), batch):
                rows = order[begin:begin + batch]
                optimizer.zero_grad()
                F.cross_entropy(model(x[rows]), y[rows]).backward()
                optimizer.step()
                schedule.step()
            seconds.append(time.perf_counter() - start)
            if progress is not None:
                progress(epoch + 1, epochs)
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    return seconds


#: How the shipped digits CNN was trained (``train_digits_cnn()`` with these defaults reproduces it).
DIGITS_RECIPE = {"seed": 0, "epochs": 40, "lr": 3e-3, "weight_decay": 0.0, "batch": 32}


def train_digits_cnn(seed: int = DIGITS_RECIPE["seed"], epochs: int = DIGITS_RECIPE["epochs"], progress=None,
                     threads: int | None = 2) -> ImageCNN:
    """Train the digits CNN on the digits training split (a few seconds on two cores)."""
    train = load("digits", "train")
    torch.manual_seed(seed)
    model = digits_cnn()
    fit(model, train.images, train.labels, epochs=epochs, seed=seed, lr=DIGITS_RECIPE["lr"],
        weight_decay=DIGITS_RECIPE["weight_decay"], batch=DIGITS_RECIPE["batch"], threads=threads, progress=progress)
    return model


def load_digits_cnn() -> ImageCNN:
    """The shipped, trained digits CNN (eval mode)."""
    model = digits_cnn()
    model.load_state_dict(torch.load(DIGITS_WEIGHTS, weights_only=True))
    return model.eval()


def float_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    """Test accuracy of a model that takes raw (N, C, H, W) byte images."""
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(images), batch):
            scores = model(torch.tensor(np.asarray(images[begin:begin + batch]), dtype=torch.float32))
            correct += int((scores.argmax(1).numpy() == labels[begin:begin + batch]).sum())
    return correct / len(images)
