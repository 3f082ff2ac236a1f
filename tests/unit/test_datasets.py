"""The data sets: each original file format written small into tmp_path and read back exactly, the digits split,
the one-line errors for missing, corrupt and unsafe files, and the config keys."""
import os
import pickle

import numpy as np
import pytest
import torch
from helpers.image_files import idx_bytes, write_idx_set

from pydiffusion.config import CHOICES, DEFAULTS, ConfigError, validate
from pydiffusion.data.datasets import (
    CIFAR_FILES,
    DATASETS,
    DIGITS_TEST_PER_CLASS,
    IDX_FILES,
    SHAPES,
    MissingDataError,
    check_files,
    data_shape,
    is_image,
    load_dataset,
)
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.files import UnreadableFileError, UnsafeFileError


def write_cifar_set(folder, n_per_batch=3, protocol=2, seed=0):
    """The six python batches of a tiny CIFAR-10 set, pickled with the real structure (a dict of bytes keys, the
    images uint8 [N, 3072] and the labels a list of ints); returns (x, y, x_test, y_test) as uint8 arrays."""
    rng = np.random.default_rng(seed)
    batches = []
    for i, name in enumerate(CIFAR_FILES):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"image_{i}_{j}.png".encode() for j in range(n_per_batch)]}
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches.append((data.reshape(-1, 3, 32, 32), np.array(labels, dtype=np.uint8)))
    train = batches[:-1]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), *batches[-1])


def expected_images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / np.float32(127.5) - np.float32(1))


def assert_read_back(loaded, written, shape):
    x, y, x_test, y_test = loaded
    for got, want in ((x, written[0]), (x_test, written[2])):
        assert got.dtype == torch.float32 and got.shape == (len(want), *shape)
        assert torch.equal(got, expected_images(want))
        assert got.min() >= -1 and got.max() <= 1
    for got, want in ((y, written[1]), (y_test, written[3])):
        assert got.dtype == torch.int64 and torch.equal(got, torch.from_numpy(want.astype(np.int64)))


def test_names_and_shapes_without_loading():
    assert DATASETS == CHOICES["dataset"] and DEFAULTS["dataset"] == "mnist1d"
    assert [data_shape(n) for n in DATASETS] == [(40,), (1, 8, 8), (1, 28, 28), (1, 28, 28), (3, 32, 32)]
    assert [is_image(n) for n in DATASETS] == [False, True, True, True, True]
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'; choose one of mnist1d, digits, mnist"):
        data_shape("svhn")


def test_mnist1d_is_load_mnist1d(data_cache):
    loaded, direct = load_dataset("mnist1d", cache_dir=data_cache), load_mnist1d(data_cache)
    assert all(torch.equal(a, b) for a, b in zip(loaded, direct))
    assert loaded[0].shape[1:] == SHAPES["mnist1d"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back_exactly(tmp_path, name, gz):
    written = write_idx_set(tmp_path / name, gz=gz)
    loaded = load_dataset(name, tmp_path)
    assert_read_back(loaded, written, (1, 28, 28))
    assert loaded[0][0, 0, 0, 0] == -1 and loaded[0][0, 0, 0, 1] == 1


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_read_back_exactly(tmp_path, protocol):
    written = write_cifar_set(tmp_path / "cifar10", protocol=protocol)
    loaded = load_dataset("cifar10", tmp_path)
    assert_read_back(loaded, written, (3, 32, 32))
    assert len(loaded[0]) == 5 * 3 and len(loaded[2]) == 3
    # channel planes: the first 1024 bytes of a row are the red 32 x 32 image, row by row
    row = pickle.loads((tmp_path / "cifar10" / CIFAR_FILES[0]).read_bytes())[b"data"][0]
    assert torch.equal(loaded[0][0, 0, 0, :], expected_images(row[:32]))
    assert torch.equal(loaded[0][0, 2, 31, :], expected_images(row[-32:]))


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    write_cifar_set(tmp_path / "cifar10")
    marker = tmp_path / "pwned"

    class RunsCommand:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "cifar10" / CIFAR_FILES[2]).write_bytes(pickle.dumps({b"data": RunsCommand(), b"labels": []}, protocol=2))
    with pytest.raises(UnsafeFileError) as e:
        load_dataset("cifar10", tmp_path)
    message = str(e.value)
    assert "\n" not in message and CIFAR_FILES[2] in message and f"{os.system.__module__}.system" in message
    assert "refused" in message
    assert not marker.exists()


