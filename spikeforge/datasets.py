"""Datasets available offline, as raw uint8 samples (what the hardware is fed).

* ``"digits"`` — scikit-learn's bundled 8x8 digits (1797 samples, pixel values 0..16 rescaled to
  bytes 0..255). Split 70/30 with a fixed seed: 1257 train, 540 test samples.
* ``"fashion-mnist"`` — from Debian's package ``dataset-fashion-mnist`` (``apt-get install
  dataset-fashion-mnist``), read by the IDX loader.
* any directory holding MNIST-format IDX files (``train-images-idx3-ubyte[.gz]`` and friends):
  MNIST, EMNIST, Kuzushiji-MNIST... bring your own copy; nothing is ever downloaded.

Every dataset carries the input normalisation its models are trained with (``x / 255``).
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikeforge.ir.errors import InputError

__all__ = ["Dataset", "DatasetError", "load", "read_idx", "NAMES", "FASHION_MNIST_DIRS"]

NAMES = ("digits", "fashion-mnist")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "/usr/share/fashion-mnist")
FASHION_MNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot"]


class DatasetError(InputError):
    """A dataset name or directory that cannot be loaded."""


@dataclass
class Dataset:
    """One split of a dataset.

    Attributes
    ----------
    name : str
    split : ``"train"`` or ``"test"``
    samples : uint8 array (N, *input_shape)
        Raw bytes.
    labels : int64 array (N,)
    classes : list of str
    input_scale : float
        The models' input normalisation is ``x = raw / input_scale``.
    """

    name: str
    split: str
    samples: np.ndarray
    labels: np.ndarray
    classes: list
    input_scale: float = 255.0

    @property
    def input_shape(self) -> tuple:
        return tuple(self.samples.shape[1:])

    def __len__(self) -> int:
        return len(self.samples)

    def head(self, count: int | None) -> "Dataset":
        """The first ``count`` samples (all when ``None``)."""
        if count is None:
            return self
        if count < 1:
            raise DatasetError(f"sample count {count} must be >= 1")
        return Dataset(self.name, self.split, self.samples[:count], self.labels[:count], self.classes,
                       self.input_scale)

    def normalized(self) -> np.ndarray:
        """Float32 inputs as the models see them: ``raw / input_scale``."""
        return self.samples.astype(np.float32) / np.float32(self.input_scale)


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    raw = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    train_x, test_x, train_y, test_y = train_test_split(raw, bunch.target, test_size=0.3, random_state=0,
                                                        stratify=bunch.target)
    samples, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
    return Dataset("digits", split, samples, labels.astype(np.int64), [str(i) for i in range(10)])


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed), the MNIST file format."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(data) - offset != count * dtype.itemsize:
        raise DatasetError(f"{path}: header says {dims} ({count * dtype.itemsize} bytes of data), "
                           f"file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), f"{stem.replace('-idx', '.idx')}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: no {stem}[.gz] (an MNIST-format directory holds "
                       f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                       f"t10k-labels-idx1-ubyte, optionally gzipped)")


def _idx_directory(directory: Path, split: str, name: str, classes=None) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.dtype != np.uint8:
        raise DatasetError(f"{directory}: images are {images.dtype}, expected uint8 pixels")
    if len(images) != len(labels):
        raise DatasetError(f"{directory}: {len(images)} images but {len(labels)} labels")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    return Dataset(name, split, images, labels, classes)


def load(name: str, split: str = "test") -> Dataset:
    """Load a dataset split by name (``digits``, ``fashion-mnist``) or from an MNIST-format directory."""
    if split not in ("train", "test"):
        raise DatasetError(f"split {split!r} is not supported; supported: 'train', 'test'")
    if name == "digits":
        return _digits(split)
    if name == "fashion-mnist":
        for candidate in FASHION_MNIST_DIRS:
            if Path(candidate).is_dir():
                return _idx_directory(Path(candidate), split, name, FASHION_MNIST_CLASSES)
        raise DatasetError("fashion-mnist is not installed: run `apt-get install dataset-fashion-mnist` "
                           f"(looked in {', '.join(FASHION_MNIST_DIRS)}), or pass the directory holding its "
                           f"IDX files")
    path = Path(name)
    if path.is_dir():
        return _idx_directory(path, split, path.name)
    raise DatasetError(f"unknown dataset {name!r}; supported: {', '.join(NAMES)}, or a directory of "
                       f"MNIST-format IDX files")
