import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from spikeforge.datasets import FASHION_MNIST_DIRS, DatasetError, load, read_idx


def _write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_roundtrip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, size=7).astype(np.uint8)
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    data = load(str(tmp_path), "test")
    np.testing.assert_array_equal(data.samples, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.input_shape == (5, 4) and len(data.head(3)) == 3


def test_bad_idx_and_names(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'; supported: digits, fashion-mnist"):
        load("cifar")
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte"):
        load(str(tmp_path), "train")
    with pytest.raises(DatasetError, match="split 'val' is not supported"):
        load("digits", "val")


def test_digits_split_is_fixed_and_bytes():
    test = load("digits", "test")
    train = load("digits", "train")
    assert (len(train), len(test)) == (1257, 540)
    assert test.samples.dtype == np.uint8 and test.samples.max() == 255 and test.input_shape == (8, 8)
    assert np.array_equal(load("digits", "test").labels, test.labels)


@pytest.mark.skipif(not any(Path(d).is_dir() for d in FASHION_MNIST_DIRS),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    test = load("fashion-mnist", "test")
    assert test.samples.shape == (10000, 28, 28) and test.classes[9] == "ankle boot"
