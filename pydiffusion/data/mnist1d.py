"""MNIST-1D, generated offline and cached. The prime-inverse patterns live in pydiffusion/data/patterns.py."""
import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from pydiffusion.files import UnreadableFileError, WriteError, load_torch, save_torch

SIGNAL_LENGTH = 40
_SPLITS = ("x", "y", "x_test", "y_test")


def default_cache_dir() -> Path:
    return Path(os.environ.get("PYDIFFUSION_CACHE", Path.home() / ".cache" / "pydiffusion"))


def _generation_args():
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    return args, {k: v for k, v in vars(args).items() if k != "url"}


def load_mnist1d(cache_dir=None):
    """(x, y, x_test, y_test): float32 [4000, 40], int64 [4000], float32 [1000, 40], int64 [1000].

    Generated with mnist1d.data.make_dataset (never downloaded) and cached in a file keyed by
    the generation arguments; a damaged cache file (truncated, foreign, holding code) is never
    unpickled but generated again; a cache folder that cannot be written is a warning. mnist1d reseeds the
    global numpy and random RNGs; their states are restored so the caller's randomness is untouched.
    """
    args, key_args = _generation_args()
    key = hashlib.sha256(json.dumps(key_args, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / f"mnist1d-{key}.pt"
    d = None
    if path.exists():
        try:
            d = load_torch(path, "data cache", "generating it again")
            if not isinstance(d, dict) or not all(isinstance(d.get(k), torch.Tensor) for k in _SPLITS):
                raise UnreadableFileError(f"data cache {path} is not a pydiffusion MNIST-1D cache; generating it again")
        except UnreadableFileError as e:
            warnings.warn(str(e), stacklevel=2)
            d = None
    if d is None:
        import mnist1d.data

        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = mnist1d.data.make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        d = {
            "x": torch.from_numpy(raw["x"]).float(),
            "y": torch.from_numpy(raw["y"]).long(),
            "x_test": torch.from_numpy(raw["x_test"]).float(),
            "y_test": torch.from_numpy(raw["y_test"]).long(),
            "args": key_args,
        }
        try:
            save_torch(d, path)
        except WriteError as e:  # a cache is only a cache: this process has the data
            warnings.warn(f"MNIST-1D is not cached ({e}); set data_cache or PYDIFFUSION_CACHE to a writable folder "
                          f"to keep it", stacklevel=2)
    return tuple(d[k] for k in _SPLITS)
