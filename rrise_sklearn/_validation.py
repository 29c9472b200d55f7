"""Input validation shared by every estimator: flat ``(n, d)`` or image-shaped ``(n, *shape)``.

Flat inputs go through scikit-learn's ``validate_data`` (so the estimator
checks see the usual behaviour and messages). Inputs with more than two
dimensions, as numpy arrays or torch tensors, are checked here and kept in
their shape all the way to the module: ``input_shape_`` records the shape of
one input at fit time and later calls must match it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.validation import validate_data

__all__ = ["validate_inputs"]


def _as_numpy(X: Any) -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return X
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return X


def validate_inputs(est: Any, X: Any, y: Any = None, *, reset: bool) -> Any:
    """Check ``X`` (and ``y``) and return float32, C-contiguous inputs of their own shape.

    Sets ``n_features_in_`` (values per input) and ``input_shape_`` when
    ``reset``; otherwise checks them. Returns ``X`` or ``(X, y)``.
    """
    X = _as_numpy(X)
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        X = np.asarray(X) if not hasattr(X, "__array__") else X
        ndim = np.ndim(X)
    name = type(est).__name__
    if ndim <= 2:
        if not reset and len(getattr(est, "input_shape_", ())) > 1:
            raise ValueError(
                f"X has shape {np.shape(X)}, but {name} was fitted on inputs of shape "
                f"(n_samples, {', '.join(map(str, est.input_shape_))}); reshape X to match."
            )
        if y is None:
            out = validate_data(est, X, reset=reset, dtype=np.float32)
        else:
            out, y = validate_data(est, X, y, reset=reset, dtype=np.float32)
        if reset:
            est.input_shape_ = (int(out.shape[1]),)
        out = np.ascontiguousarray(out)
        return out if y is None else (out, y)

    out = check_array(
        X,
        dtype=np.float32,
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
        input_name="X",
        estimator=est,
    )
    shape = tuple(int(s) for s in out.shape[1:])
    if reset:
        est.input_shape_ = shape
        est.n_features_in_ = int(math.prod(shape))
    else:
        expected = getattr(est, "input_shape_", None)
        if expected is None:
            expected = (getattr(est, "n_features_in_", None),)
        if tuple(expected) != shape:
            raise ValueError(
                f"X has inputs of shape {shape}, but {name} was fitted on inputs of shape "
                f"{tuple(expected)}; reshape X to (n_samples, {', '.join(map(str, expected))})."
            )
    out = np.ascontiguousarray(out)
    if y is None:
        return out
    y = column_or_1d(np.asarray(_as_numpy(y)), warn=True)
    check_consistent_length(out, y)
    return out, y


def inferred_module_kwargs(input_shape: tuple[int, ...], n_classes: int) -> dict:
    """Constructor values a module class may take from the data (see ``build_module``)."""
    kw = {"n_features": int(math.prod(input_shape)), "n_classes": int(n_classes)}
    if len(input_shape) == 3:  # (channels, height, width)
        kw["channels"] = int(input_shape[0])
    return kw
