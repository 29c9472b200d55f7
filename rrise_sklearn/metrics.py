"""Certified-robustness metrics and scorers for model selection."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as _sps

from .calibration import exceedance_distribution
from .results import CertificationResult

__all__ = [
    "abstain_rate",
    "acr_scorer",
    "average_certified_radius",
    "certified_accuracy",
    "certified_accuracy_lower_bound",
    "certified_accuracy_scorer",
    "certified_scorer",
    "radius_ceiling",
]


def _check_arrays(y_true: Any, prediction: Any, radius: Any) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true)
    p = np.asarray(prediction)
    r = np.asarray(radius, dtype=np.float64)
    if not (y.ndim == p.ndim == r.ndim == 1) or not (len(y) == len(p) == len(r)):
        raise ValueError(
            "y_true, prediction and radius must be 1-D arrays of the same length; got shapes "
            f"{y.shape}, {p.shape}, {r.shape}."
        )
    if len(y) == 0:
        raise ValueError("y_true is empty: certified metrics need at least one input.")
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError("radius must contain numbers >= 0 (0 means abstain); got NaN or < 0.")
    return y, p, r


def certified_accuracy(y_true: Any, prediction: Any, radius: Any, r: Any = 0.0) -> Any:
    """Fraction of inputs that are correct, not abstained, and certified at radius ``r``.

    An input counts when ``prediction == y_true`` and ``radius >= r`` (and, at
    ``r = 0``, the certifier did not abstain: abstentions are errors).

    Parameters
    ----------
    y_true : array-like of shape (n_inputs,)
        True labels.
    prediction : array-like of shape (n_inputs,)
        Certified predictions (the abstain label where abstained).
    radius : array-like of shape (n_inputs,)
        Certified radii, 0 where abstained.
    r : float or array-like, default=0.0
        Radius (or radii) at which to evaluate.

    Returns
    -------
    accuracy : float or ndarray
        One value per radius in ``r``.

    Examples
    --------
    >>> from rrise_sklearn.metrics import certified_accuracy
    >>> certified_accuracy([0, 1, 1], [0, 1, -1], [0.5, 0.1, 0.0], r=[0.0, 0.25])
    array([0.66666667, 0.33333333])
    """
    y, p, rad = _check_arrays(y_true, prediction, radius)
    rr = np.asarray(r, dtype=np.float64)
    if np.any(np.isnan(rr)) or np.any(rr < 0):
        raise ValueError(f"r must be >= 0; got r={r!r}.")
    ok = (p == y) & (rad > 0)
    out = np.mean(ok[None, :] & (rad[None, :] >= rr.reshape(-1, 1)), axis=1)
    return float(out[0]) if rr.ndim == 0 else out.reshape(rr.shape)


def average_certified_radius(y_true: Any, prediction: Any, radius: Any) -> float:
    """ACR: mean of ``radius * [prediction == y_true]`` over all inputs.

    Examples
    --------
    >>> from rrise_sklearn.metrics import average_certified_radius
    >>> average_certified_radius([0, 1, 1], [0, 0, 1], [0.6, 0.3, 0.3])
    0.3
    """
    y, p, r = _check_arrays(y_true, prediction, radius)
    return float(np.mean(np.where(p == y, r, 0.0)))


def abstain_rate(radius: Any) -> float:
    """Fraction of abstentions (certificates with radius 0).

    Examples
    --------
    >>> from rrise_sklearn.metrics import abstain_rate
    >>> abstain_rate([0.0, 0.2, 0.0, 1.0])
    0.5
    """
    r = np.asarray(radius, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError("radius must be a non-empty 1-D array.")
    return float(np.mean(r <= 0))


def _dependence(result: Any) -> str:
    """How the certificates of a result depend on each other, from how they were drawn."""
    info = getattr(result, "info", {}) or {}
    dep = info.get("dependence")
    if dep == "conformal":
        return "conformal"
    if dep == "none":
        raise ValueError(
            "These certificates are uncalibrated (no conformal calibration): they carry no error "
            "level, so no dataset-level bound exists for them."
        )
    sharing = info.get("noise_sharing")
    if sharing is None:
        return "unknown"
    return "independent" if int(sharing) == 1 else "shared-noise"


def certified_accuracy_lower_bound(
    y_true: Any,
    prediction: Any,
    radius: Any = None,
    r: Any = 0.0,
    *,
    alpha: float | None = None,
    rho: float = 0.05,
    independent: bool | None = None,
) -> Any:
    """Certified accuracy corrected to hold with probability ``1 - rho`` over the test set.

    Each certificate is wrong with probability at most ``alpha``. Subtracting
    a ``1 - rho`` upper bound on the number ``W`` of wrong certificates from
    the number of inputs counted as certified-correct gives a count of inputs
    that are *truly* correct and robust at ``r``, with probability
    ``>= 1 - rho``. The upper bound on ``W`` depends on how the certificates'
    errors depend on each other, which the function reads from a
    :class:`~rrise_sklearn.results.CertificationResult`:

    * Monte Carlo certificates with ``noise_sharing=1`` (independent draws):
      ``W`` is dominated by ``Bin(n, alpha)``; its ``1 - rho`` quantile.
    * Monte Carlo certificates with shared noise (the default
      ``noise_sharing=16``: errors coincide within a group), or plain arrays:
      Markov's inequality, ``W <= alpha n / rho`` (valid under any
      dependence).
    * RRISE certificates (one shared threshold): a wrong certificate needs its
      input's conformity score above the threshold or a failed Monte Carlo
      bound. Given the calibration draw, the number of scores above the
      threshold follows the Beta-Binomial law of
      :func:`~rrise_sklearn.calibration.exceedance_distribution`; the number of
      failed bounds is dominated by ``Bin(n, alpha_mc)``. ``W`` is bounded by
      the sum of their ``1 - rho/2`` quantiles. This needs the test inputs to
      be exchangeable with the calibration set (the guarantee's own
      assumption).

    Parameters
    ----------
    y_true : array-like of shape (n_inputs,)
        True labels.
    prediction : CertificationResult or array-like of shape (n_inputs,)
        The certificates (preferred: the result of ``certify``), or the
        predictions, with ``radius`` and ``alpha`` given.
    radius : array-like of shape (n_inputs,), optional
        Radii; only with array predictions.
    r : float or array-like, default=0.0
        Radius (or radii).
    alpha : float, optional
        The per-certificate error level; taken from the result when one is
        given (for RRISE, ``alpha_conf + alpha_mc`` enters only the check).
    rho : float, default=0.05
        Probability that the corrected figure is too high.
    independent : bool, optional
        ``None`` (default): choose from the result as above. ``True`` demands
        the binomial variant and is refused unless the result records
        independent draws (``noise_sharing=1``); plain arrays cannot show that,
        so pass the result. ``False``: Markov's inequality.

    Returns
    -------
    accuracy : float or ndarray

    Raises
    ------
    ValueError
        If ``independent=True`` for certificates that are not independent (or
        whose provenance is unknown), or on malformed input.

    Examples
    --------
    >>> from rrise_sklearn.metrics import certified_accuracy_lower_bound
    >>> y = [0] * 1000
    >>> certified_accuracy_lower_bound(y, y, [1.0] * 1000, alpha=0.001, rho=0.05)
    0.98
    >>> import numpy as np
    >>> from rrise_sklearn.results import CertificationResult
    >>> res = CertificationResult(np.zeros(1000, int), np.ones(1000), np.full(1000, 0.9),
    ...                           info={"alpha": 0.001, "noise_sharing": 1})
    >>> certified_accuracy_lower_bound(y, res)
    0.997
    """
    if isinstance(prediction, CertificationResult):
        if radius is not None:
            raise ValueError("Pass either a CertificationResult or prediction and radius.")
        result = prediction
        prediction, radius = result.prediction, result.radius
        dep = _dependence(result)
        info = result.info
        if dep == "conformal":
            alpha = float(info["alpha_conf"]) + float(info["alpha_mc"])
        elif alpha is None:
            alpha = info.get("alpha")
    else:
        if radius is None:
            raise ValueError("radius is required with array predictions.")
        dep = "unknown"
        info = {}
    if alpha is None:
        raise ValueError("alpha is required: the certifier's per-certificate error level.")
    y, p, rad = _check_arrays(y_true, prediction, radius)
    if not 0 < alpha < 1 or not 0 < rho < 1:
        raise ValueError(f"alpha and rho must lie in (0, 1); got alpha={alpha}, rho={rho}.")
    if independent and dep != "independent":
        why = {
            "shared-noise": "these Monte Carlo certificates share noise within groups of "
            f"noise_sharing={info.get('noise_sharing')} inputs, so their errors coincide",
            "conformal": "RRISE certificates share one calibrated threshold, so their errors "
            "are dependent (the default independent=None accounts for it)",
            "unknown": "plain arrays do not show how the certificates were drawn; pass the "
            "CertificationResult of a SmoothedClassifier(noise_sharing=1).certify(X)",
        }[dep]
        raise ValueError(f"independent=True is not valid here: {why}.")
    n = len(y)
    acc = np.asarray(certified_accuracy(y, p, rad, r), dtype=np.float64)
    if independent is False or dep in ("shared-noise", "unknown"):
        wrong = alpha * n / rho
    elif dep == "independent":
        wrong = float(_sps.binom.ppf(1 - rho, n, alpha))
    else:  # conformal
        g = info["conformal_groups"]
        laws = g if isinstance(g, list) else [g]
        # several laws (RRISE with the cap groupings): each bounds its part at its share of rho/2
        share = rho / 2 / int(info.get("conformal_split", 1))
        exceed = 0
        for law in laws:
            pmf = exceedance_distribution(law["m_new"], law["m_cal"], law["rank"])
            exceed += int(np.searchsorted(np.cumsum(pmf), 1 - share - 1e-12))
        mc = float(_sps.binom.ppf(1 - rho / 2, n, float(info["alpha_mc"])))
        wrong = exceed + mc
    out = np.maximum(0.0, acc - wrong / n)
    return float(out) if out.ndim == 0 else out


def radius_ceiling(estimator: Any) -> float | None:
    """The largest radius a fitted certifier can certify at its settings, whatever the input.

    * :class:`~rrise_sklearn.SmoothedClassifier`: ``sigma * PhiInv(alpha ** (1 / n))``,
      the radius when all ``n`` samples agree (Cohen's CERTIFY, the default
      ``method``).
    * :class:`~rrise_sklearn.RRISESurrogate`: ``sigma * (cap - tau)``, the
      calibrated radius of an input predicted at the prediction cap, largest over
      the calibration's groups.
    * A Pipeline: its last step's (in that step's input units).

    Returns ``None`` when the estimator has no finite ceiling it can state.

    Examples
    --------
    >>> from rrise_sklearn import SmoothedClassifier
    >>> from rrise_sklearn.metrics import radius_ceiling
    >>> from rrise_sklearn.nets import MLP
    >>> round(radius_ceiling(SmoothedClassifier(MLP, sigma=0.25, n=100, alpha=0.001)), 3)
    0.375
    """
    from .pipeline import split_certifier
    from .stats import max_certifiable_radius

    _, cert = split_certifier(estimator)
    cal = getattr(cert, "calibration_", None)
    if cal is not None:
        cap = cal.prediction_cap
        if cap is None or not np.isfinite(cap):
            return None
        k = len(cert.smoothed_.classes_)
        z = cal.calibrated_z(np.arange(k), np.full(k, float(cap)))
        return float(max(0.0, float(cert.sigma_) * float(np.max(z))))
    if all(hasattr(cert, a) for a in ("n", "alpha", "sigma")):
        return float(max_certifiable_radius(int(cert.n), float(cert.alpha), float(cert.sigma)))
    return None


def _warn_above_ceiling(estimator: Any, radii: Any) -> None:
    """Warn when a scored radius is above what the estimator can certify at its settings."""
    import warnings

    from .pipeline import split_certifier

    ceiling = radius_ceiling(estimator)
    top = float(np.max(radii)) if np.size(radii) else 0.0
    if ceiling is None or top <= ceiling:
        return
    _, cert = split_certifier(estimator)
    if hasattr(cert, "n"):
        from .stats import samples_for_radius  # p_a = 1: the budget of the all-agree bound

        need = int(samples_for_radius(top, float(cert.sigma), 1.0, float(cert.alpha)))
        fix = f"raise n to at least {need:,} (n={cert.n:,} now) or score at r <= {ceiling:.3g}"
        what = f"n={cert.n:,}, alpha={cert.alpha}, sigma={cert.sigma}"
    else:
        fix = f"score at r <= {ceiling:.3g}, or calibrate with more samples (n_refine)"
        what = f"sigma={cert.sigma_}, its prediction cap and threshold"
    warnings.warn(
        f"Scoring at r={top:g} is above the radius ceiling {ceiling:.3g} of this "
        f"{type(cert).__name__} ({what}): every input scores 0 there whatever the model's "
        f"robustness, so the score is decided by the sample budget. {fix}.",
        UserWarning,
        stacklevel=3,
    )


class _CertifiedScorer:
    """Scorer certifying with :func:`rrise_sklearn.certify`: an estimator or a Pipeline ending
    in one; usable as ``GridSearchCV(scoring=...)``."""

    def __init__(self, kind: str, r: float = 0.0) -> None:
        self.kind = kind
        self.r = float(r)

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        from .pipeline import certify  # a Pipeline does not forward certify itself

        if self.kind != "acr":
            _warn_above_ceiling(estimator, [self.r])
        res = certify(estimator, X)
        if self.kind == "acr":
            return average_certified_radius(y, res.prediction, res.radius)
        return float(certified_accuracy(y, res.prediction, res.radius, self.r))

    def __repr__(self) -> str:
        if self.kind == "acr":
            return "acr_scorer()"
        return f"certified_accuracy_scorer(r={self.r})"


class _MultiCertifiedScorer:
    """Several certified metrics from one certification per call (a dict, as scikit-learn's
    multi-metric scoring takes from a callable)."""

    def __init__(self, radii: tuple[float, ...], acr: bool, abstain: bool) -> None:
        self.radii = radii
        self.acr = acr
        self.abstain = abstain

    @property
    def names(self) -> list[str]:
        """The keys of the returned dict, in order (``refit=`` takes one of them)."""
        out = [f"certified_accuracy_r{r:g}" for r in self.radii]
        return out + ["acr"] * self.acr + ["abstain_rate"] * self.abstain

    def __call__(self, estimator: Any, X: Any, y: Any) -> dict[str, float]:
        from .pipeline import certify

        _warn_above_ceiling(estimator, self.radii)
        res = certify(estimator, X)
        accs = np.atleast_1d(certified_accuracy(y, res.prediction, res.radius, list(self.radii)))
        out = {name: float(a) for name, a in zip(self.names, accs, strict=False)}
        if self.acr:
            out["acr"] = average_certified_radius(y, res.prediction, res.radius)
        if self.abstain:
            out["abstain_rate"] = abstain_rate(res.radius)
        return out

    def __repr__(self) -> str:
        return (
            f"certified_scorer(radii={list(self.radii)}, acr={self.acr}, "
            f"abstain_rate={self.abstain})"
        )


def certified_scorer(
    radii: Any = (0.0, 0.25, 0.5), *, acr: bool = True, abstain_rate: bool = False
) -> _MultiCertifiedScorer:
    """One scorer for several certified metrics: certifies **once** per call.

    Dict scoring with one library scorer per metric certifies once per metric
    (scikit-learn cannot cache ``certify``); this scorer certifies once and
    returns a dict, which ``GridSearchCV(scoring=...)`` takes as multi-metric
    scoring. Pick the model with ``refit="<name>"`` (one of ``.names``). Works
    on an estimator or a Pipeline ending in one (see
    :func:`rrise_sklearn.certify`), and warns when a radius is above the
    estimator's :func:`radius_ceiling`.

    Parameters
    ----------
    radii : sequence of float, default=(0.0, 0.25, 0.5)
        Certified accuracy at each; keys ``"certified_accuracy_r<r>"``.
    acr : bool, default=True
        Also the average certified radius (key ``"acr"``).
    abstain_rate : bool, default=False
        Also the fraction of abstentions (key ``"abstain_rate"``).

    Examples
    --------
    >>> from rrise_sklearn.metrics import certified_scorer
    >>> scorer = certified_scorer([0.0, 0.25])
    >>> scorer.names
    ['certified_accuracy_r0', 'certified_accuracy_r0.25', 'acr']
    >>> # GridSearchCV(pipe, grid, scoring=scorer, refit="certified_accuracy_r0.25")
    """
    rr = tuple(float(r) for r in np.atleast_1d(np.asarray(radii, dtype=np.float64)))
    if not rr and not acr and not abstain_rate:
        raise ValueError("certified_scorer needs at least one radius, acr or abstain_rate.")
    if any(not np.isfinite(r) or r < 0 for r in rr):
        raise ValueError(f"radii must be finite radii >= 0; got {radii!r}.")
    if len(set(f"{r:g}" for r in rr)) != len(rr):
        raise ValueError(f"radii must be distinct; got {radii!r}.")
    return _MultiCertifiedScorer(rr, bool(acr), bool(abstain_rate))


def certified_accuracy_scorer(r: float = 0.0) -> _CertifiedScorer:
    """Scorer: certified accuracy at radius ``r`` of ``estimator.certify(X)``.

    Examples
    --------
    >>> from rrise_sklearn.metrics import certified_accuracy_scorer
    >>> certified_accuracy_scorer(0.25)
    certified_accuracy_scorer(r=0.25)
    """
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"r must be a finite radius >= 0; got r={r!r}.")
    return _CertifiedScorer("accuracy", r)


def acr_scorer() -> _CertifiedScorer:
    """Scorer: average certified radius of ``estimator.certify(X)``.

    Examples
    --------
    >>> from rrise_sklearn.metrics import acr_scorer
    >>> acr_scorer()
    acr_scorer()
    """
    return _CertifiedScorer("acr")
