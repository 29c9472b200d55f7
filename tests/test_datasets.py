"""Data readers: Fashion-MNIST's idx files (small fixtures written here), and their refusals."""

import gzip
import os

import numpy as np
import pytest

from rrise_sklearn.datasets import load_fashion_mnist, read_idx


def _write_idx(path, array, *, magic=8, dims=None, extra=b""):
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    head = bytes([0, 0, magic, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(head + array.tobytes() + extra)


def _fixture(folder, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for subset, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), pixels)
        _write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels)
        out[subset] = (pixels, labels)
    return out


def test_fashion_mnist_reads_images_and_labels_exactly(tmp_path, monkeypatch):
    import rrise_sklearn.datasets as ds

    want = _fixture(tmp_path)
    monkeypatch.setitem(ds._FASHION_FILES, "train", (*ds._FASHION_FILES["train"][:2], 12))
    monkeypatch.setitem(ds._FASHION_FILES, "test", (*ds._FASHION_FILES["test"][:2], 5))
    X, y = load_fashion_mnist("train", data_home=tmp_path, return_X_y=True)
    assert X.shape == (12, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(np.round(X[:, 0] * 255).astype(np.uint8), want["train"][0])
    np.testing.assert_array_equal(y, want["train"][1])
    Xf, yf = load_fashion_mnist("test", flat=True, data_home=tmp_path, return_X_y=True)
    assert Xf.shape == (5, 784) and 0.0 <= Xf.min() and Xf.max() <= 1.0
    np.testing.assert_array_equal(yf, want["test"][1])
    bunch = load_fashion_mnist("test", flat=True, data_home=tmp_path)  # scikit-learn's Bunch
    np.testing.assert_array_equal(bunch.data, Xf)
    np.testing.assert_array_equal(bunch.target, yf)
    assert bunch.target_names[9] == "Ankle boot" and "classes mixed" in bunch.order
    # a folder of the wrong size is refused, not silently truncated
    with pytest.raises(ValueError, match=r"expected \(60000, 28, 28\)"):
        monkeypatch.setitem(ds._FASHION_FILES, "train", (*ds._FASHION_FILES["train"][:2], 60000))
        ds._read_fashion.cache_clear()
        load_fashion_mnist("train", data_home=tmp_path)


def test_fashion_mnist_absent_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(data_home=tmp_path)
    with pytest.raises(ValueError, match="subset must be 'train' or 'test'"):
        load_fashion_mnist("validation", data_home=tmp_path)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("magic", "not an idx file of unsigned bytes"),
        ("short", "header .* says"),
        ("long", "header .* says"),
        ("huge", "refusing more than"),
    ],
)
def test_read_idx_checks_the_header_against_the_payload(tmp_path, kind, match):
    path = os.path.join(tmp_path, "x-idx1-ubyte.gz")
    data = np.arange(6, dtype=np.uint8)
    if kind == "magic":
        _write_idx(path, data, magic=0x0D)  # float32 idx: not ours
    elif kind == "short":
        _write_idx(path, data, dims=(7,))
    elif kind == "long":
        _write_idx(path, data, extra=b"\x00")
    else:  # declares 2**31 items in a tiny file: refused before any allocation
        _write_idx(path, data, dims=(2**31,))
    with pytest.raises(ValueError, match=match):
        read_idx(path)
    _write_idx(path, data)
    np.testing.assert_array_equal(read_idx(path), data)


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist absent"
)
def test_the_installed_debian_package_reads_fully():
    X, y = load_fashion_mnist("test", return_X_y=True)
    assert X.shape == (10000, 1, 28, 28) and np.bincount(y).tolist() == [1000] * 10