def test_damaged_cifar_batches_are_named(tmp_path):
    write_cifar_set(tmp_path / "cifar10")
    batch = tmp_path / "cifar10" / CIFAR_FILES[0]
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(UnreadableFileError, match=f"CIFAR-10 batch {batch} is truncated or not a pickle"):
        load_dataset("cifar10", tmp_path)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}))
    with pytest.raises(UnreadableFileError, match=r"is not a dict of b'data' \(uint8 \[N, 3072\]\)"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_idx_files_are_named(tmp_path):
    write_idx_set(tmp_path / "mnist")
    images = tmp_path / "mnist" / IDX_FILES[0]
    raw = images.read_bytes()
    images.write_bytes(b"\x1f\x8b" + raw[2:])  # not IDX: a foreign magic number
    with pytest.raises(UnreadableFileError, match=r"does not start with the magic number .* \(00 00 08 03, got 1f 8b 08 03\)"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(raw[:-5])
    with pytest.raises(UnreadableFileError, match=f"IDX file {images} holds {6 * 784 - 5} bytes of data, but its header "
                                                  "says 6 x 28 x 28"):
        load_dataset("mnist", tmp_path)
    images.unlink()
    (tmp_path / "mnist" / (IDX_FILES[0] + ".gz")).write_bytes(raw)  # plain bytes under a .gz name
    with pytest.raises(UnreadableFileError, match="is not a readable gzip file"):
        load_dataset("mnist", tmp_path)
    write_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / IDX_FILES[1]).write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    with pytest.raises(UnreadableFileError, match="holds 5 labels .* for the 6 images"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name,files", [("mnist", IDX_FILES), ("fashion_mnist", IDX_FILES), ("cifar10", CIFAR_FILES)])
def test_missing_files_are_one_line_naming_them_and_the_folder(tmp_path, name, files):
    with pytest.raises(MissingDataError) as e:
        load_dataset(name, tmp_path / "nowhere")
    message = str(e.value)
    assert isinstance(e.value, ConfigError) and "\n" not in message
    assert all(f in message for f in files) and f"in {tmp_path / 'nowhere' / name} " in message
    assert "never downloaded" in message and "https://" in message


def test_missing_files_lists_only_the_missing_ones(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=True)
    (tmp_path / "mnist" / (IDX_FILES[3] + ".gz")).unlink()
    with pytest.raises(MissingDataError, match=f"needs {IDX_FILES[3]}\\[.gz\\] in {tmp_path / 'mnist'} "):
        check_files("mnist", tmp_path)


def test_data_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "fashion_mnist")
    monkeypatch.setenv("PYDIFFUSION_DATA", str(tmp_path))
    assert check_files("fashion_mnist") == tmp_path / "fashion_mnist"
    assert len(load_dataset("fashion_mnist")[0]) == 6


def test_digits_offline_split_is_stratified_and_fixed():
    x, y, x_test, y_test = load_dataset("digits")
    assert x.dtype == x_test.dtype == torch.float32 and y.dtype == y_test.dtype == torch.int64
    assert x.shape == (1297, 1, 8, 8) and x_test.shape == (500, 1, 8, 8)
    assert torch.equal(torch.bincount(y_test, minlength=10), torch.full((10,), DIGITS_TEST_PER_CLASS))
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert torch.equal(torch.bincount(torch.cat([y, y_test]), minlength=10), torch.from_numpy(np.bincount(digits.target)))
    # the two splits are the bundled images, none twice, scaled 0..16 -> -1..1
    every = torch.cat([x, x_test]).flatten(1)
    assert torch.equal(every.unique(dim=0), ((torch.from_numpy(digits.data).float() / 8) - 1).unique(dim=0))
    assert x.min() == -1 and x.max() == 1
    again = load_dataset("digits")
    assert all(torch.equal(a, b) for a, b in zip((x, y, x_test, y_test), again))


def test_config_keys_dataset_and_data_dir():
    cfg = validate({})
    assert cfg["dataset"] == "mnist1d" and cfg["data_dir"] is None
    assert validate({"dataset": "cifar10", "data_dir": "/data"})["data_dir"] == "/data"
    with pytest.raises(ConfigError, match="config key 'dataset' is 'svhn'; choose one of mnist1d, digits, mnist, "
                                          "fashion_mnist, cifar10"):
        validate({"dataset": "svhn"})
    with pytest.raises(ConfigError, match="config key 'data_dir' must be a string or null, got 3"):
        validate({"data_dir": 3})
