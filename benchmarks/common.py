"""What every benchmark shares: the run context, the benchmark networks, timing, the machine."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import load_digits_mlp

__all__ = ["Context", "BenchNetwork", "NETWORKS", "float_model", "float_accuracy", "dataset", "best_time", "machine",
           "repo_root", "log"]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def log(message: str):
    print(f"[bench] {message}", flush=True)


@dataclass
class Context:
    """One benchmark run.

    Attributes
    ----------
    quick : bool
        Small subsets and short sweeps (a smoke test, < 1 minute for the whole run).
    out_dir : Path
        Where results, plots, trained models and generated designs go (``build/bench``).
    plots : Path
        ``out_dir / "plots"``; the Markdown refers to plots relative to the RESULTS.md beside them.
    seed : int
        Every random choice (training, rate-coded spikes) derives from it.
    """

    quick: bool = False
    out_dir: Path = Path("build/bench")
    seed: int = 0
    plots: Path = field(init=False)
    models: Path = field(init=False)
    #: Benchmark networks to measure (keys of NETWORKS); sections skip the others.
    networks: tuple = ("digits", "fmnist", "fmnist-deep")
    #: Results of the sections already in results.json (name -> {"result": ...}), set by the runner.
    previous: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.plots = self.out_dir / "plots"
        self.models = self.out_dir / "models"
        for folder in (self.out_dir, self.plots, self.models):
            folder.mkdir(parents=True, exist_ok=True)

    def test_samples(self, name: str) -> int | None:
        """How many test samples a run uses (``None`` = the whole split)."""
        if self.quick:
            return 300
        return None


@dataclass(frozen=True)
class BenchNetwork:
    """A float network the benchmarks convert: where it comes from and how it is trained."""

    key: str               # short name used in tables and file names
    title: str
    dataset: str           # spikeforge.datasets name
    hidden: tuple          # hidden layer widths
    epochs: int = 0        # torch training epochs (0: the shipped digits model)
    board: str | None = None

    @property
    def sizes(self) -> str:
        in_features = 64 if self.dataset == "digits" else 784
        return "-".join(str(s) for s in (in_features, *self.hidden, 10))


NETWORKS = {
    "digits": BenchNetwork("digits", "digits MLP (demo model)", "digits", (64, 32), board="icebreaker"),
    "fmnist": BenchNetwork("fmnist", "Fashion-MNIST MLP", "fashion-mnist", (128,), epochs=12, board="ulx3s-85f"),
    "fmnist-deep": BenchNetwork("fmnist-deep", "deep Fashion-MNIST MLP", "fashion-mnist", (256, 256, 256),
                                epochs=12),
}


_DATASETS = {}


def dataset(name: str, split: str):
    """A cached :func:`spikeforge.datasets.load`."""
    if (name, split) not in _DATASETS:
        _DATASETS[name, split] = load_dataset(name, split)
    return _DATASETS[name, split]


def _mlp(in_features: int, hidden: tuple, classes: int = 10):
    layers = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, classes))
    return nn.Sequential(*layers)


def float_model(ctx: Context, spec: BenchNetwork):
    """The trained float model of ``spec`` (eval mode), cached under ``ctx.models``.

    The digits network is the shipped demo model. The Fashion-MNIST MLPs are trained here with a
    fixed seed: AdamW (lr 2e-3, weight decay 1e-4), batch 128, cosine schedule, inputs ``x/255``.
    A quick run trains one epoch on 10,000 samples.
    """
    if spec.epochs == 0:
        return load_digits_mlp()
    train = dataset(spec.dataset, "train")
    epochs, count = (1, 10_000) if ctx.quick else (spec.epochs, len(train))
    recipe = {"sizes": spec.sizes, "epochs": epochs, "count": count, "seed": ctx.seed, "lr": 2e-3,
              "weight_decay": 1e-4, "batch": 128, "torch": torch.__version__.split("+")[0]}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    path = ctx.models / f"{spec.key}-{digest}.pt"
    model = _mlp(int(np.prod(train.input_shape)), spec.hidden)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log(f"training {spec.key} ({spec.sizes}, {epochs} epochs on {count} samples)")
    start = time.perf_counter()
    torch.manual_seed(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    x = torch.tensor(train.normalized()[:count])
    y = torch.tensor(train.labels[:count])
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    steps = epochs * ((len(x) + 127) // 128)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), 128):
            batch = order[begin:begin + 128]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    torch.save(model.state_dict(), path)
    log(f"trained {spec.key} in {time.perf_counter() - start:.1f} s -> {path}")
    return model


def float_accuracy(model, data) -> float:
    with torch.no_grad():
        scores = model(torch.tensor(data.normalized()))
    return float(np.mean(scores.argmax(1).numpy() == data.labels))


def best_time(function, repeat: int = 3, minimum: float = 0.2) -> float:
    """Best wall time of ``function()`` over ``repeat`` rounds (each at least ``minimum`` s of calls)."""
    best = float("inf")
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            function()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= minimum:
                break
        best = min(best, elapsed / calls)
    return best


def machine() -> dict:
    """The machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}
