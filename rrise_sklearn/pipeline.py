"""Certify through a scikit-learn Pipeline: transform with every step but the last, then certify.

**Radii are in the units of the last step's input.** With
``make_pipeline(StandardScaler(), SmoothedClassifier(sigma=0.25))`` the noise
is added to *standardized* inputs, so ``sigma`` and every certified radius are
in standardized units, not in the units of the raw data: a radius of 0.5 there
is 0.5 standard deviations per feature, whatever the raw scale.

**The radius in raw units.** When every step before the certifier is
per-feature affine (``x -> d * x + b`` with a vector ``d``: scikit-learn's
``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, and
identity steps), a raw-input ball of radius ``r`` maps into a ball of radius
``max|d| * r``, and no larger raw ball fits (the direction of the largest
``|d|`` reaches it). So the exact raw-unit radius is ``radius / max|d|``,
with ``d`` the product of the steps' factors: :func:`input_scale` gives
``max|d|`` and :func:`certify` the result's ``input_radius``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from ._validation import through
from .results import CertificationResult

__all__ = ["certify", "input_scale", "raw_input_scale", "split_certifier"]

# the scikit-learn steps that map each feature by x -> d * x + b, and their factor d
_AFFINE_FACTOR = {
    "StandardScaler": lambda s: None if s.scale_ is None else 1.0 / np.asarray(s.scale_),
    "RobustScaler": lambda s: None if s.scale_ is None else 1.0 / np.asarray(s.scale_),
    "MaxAbsScaler": lambda s: 1.0 / np.asarray(s.scale_),
    "MinMaxScaler": lambda s: np.asarray(s.scale_),
}


def _step_factor(step: Any) -> Any:
    """Per-feature factor of one fitted step (1.0 for identity), or raise LookupError."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return 1.0
    name = type(step).__name__
    if type(step).__module__.split(".")[0] != "sklearn":
        raise LookupError(name)
    if name == "FunctionTransformer" and step.func is None:
        return 1.0
    if name not in _AFFINE_FACTOR:
        raise LookupError(name)
    d = _AFFINE_FACTOR[name](step)
    return 1.0 if d is None else d


def _steps_of(preprocessing: Any) -> list:
    """The fitted steps of a Pipeline, a list of steps, one transformer, or None (none)."""
    if preprocessing is None:
        return []
    if isinstance(preprocessing, list):
        return preprocessing
    if hasattr(preprocessing, "steps"):
        return [s for _, s in preprocessing.steps]
    return [preprocessing]


def _raw_steps(prep: Any, cert: Any) -> tuple[list, list]:
    """(the certifier's own preprocessing steps, all steps from X to the certifier's network):
    an RRISESurrogate over a Pipeline applies that Pipeline's preprocessing itself."""
    own = _steps_of(getattr(cert, "preprocessing_", None))
    return own, _steps_of(prep) + own


def raw_input_scale(estimator: Any) -> float | None:
    """:func:`input_scale` of everything between ``X`` and the network of an estimator or a
    Pipeline ending in one (its steps, and a surrogate's own preprocessing).

    Examples
    --------
    >>> from rrise_sklearn import SmoothedClassifier
    >>> from rrise_sklearn.nets import MLP
    >>> raw_input_scale(SmoothedClassifier(MLP))
    1.0
    """
    return input_scale(_raw_steps(*split_certifier(estimator))[1])


def input_scale(preprocessing: Any) -> float | None:
    """``max|d|`` of per-feature affine preprocessing ``x -> d * x + b`` (composed), or ``None``.

    A certified radius ``R`` in the certifier's input space is the raw-unit
    radius ``R / input_scale(preprocessing)`` (exact: the largest raw ball
    that the preprocessing maps inside the certified ball). ``None`` when a
    step is not per-feature affine, so no such conversion exists.

    Parameters
    ----------
    preprocessing : Pipeline, a fitted transformer, a list of them, or None
        Everything before the certifier (``pipe[:-1]``); ``None`` means none
        (scale 1).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> X = np.array([[0.0, 0.0], [255.0, 10.0]])
    >>> input_scale(MinMaxScaler().fit(X))  # the 0-10 feature is stretched 10x
    0.1
    """
    d: Any = 1.0
    try:
        for step in _steps_of(preprocessing):
            d = d * _step_factor(step)
    except LookupError:
        return None
    return float(np.max(np.abs(d)))


def warn_if_stretched(
    scale: float | None, certifier: str, sigma: Any, *, stacklevel: int = 2
) -> None:
    """Warn when the preprocessing before ``certifier`` stretches X's units by more than 10x
    (or shrinks them below 0.1x): its radii then mean little in the units of X."""
    if scale is None or 0.1 <= scale <= 10:
        return
    warnings.warn(
        f"The preprocessing before {certifier} stretches the units of X by up to "
        f"{scale:.3g}x, so a certified radius R in its space (where sigma={sigma} is set) is "
        f"only R / {scale:.3g} in the units of X: result.input_radius of "
        "rrise_sklearn.certify gives it. Choose sigma in the scaled units, or drop the scaler "
        "when radii must hold in raw units.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def split_certifier(estimator: Any) -> tuple[Any, Any]:
    """``(preprocessing or None, certifier)`` of an estimator or a Pipeline ending in one.

    Raises
    ------
    TypeError
        If neither the estimator nor the last step of the Pipeline can certify.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from rrise_sklearn import SmoothedClassifier
    >>> from rrise_sklearn.nets import MLP
    >>> prep, cert = split_certifier(make_pipeline(StandardScaler(), SmoothedClassifier(MLP)))
    >>> type(prep).__name__, type(cert).__name__
    ('Pipeline', 'SmoothedClassifier')
    """
    if hasattr(estimator, "certify"):
        return None, estimator
    steps = getattr(estimator, "steps", None)
    if steps and hasattr(steps[-1][1], "certify"):
        return estimator[:-1], steps[-1][1]
    raise TypeError(
        f"{type(estimator).__name__} cannot certify: pass a fitted SmoothedClassifier, "
        "RRISESurrogate, or a Pipeline whose last step is one."
    )


def certify(estimator: Any, X: Any, **kwargs: Any) -> CertificationResult:
    """Certify ``X`` with an estimator or a Pipeline ending in a certifier.

    Every step but the last transforms ``X``; the last step's ``certify``
    (with ``kwargs``) gives the certificates. The radii are in the units of the
    last step's input (see the module docs); ``info["radius_units"]`` says so
    and ``info["sigma"]`` gives the noise level in those units. The result's
    ``input_radius`` gives the radius in the units of ``X`` when the
    preprocessing is per-feature affine (``info["input_scale"]`` is the factor
    it was divided by; ``None`` otherwise).

    Parameters
    ----------
    estimator : SmoothedClassifier, RRISESurrogate or Pipeline
        Fitted.
    X : array-like of shape (n_inputs, ...)
        Raw inputs, as the Pipeline's first step takes them.
    **kwargs
        Passed to the certifier's ``certify`` (e.g. ``n``, ``alpha``,
        ``random_state`` of a SmoothedClassifier).

    Notes
    -----
    With preprocessing steps, a numeric numpy ``X`` is cast to float32 (the
    networks' dtype) before the first step, so that equal values in float16,
    float32 or float64 give identical certificates.

    Returns
    -------
    result : CertificationResult

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_moons
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from rrise_sklearn import SmoothedClassifier, certify
    >>> from rrise_sklearn.nets import MLP
    >>> X, y = make_moons(200, noise=0.1, random_state=0)
    >>> pipe = make_pipeline(StandardScaler(), SmoothedClassifier(
    ...     MLP, module__hidden=16, max_epochs=5, n0=20, n=200, random_state=0)).fit(X, y)
    >>> res = certify(pipe, X[:5])
    >>> res.radius.shape, res.info["radius_units"]
    ((5,), 'L2 in the input space of SmoothedClassifier (the output of StandardScaler)')
    """
    prep, cert = split_certifier(estimator)
    res = cert.certify(through(prep, X), **kwargs)
    own, steps = _raw_steps(prep, cert)
    space = f"the SmoothedClassifier of {type(cert).__name__}" if own else type(cert).__name__
    where = f"L2 in the input space of {space}"
    if steps:
        where += f" (the output of {type(steps[-1]).__name__})"
    else:
        where += " (the units of X)"
    res.info["radius_units"] = where
    scale = input_scale(steps)
    res.info["input_scale"] = scale
    if scale is None:
        return res
    warn_if_stretched(scale, type(cert).__name__, res.info.get("sigma"), stacklevel=2)
    return dataclasses.replace(res, input_radius=np.asarray(res.radius, dtype=np.float64) / scale)
