"""The benchmarks' full-MNIST reader unpickles numpy arrays and nothing else."""

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_data.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_data", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arrays_load_and_anything_else_is_refused(tmp_path, capsys):
    data = _module()
    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n))
                  for n in (5, 3, 2))  # fmt: skip
    good = tmp_path / "mnist.pkl.gz"
    good.write_bytes(gzip.compress(pickle.dumps(parts, protocol=2)))
    out = data.load_full_mnist(str(good))
    np.testing.assert_array_equal(out["valid"][0], parts[1][0])
    assert out["test"][1].dtype == np.int64
    bad = tmp_path / "bad.pkl.gz"
    bad.write_bytes(gzip.compress(pickle.dumps((_Boom(),), protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (__builtin__|builtins)\."):
        data.load_full_mnist(str(bad))
    assert "must never run" not in capsys.readouterr().out


def test_surrogate_input_levers_keep_calibration_and_test_images_out(monkeypatch):
    data = _module()
    rng = np.random.default_rng(1)

    def fake(path=None):  # rows made unique by their first pixel
        parts, start = {}, 0
        for name, n in (("train", 60), ("valid", 30), ("test", 20)):
            X = rng.random((n, 784)).astype(np.float32)
            X[:, 0] = np.arange(start, start + n)
            parts[name], start = (X, rng.integers(0, 10, n)), start + n
        return parts

    monkeypatch.setattr(data, "load_full_mnist", fake)
    out = data.splits("mnist", n_surrogate=40, n_cal=10, n_test=5, held_out_extra=True)
    sur, cal, test = out["surrogate"][:, 0], out["rrise"][0][:, 0], out["test"][0][:, 0]
    assert len(sur) == 40 + 20 and len(np.unique(sur)) == 60
    assert not set(sur) & (set(cal) | set(test))
    assert set(sur[40:]) == set(range(60, 90)) - set(cal)  # the rest of the held-out images


def test_shifted_copies_are_translations_of_the_images():
    data = _module()
    X = np.zeros((4, 28, 28), np.float32)
    X[:, 8:20, 9:18] = np.arange(4)[:, None, None] + 1.0  # interior blocks: nothing falls off
    Y = data.shifted(X.reshape(4, 784), 50, seed=0).reshape(50, 28, 28)
    for img in Y:
        ys, xs = np.nonzero(img)
        dy, dx = ys.min() - 8, xs.min() - 9
        assert (dy, dx) != (0, 0) and max(abs(dy), abs(dx)) <= 2
        np.testing.assert_array_equal(np.roll(img, (-dy, -dx), axis=(0, 1)), X[int(img.max()) - 1])
