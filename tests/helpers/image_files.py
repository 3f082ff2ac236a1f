"""Image sets written small in their original file formats."""
import gzip
import struct

import numpy as np

from pydiffusion.data.datasets import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 00 00 08 <dims>, the dimensions as big-endian int32, the data."""
    return bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=6, n_test=4, gz=False, seed=0):
    """The four IDX files of a tiny MNIST-like set; returns (x [N, 1, 28, 28], y, x_test, y_test) as uint8 arrays."""
    rng = np.random.default_rng(seed)
    x, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (n_train, n_test))
    x[0, 0, :2] = (0, 255)  # both ends of the scale
    y, y_test = (rng.integers(0, 10, n, dtype=np.uint8) for n in (n_train, n_test))
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_FILES, (x, y, x_test, y_test)):
        raw = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return x[:, None], y, x_test[:, None], y_test
