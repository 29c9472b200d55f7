"""Input validation shared by every estimator: flat ``(n, d)`` or image-shaped ``(n, *shape)``.

Flat inputs go through scikit-learn's ``validate_data`` (so the estimator
checks see the usual behaviour and messages). Inputs with more than two
dimensions, as numpy arrays or torch tensors, are checked here and kept in
their shape all the way to the module: ``input_shape_`` records the shape of
one input at fit time and later calls must match it.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.validation import validate_data

__all__ = ["validate_inputs"]


def fill_missing_params(cls: type, state: dict, earlier: dict | None = None) -> dict:
    """Give a pickled estimator's ``state`` the constructor parameters it lacks.

    A pickle (joblib) of an earlier version has no entry for a parameter added
    since; without one, ``get_params``, ``repr``, ``clone`` and refitting fail.
    Each missing keyword parameter of ``cls.__init__`` gets ``earlier[name]``
    (what that version did, where it differs from the default) or its default.
    """
    earlier = earlier or {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
            state.setdefault(name, earlier.get(name, p.default))
    return state


def _as_numpy(X: Any) -> Any:
    return X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X


_NO_Y = "no_validation"


def _ndim(X: Any) -> int:
    """Dimensions of an array-like without calling numpy's array-function protocol."""
    shape = getattr(X, "shape", None)  # ndarray, pandas, sparse
    if isinstance(shape, tuple):
        return len(shape)
    try:
        return np.asarray(X).ndim
    except (ValueError, TypeError):
        return 2  # ragged or odd input: let scikit-learn's validation explain


def _checked_already(est: Any, X: Any) -> bool:
    """True when ``X`` would come back from ``validate_data`` unchanged and without a word.

    A float32, C-contiguous, finite 2-D ndarray with at least one row, of the
    width the estimator was fitted on (flat inputs, no feature names): one-input
    calls then skip scikit-learn's generic checks, which cost more than a small
    surrogate's forward pass. Anything else goes through them.
    """
    return (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype == np.float32
        and X.flags.c_contiguous
        and X.shape[0] >= 1
        and getattr(est, "input_shape_", None) == (X.shape[1],)
        and getattr(est, "n_features_in_", None) == X.shape[1]
        and not hasattr(est, "feature_names_in_")
        and bool(np.isfinite(X).all())
    )


def validate_inputs(est: Any, X: Any, y: Any = _NO_Y, *, reset: bool) -> Any:
    """Check ``X`` (and ``y``) and return float32, C-contiguous inputs of their own shape.

    Sets ``n_features_in_`` (values per input) and ``input_shape_`` when
    ``reset``; otherwise checks them. Returns ``X``, or ``(X, y)`` when ``y``
    is passed (``None`` is then an error, as scikit-learn expects).
    """
    name = type(est).__name__
    if y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None.")
    with_y = not (isinstance(y, str) and y == _NO_Y)
    if not reset and not with_y and _checked_already(est, X):
        return X
    X = _as_numpy(X)
    ndim = _ndim(X)
    if ndim <= 2:
        if not reset and len(getattr(est, "input_shape_", ())) > 1:
            raise ValueError(
                f"X has shape {np.shape(X)}, but {name} was fitted on inputs of shape "
                f"(n_samples, {', '.join(map(str, est.input_shape_))}); reshape X to match."
            )
        if with_y:
            out, y = validate_data(est, X, y, reset=reset, dtype=np.float32)
        else:
            out = validate_data(est, X, reset=reset, dtype=np.float32)
        if reset:
            est.input_shape_ = (int(out.shape[1]),)
        out = np.ascontiguousarray(out)
        return (out, y) if with_y else out

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
    if not with_y:
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


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_count(value: Any, name: str, *, minimum: int = 1, none_ok: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= minimum`` (or ``None``)."""
    if none_ok and value is None:
        return
    if not (_is_int(value) and value >= minimum):
        what = ("None or " if none_ok else "") + f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}; got {value!r}.")


def check_level(value: Any, name: str, *, none_ok: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` lies in (0, 1) (or is ``None``)."""
    if none_ok and value is None:
        return
    ok = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool)
    if not (ok and 0 < value < 1):
        raise ValueError(f"{name} must {'be None or ' if none_ok else ''}lie in (0, 1); "
                         f"got {value!r}.")  # fmt: skip


