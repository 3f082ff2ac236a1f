"""The data sets: MNIST-1D (generated, data.load_mnist1d) and four image sets read from local files.

`load_dataset(name, data_dir, cache_dir)` gives (x, y, x_test, y_test): x float32, [N, 40] for MNIST-1D and
[N, C, H, W] scaled to [-1, 1] for images; y int64 labels 0..9. mnist, fashion_mnist and cifar10 are read from
their original files under data_dir (layout and sources: docs/datasets.md) and never downloaded; `check_files`
names the missing ones in one line before any work starts. The workflow calls it while it parses its config,
so this module imports torch (and files.py, which imports torch) only where it builds tensors or reads a file.
"""
import codecs
import gzip
import math
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from pydiffusion.config import MNIST1D, ConfigError
from pydiffusion.data.labels import NUM_CLASSES

# name -> the shape of one sample ([C, H, W] for images); its names are config.CHOICES["dataset"] (a test checks)
SHAPES = {
    MNIST1D: (40,),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
DATASETS = tuple(SHAPES)
# name -> what it is, in a phrase (a model card's "data")
DESCRIPTIONS = {
    MNIST1D: "MNIST-1D (Greydanus & Kobak, 2024): 1-D signals of 40 samples in ten digit classes, generated offline "
             "by the mnist1d package",
    "digits": "scikit-learn's 8 x 8 handwritten digits (UCI), ten classes",
    "mnist": "MNIST: 28 x 28 handwritten digits, ten classes",
    "fashion_mnist": "Fashion-MNIST: 28 x 28 images of ten kinds of clothing",
    "cifar10": "CIFAR-10: 32 x 32 colour images of ten object classes",
}

# the original files of each data set read from data_dir/<name>/, and where to get them
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"{CIFAR_FOLDER}/data_batch_{i}" for i in range(1, 6)) + (f"{CIFAR_FOLDER}/test_batch",)
SOURCES = {
    "mnist": "download the four files (plain or .gz) from https://ossci-datasets.s3.amazonaws.com/mnist/ "
             "(a mirror of http://yann.lecun.com/exdb/mnist/) into it",
    "fashion_mnist": "download the four files (plain or .gz) from https://github.com/zalandoresearch/fashion-mnist "
                     "(folder data/fashion) into it",
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it there "
               f"(it holds {CIFAR_FOLDER}/)",
}

# digits: the test set is DIGITS_TEST_PER_CLASS images of each class (500 of the 1,797), drawn with this seed
DIGITS_TEST_PER_CLASS = 50
DIGITS_SPLIT_SEED = 0


class MissingDataError(ConfigError):
    """A data set's files are not where the config says: the message names them and where to get them."""


def default_data_dir() -> Path:
    return Path(os.environ.get("PYDIFFUSION_DATA", Path.home() / ".cache" / "pydiffusion" / "data"))


def data_shape(name: str) -> tuple:
    """The shape of one sample of data set `name`, without loading it."""
    _check_name(name)
    return SHAPES[name]


def is_image(name: str) -> bool:
    return len(data_shape(name)) == 3


def _check_name(name):
    if name not in SHAPES:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _folder(name, data_dir) -> Path:
    return Path(data_dir or default_data_dir()).expanduser() / name


def _idx_file(folder: Path, base: str):
    """folder/base, or folder/base.gz, or None."""
    return next((p for p in (folder / base, folder / f"{base}.gz") if p.is_file()), None)


def check_files(name: str, data_dir=None) -> Path:
    """The folder of data set `name` under data_dir (None: $PYDIFFUSION_DATA or ~/.cache/pydiffusion/data); raises
    MissingDataError naming every missing file, the folder to put it in and where to get it."""
    _check_name(name)
    folder = _folder(name, data_dir)
    if name in ("mnist", "fashion_mnist"):
        missing = [f"{base}[.gz]" for base in IDX_FILES if _idx_file(folder, base) is None]
    elif name == "cifar10":
        missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    else:
        missing = []
    if missing:
        raise MissingDataError(f"dataset {name!r} needs {', '.join(missing)} in {folder} (missing; data sets are never "
                               f"downloaded): {SOURCES[name]}, or set data_dir (default $PYDIFFUSION_DATA or "
                               f"~/.cache/pydiffusion/data) to the folder holding {name}/")
    return folder


IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST and Fashion-MNIST use


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `dims` dimensions (plain or gzip), checked against its header: the magic
    number (two zero bytes, the type code 0x08, the number of dimensions) and the size its dimensions imply."""
    from pydiffusion.files import UnreadableFileError

    fix = "replace it with the original file (docs/datasets.md)"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UnreadableFileError(f"IDX file {path} is not a readable gzip file ({type(e).__name__}); {fix}") from None
    header = 4 + 4 * dims
    if len(raw) < header or raw[:4] != bytes((0, 0, IDX_UBYTE, dims)):
        raise UnreadableFileError(f"IDX file {path} does not start with the magic number of a {dims}-dimensional IDX "
                                  f"file of unsigned bytes (00 00 08 {dims:02x}, got {raw[:4].hex(' ')}); {fix}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) != header + math.prod(shape):  # Python integers: a forged header cannot overflow int64
        raise UnreadableFileError(f"IDX file {path} holds {len(raw) - header} bytes of data, but its header says "
                                  f"{' x '.join(map(str, shape))}; {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _read_idx_split(folder: Path, images: str, labels: str, hw: tuple):
    from pydiffusion.files import UnreadableFileError

    x_path, y_path = _idx_file(folder, images), _idx_file(folder, labels)
    x, y = read_idx(x_path, 3), read_idx(y_path, 1)
    if x.shape[1:] != hw:
        raise UnreadableFileError(f"IDX file {x_path} holds images of {x.shape[1]} x {x.shape[2]} pixels, not "
                                  f"{hw[0]} x {hw[1]}; replace it with the original file (docs/datasets.md)")
    if len(x) != len(y) or (len(y) and y.max() >= NUM_CLASSES):
        raise UnreadableFileError(f"IDX file {y_path} holds {len(y)} labels (largest {y.max() if len(y) else None}) for "
                                  f"the {len(x)} images of {x_path}; it must hold one label in 0..9 per image")
    return x[:, None], y


# What a CIFAR-10 python batch pickles: numpy arrays (rebuilt by numpy's _reconstruct from ndarray and dtype) in a
# dict; a batch pickled by Python 3 with protocol 2 also encodes its bytes through _codecs.encode. numpy 1 writes
# numpy.core, numpy 2 numpy._core. Nothing else is imported: a pickle asking for any other name is refused.
_reconstruct = np.zeros(0).__reduce__()[0]
CIFAR_PICKLE_NAMES = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that imports only CIFAR_PICKLE_NAMES: a file that asks for anything else (os.system, eval, ...)
    is refused before the name is even imported, so nothing in it runs."""

    def find_class(self, module, name):
        if (module, name) not in CIFAR_PICKLE_NAMES:
            from pydiffusion.files import UnsafeFileError

            raise UnsafeFileError(f"{module}.{name}")
        return CIFAR_PICKLE_NAMES[(module, name)]


def read_cifar_batch(path: Path):
    """(images uint8 [N, 3, 32, 32], labels uint8 [N]) of one CIFAR-10 python batch: a pickled dict with b'data'
    (uint8 [N, 3072], each row the red, green and blue 32 x 32 planes) and b'labels' (a list of N ints)."""
    from pydiffusion.files import UnreadableFileError, UnsafeFileError

    fix = "replace it with the original file (docs/datasets.md)"
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
    except UnsafeFileError as e:
        raise UnsafeFileError(f"CIFAR-10 batch {path} asks to import {e}, which a CIFAR-10 batch never holds (refused: "
                              f"loading it could run code); {fix}") from None
    except Exception as e:  # pickle raises UnpicklingError, EOFError, ValueError, ... by the kind of damage
        raise UnreadableFileError(f"CIFAR-10 batch {path} is truncated or not a pickle ({type(e).__name__}); {fix}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
            and isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(v, int) and 0 <= v < NUM_CLASSES for v in labels)):
        raise UnreadableFileError(f"CIFAR-10 batch {path} is not a dict of b'data' (uint8 [N, 3072]) and b'labels' "
                                  f"(N labels in 0..9); {fix}")
    return data.reshape(-1, 3, 32, 32), np.array(labels, dtype=np.uint8)


def _read_cifar10(folder: Path):
    train = [read_cifar_batch(folder / f) for f in CIFAR_FILES[:-1]]
    x_test, y_test = read_cifar_batch(folder / CIFAR_FILES[-1])
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test


def digits_split(y):
    """(train, test) sorted indices of the digits: DIGITS_TEST_PER_CLASS test images of each class, the first of one
    permutation of its indices (a generator seeded with DIGITS_SPLIT_SEED, classes in order); the rest train."""
    import torch

    gen = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    test = []
    for c in range(NUM_CLASSES):
        members = (y == c).nonzero().flatten()
        test.append(members[torch.randperm(len(members), generator=gen)[:DIGITS_TEST_PER_CLASS]])
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return (~is_test).nonzero().flatten(), is_test.nonzero().flatten()


def _load_digits():
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: 1,797 images of 8 x 8 pixels, values 0..16
    x = torch.from_numpy(digits.images).float().div(8).sub(1).unsqueeze(1)
    y = torch.from_numpy(digits.target).long()
    train, test = digits_split(y)
    return x[train], y[train], x[test], y[test]


def held_out_if_present(name: str, data_dir=None, cache_dir=None):
    """(x_test, y_test) of data set `name`, or None where its files are not here (a figure then goes without real
    samples to compare with)."""
    try:
        check_files(name, data_dir)
    except MissingDataError:
        return None
    return load_dataset(name, data_dir, cache_dir)[2:]


def load_dataset(name: str, data_dir=None, cache_dir=None):
    """(x, y, x_test, y_test) of data set `name`: x float32 ([N, 40], or images [N, C, H, W] in [-1, 1]), y int64.
    MNIST-1D is generated and cached in cache_dir (data.load_mnist1d); the image sets are read from data_dir."""
    import torch

    from pydiffusion.data.mnist1d import load_mnist1d

    folder = check_files(name, data_dir)
    if name == MNIST1D:
        return load_mnist1d(cache_dir)
    if name == "digits":
        return _load_digits()
    if name == "cifar10":
        splits = _read_cifar10(folder)
    else:
        splits = (*_read_idx_split(folder, IDX_FILES[0], IDX_FILES[1], (28, 28)),
                  *_read_idx_split(folder, IDX_FILES[2], IDX_FILES[3], (28, 28)))
    x, y, x_test, y_test = (torch.from_numpy(np.array(a)) for a in splits)  # a writable copy
    return x.float().div(127.5).sub(1), y.long(), x_test.float().div(127.5).sub(1), y_test.long()
