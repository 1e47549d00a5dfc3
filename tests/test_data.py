"""Data loaders: IDX header checks, search order, clear errors, the real files when present."""

import gzip
import os
import struct

import numpy as np
import pytest
from _data import require

from jaxinit.app import data


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_split(directory, split, n=5, *, gz=True, label_max=9):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % (label_max + 1)).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    for stem, arr in [("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)]:
        raw = _idx_bytes(arr)
        path = directory / f"{prefix}-{stem}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    ("dtype", "code"), [(np.uint8, 0x08), (np.int16, 0x0B), (np.float32, 0x0D)]
)
def test_read_idx_round_trip(tmp_path, gz, dtype, code):
    arr = (
        (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        if dtype != np.uint8
        else (np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    )
    raw = _idx_bytes(arr, code)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = data.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", r"must start with two zero bytes, got an empty file"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", r"must start with two zero bytes, got 01020801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", r"unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", r"header for 3 dimensions is truncated"),
        (
            b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03",
            r"dimensions \(2, 2\) of uint8 \(16 bytes with the header\) but the file holds 15",
        ),
    ],
)
def test_read_idx_rejects_bad_headers(tmp_path, raw, match):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(data.IDXError, match=match):
        data.read_idx(path)


def test_read_idx_rejects_corrupt_gzip_and_missing_file(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((3, 3), np.uint8)))[:-6])
    with pytest.raises(data.IDXError, match="not a readable gzip file"):
        data.read_idx(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.idx"):
        data.read_idx(tmp_path / "nope.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    images, labels = _write_split(tmp_path, "test", gz=gz)
    ds = data.fashion_mnist("test", data_dir=tmp_path)
    assert ds.x.shape == (5, 28, 28, 1) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.y.dtype == np.int32 and ds.name == "fashion-mnist/test"
    assert ds.flat().shape == (5, 784)
    z = ds.standardized().x
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    assert data.fashion_mnist_available(tmp_path) is False  # only the test split is there


def test_missing_files_name_the_files_and_directories(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist("train", data_dir=tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte" in msg
    assert str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg


def test_wrong_image_shape_and_label_range_are_reported(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 8, 8), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(data.IDXError, match=r"shape \(n, 28, 28\), got uint8 \(2, 8, 8\)"):
        data.mnist("test", data_dir=tmp_path)
    _write_split(tmp_path, "train", n=12, gz=False, label_max=11)
    with pytest.raises(data.IDXError, match=r"labels must be 0\.\.9, found 11"):
        data.mnist("train", data_dir=tmp_path)


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match=r"split='val' is not supported; use one of"):
        data.fashion_mnist("val")
    with pytest.raises(ValueError, match=r"name='cifar' is not a known dataset"):
        data.load("cifar")


def test_digits():
    ds = data.load("digits")
    assert ds.x.shape == (1797, 8, 8, 1) and ds.num_classes == 10
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0


def test_real_fashion_mnist_test_split():
    require("fashion-mnist", "test")
    ds = data.fashion_mnist("test")
    assert ds.x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y), np.full(10, 1000))
    # Published pixel statistics of the Fashion-MNIST test images (mean 0.2868, std 0.3524).
    assert abs(float(ds.x.mean()) - 0.2868) < 5e-4 and abs(float(ds.x.std()) - 0.3524) < 5e-4


def test_real_fashion_mnist_train_split():
    require("fashion-mnist", "train")
    ds = data.fashion_mnist("train")
    assert ds.x.shape == (60000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y), np.full(10, 6000))


def test_real_mnist_test_split_and_missing_train_images():
    require("mnist", "test")
    ds = data.mnist("test")
    assert ds.x.shape == (10000, 28, 28, 1) and ds.num_classes == 10
    if not data.available("mnist", "train"):
        with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
            data.mnist("train")


# --------------------------------------------------------------------------- search order


@pytest.fixture
def env(monkeypatch):
    """No JAXINIT_DATA* variables and a Debian folder under the test's control."""
    monkeypatch.delenv("JAXINIT_DATA", raising=False)
    monkeypatch.delenv("JAXINIT_DATA_ONLY", raising=False)
    return monkeypatch


def test_search_order_data_dir_then_env_then_debian(env, tmp_path):
    system, a, b = tmp_path / "system", tmp_path / "a", tmp_path / "b"
    env.setattr(data, "SYSTEM_DIR", system)
    assert data.search_dirs("mnist") == [system / "mnist"]
    env.setenv("JAXINIT_DATA", os.pathsep.join([str(a), "", str(b)]))
    assert data.search_dirs("mnist") == [a / "mnist", b / "mnist", system / "mnist"]
    env.setenv("JAXINIT_DATA_ONLY", "1")
    assert data.search_dirs("mnist") == [a / "mnist", b / "mnist"]
    # data_dir= is the only folder, whatever the environment says.
    assert data.search_dirs("mnist", tmp_path) == [tmp_path]


def test_env_folder_is_used_and_the_first_match_wins(env, tmp_path):
    system, a, b = tmp_path / "system", tmp_path / "a", tmp_path / "b"
    env.setattr(data, "SYSTEM_DIR", system)
    for root, n in ((system, 3), (b, 4), (a, 5)):
        (root / "fashion-mnist").mkdir(parents=True)
        _write_split(root / "fashion-mnist", "test", n=n)
    assert data.fashion_mnist("test").x.shape[0] == 3  # only the Debian folder is searched
    env.setenv("JAXINIT_DATA", os.pathsep.join([str(b), str(a)]))
    assert data.fashion_mnist("test").x.shape[0] == 4
    assert data.available("fashion-mnist", "test") and not data.available("fashion-mnist")


def test_data_only_hides_the_debian_files(env, tmp_path):
    system = tmp_path / "system"
    env.setattr(data, "SYSTEM_DIR", system)
    (system / "fashion-mnist").mkdir(parents=True)
    _write_split(system / "fashion-mnist", "test")
    assert data.available("fashion-mnist", "test")
    env.setenv("JAXINIT_DATA_ONLY", "1")
    assert not data.available("fashion-mnist", "test")
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist("test")
    msg = str(info.value)
    assert "no folder (JAXINIT_DATA_ONLY=1, JAXINIT_DATA unset)" in msg
    assert "set JAXINIT_DATA to a folder holding fashion-mnist/" in msg
    env.setenv("JAXINIT_DATA_ONLY", "yes")
    with pytest.raises(ValueError, match=r"JAXINIT_DATA_ONLY='yes' is not supported; use 0 or 1"):
        data.fashion_mnist("test")


def test_available_rejects_unknown_names_and_splits():
    with pytest.raises(ValueError, match=r"name='digits' is not an IDX dataset"):
        data.available("digits")
    with pytest.raises(ValueError, match=r"split='val' is not supported"):
        data.available("mnist", "val")