def check_nonnegative(value: Any, name: str) -> float | None:
    """``value`` as a finite float ``>= 0`` (``None`` passes), else a ``ValueError`` naming it."""
    if value is None:
        return None
    ok = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool)
    if not (ok and np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be None or a finite number >= 0; got {value!r}.")
    return float(value)


def check_share(value: Any, name: str, *, count_ok: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a share in (0, 1) (or, with ``count_ok``, an
    integer number of inputs ``>= 1``)."""
    if isinstance(value, (float, np.floating)) and 0 < value < 1:
        return
    if count_ok and _is_int(value) and value >= 1:
        return
    raise ValueError(
        f"{name} must be a share in (0, 1)"
        + (" or a number of inputs >= 1" if count_ok else "")
        + f"; got {value!r}."
    )


def check_stages(value: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is None, an integer >= 1 or a list of them."""
    if value is None or (_is_int(value) and value >= 1):
        return
    if isinstance(value, (list, tuple)) and value and all(_is_int(v) and v >= 1 for v in value):
        return
    raise ValueError(
        f"{name} must be None, an integer >= 1 (one refinement stage) or a non-empty list of "
        f"integers >= 1 (the extra samples of each stage); got {value!r}."
    )


def refine_stages(value: Any) -> list[int]:
    """The extra samples of each refinement stage of ``n_refine`` (checked; ``[]`` for None)."""
    check_stages(value, "n_refine")
    if value is None:
        return []
    return [int(value)] if _is_int(value) else [int(v) for v in value]


def flat_rows(X: Any) -> np.ndarray:
    """``X`` as C-contiguous float32 rows (one per input, every input flattened)."""
    return np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)


def through(preprocessing: Any, X: Any) -> Any:
    """``X`` through fitted preprocessing (``None``: unchanged), a numeric ndarray cast to float32
    first: the networks compute in float32, so equal values in float16, float32 or float64 take
    the same arithmetic through every step."""
    if preprocessing is None:
        return X
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
        X = X.astype(np.float32, copy=False)
    return preprocessing.transform(X)


def input_stats(X: np.ndarray) -> dict:
    """Range and spread of training inputs (validated float32), for the data-scale guard."""
    flat = X.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]  # spread and kind from <= ~1e6 values
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "std": float(sample.std(dtype=np.float64)),
        "whole_numbers": bool(np.array_equal(sample, np.round(sample))),
    }


def merge_input_stats(old: dict | None, new: dict) -> dict:
    """Widen a recorded range by a later training batch (``partial_fit``)."""
    if not old:
        return new
    return {**old, "min": min(old["min"], new["min"]), "max": max(old["max"], new["max"])}


def warn_if_sigma_is_negligible(name: str, sigma: float, stats: dict) -> None:
    """Warn at fit when sigma is tiny against the spread of the training inputs."""
    if not stats or not stats["std"] > 0 or sigma >= 0.05 * stats["std"]:
        return
    lo, hi = stats["min"], stats["max"]
    hint = ""
    if stats["whole_numbers"] and hi > 1:
        hint = (
            f" X holds whole numbers from {lo:g} to {hi:g} (raw pixel values?): scale it, e.g. "
            f"X / {hi:g} to [0, 1], and choose sigma in those units."
        )
    warnings.warn(
        f"{name}: sigma={sigma:g} is negligible against the spread of the training inputs "
        f"(standard deviation {stats['std']:.3g}, range [{lo:g}, {hi:g}]): the noise barely "
        "changes the network's inputs, so certified radii reach the sample-budget ceiling and "
        f"mean little.{hint} Otherwise raise sigma to the scale of the data (e.g. "
        f"{0.25 * stats['std']:.3g}).",
        UserWarning,
        stacklevel=3,
    )


def warn_if_off_scale(name: str, X: np.ndarray, stats: dict | None, sigma: float) -> None:
    """Warn when inputs lie far outside the training range (another scale, e.g. 0-255 vs [0, 1]).

    Far: beyond the range widened by its width and by ``8 sigma`` on each side
    (noisy copies of training inputs, which the estimators evaluate themselves,
    stay inside).
    """
    if not stats or X.size == 0:
        return
    lo, hi = stats["min"], stats["max"]
    width = (hi - lo if hi > lo else 1.0) + 8.0 * abs(float(sigma))
    x_lo, x_hi = float(X.min()), float(X.max())
    if lo - width <= x_lo and x_hi <= hi + width:
        return
    warnings.warn(
        f"{name}: X holds values from {x_lo:g} to {x_hi:g}, far outside the training inputs' "
        f"range [{lo:g}, {hi:g}]: most likely data on another scale (e.g. 0-255 pixels given to "
        "a model trained on [0, 1]). Certificates for such inputs are about points the model "
        "never saw, not the data you mean: apply the scaling used at fit.",
        UserWarning,
        stacklevel=3,
    )
