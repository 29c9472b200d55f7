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
