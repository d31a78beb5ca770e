"""Shared data for the converter tests: a few hundred digits images as raw bytes, and a quick fit."""

import numpy as np
import pytest
import torch

from spikeforge.datasets import load


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared two-core machine: torch's intra-op threads only contend (7x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_images():
    """(raw uint8 (200, 8, 8), labels (200,)) from the digits training split."""
    train = load("digits", "train")
    return train.samples[:200], train.labels[:200]


def fit(model, raw, labels, steps=30, scale=255.0, seed=0):
    """A few Adam steps on (raw / scale) so the logits mean something; returns the model in eval mode."""
    torch.manual_seed(seed)
    x = torch.tensor(np.asarray(raw, dtype=np.float32) / scale)
    y = torch.tensor(labels, dtype=torch.int64)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def quick_fit():
    return fit
