"""Shared fixtures: an isolated data cache for the session, a tiny training config."""
import os

import pytest
import torch

TINY = {"model": "unet", "channels": 16, "channel_mult": [1, 2, 2], "emb_dim": 32, "epochs": 3, "batch_size": 64,
        "threads": 1, "n_samples": 10, "wandb_mode": "disabled"}


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """MNIST-1D generated once per session into a fresh folder (about 2 s), never the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["PYDIFFUSION_CACHE"] = str(path)
    from pydiffusion.data.mnist1d import load_mnist1d

    load_mnist1d(path)
    return path


@pytest.fixture
def tiny_cfg():
    return dict(TINY)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield
