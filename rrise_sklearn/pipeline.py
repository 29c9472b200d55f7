"""Certify through a scikit-learn Pipeline: transform with every step but the last, then certify.

**Radii are in the units of the last step's input.** With
``make_pipeline(StandardScaler(), SmoothedClassifier(sigma=0.25))`` the noise
is added to *standardized* inputs, so ``sigma`` and every certified radius are
in standardized units, not in the units of the raw data: a radius of 0.5 there
is 0.5 standard deviations per feature, whatever the raw scale. Put
preprocessing that should not change the units (reshaping, casting) before the
certifier, and scale raw inputs yourself when radii must be in raw units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .results import CertificationResult

__all__ = ["certify", "split_certifier"]


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
    and ``info["sigma"]`` gives the noise level in those units.

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
    if prep is not None and isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
        # the networks compute in float32: cast once, here, so that equal values in
        # float16, float32 or float64 take the same arithmetic through every step
        X = X.astype(np.float32, copy=False)
    Xc = prep.transform(X) if prep is not None else X
    res = cert.certify(Xc, **kwargs)
    where = f"L2 in the input space of {type(cert).__name__}"
    if prep is not None:
        last = prep.steps[-1][1] if hasattr(prep, "steps") else prep
        where += f" (the output of {type(last).__name__})"
    else:
        where += " (the units of X)"
    res.info["radius_units"] = where
    return res
