"""Shared fixtures (an isolated data cache for the session, a tiny training config) and the tiers: every test
sits in tests/unit, tests/integration or tests/system and carries that directory's marker."""
import os
from pathlib import Path

import pytest
import torch
from helpers.configs import TINY

TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(tests).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """MNIST-1D generated once per session into a fresh folder (about 2 s), never the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["PYDIFFUSION_CACHE"] = str(path)
    from pydiffusion.data.mnist1d import load_mnist1d

    load_mnist1d(path)
    return path


@pytest.fixture(scope="module")
def digits():
    """sklearn's digits as [N, 1, 8, 8] in [-1, 1], split 1297 / 500 by a fixed permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8 - 1
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1297]], y[perm[:1297]], x[perm[1297:]], y[perm[1297:]]


@pytest.fixture
def tiny_cfg():
    return dict(TINY)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield
