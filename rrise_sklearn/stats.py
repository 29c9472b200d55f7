"""Statistics of randomized smoothing, vectorized over numpy arrays.

Everything here is a pure numpy/scipy function: no torch, no estimator state.
Three groups:

* **Certifiers** (exact, finite-sample valid): :func:`clopper_pearson_lower`,
  :func:`clopper_pearson_upper`, :func:`radius_from_p_lower`,
  :func:`certified_radius`, :func:`top2_radius`, :func:`predict_test`,
  :func:`max_certifiable_radius`, :func:`anytime_levels`.
* **Planners** (predictions, *never* certificates): :func:`clt_lower`,
  :func:`shore_ppf`, :func:`expected_radius_ratio`, :func:`samples_for_radius`,
  from Seferis, Kollias & Cheng (2024), "Randomized smoothing with 100x sample
  efficiency", arXiv 2404.17371.

All functions broadcast their arguments like numpy ufuncs. A call with only
scalar arguments returns a numpy scalar.

Numerical note: radii near the ceiling of an ``n``-sample certificate need
``PhiInv(p)`` for ``p`` extremely close to 1. We always work with the
complement ``q = 1 - p`` and the inverse *survival* function, ``PhiInv(p) =
norm.isf(q)``, and compute ``q`` directly where we can (``-expm1(log(alpha)/n)``
at ``k = n``, ``beta.isf`` otherwise), so the radius keeps growing with ``n``
up to at least ``1e8`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "anytime_levels",
    "certified_radius",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "clt_lower",
    "expected_radius_ratio",
    "max_certifiable_radius",
    "plan_samples",
    "predict_pvalue",
    "predict_test",
    "radius_from_p_lower",
    "SamplePlan",
    "samples_for_radius",
    "shore_ppf",
    "top2_radius",
]

ArrayLike = Any


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------
def _scalar_or_array(out: np.ndarray) -> Any:
    """Return a numpy scalar for 0-d results, the array otherwise."""
    out = np.asarray(out)
    return out[()] if out.ndim == 0 else out


def _check_alpha(alpha: ArrayLike, name: str = "alpha") -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(a >= 1):
        raise ValueError(
            f"{name} must lie in the open interval (0, 1), e.g. {name}=0.001; got {alpha!r}."
        )
    return a


def _check_sigma(sigma: ArrayLike) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(
            "sigma (the noise standard deviation, in the units of the model's input) must be "
            f"a finite number > 0; got sigma={sigma!r}."
        )
    return s


def _check_integral(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind in "iu":
        return arr.astype(np.float64)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "f":
        raise ValueError(f"{name} must be a number or an array of numbers; got {x!r}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must contain whole numbers (sample counts); got {x!r}.")
    return arr


def _check_n(n: ArrayLike, name: str = "n") -> np.ndarray:
    arr = _check_integral(n, name)
    if np.any(arr < 1):
        raise ValueError(f"{name} (number of samples) must be >= 1; got {name}={n!r}.")
    return arr


def _check_counts(k: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    kk = _check_integral(k, "k")
    nn = _check_n(n)
    if np.any(kk < 0):
        raise ValueError(f"k (the count of the class of interest) must be >= 0; got k={k!r}.")
    if np.any(kk > nn):
        raise ValueError(
            f"k must lie in [0, n] (a count cannot exceed the number of samples); "
            f"got k={k!r}, n={n!r}."
        )
    return kk, nn


def _check_probability(p: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if np.any(np.isnan(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"{name} must be a probability in [0, 1]; got {name}={p!r}.")
    return arr


# ---------------------------------------------------------------------------
# Clopper-Pearson
# ---------------------------------------------------------------------------
def _cp_lower_with_complement(
    k: np.ndarray, n: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper-Pearson lower bound and its complement ``1 - lower``.

    Both are computed directly (not by subtraction) so the complement keeps
    full relative precision when the bound is close to 1.
    """
    k, n, alpha = np.broadcast_arrays(k, n, alpha)
    lower = np.zeros(k.shape, dtype=np.float64)
    comp = np.ones(k.shape, dtype=np.float64)
    full = k == n
    mid = (k > 0) & ~full
    if np.any(full):
        t = np.log(alpha[full]) / n[full]
        lower[full] = np.exp(t)
        comp[full] = -np.expm1(t)
    if np.any(mid):
        km, nm, am = k[mid], n[mid], alpha[mid]
        # lower = Beta(k, n-k+1).ppf(alpha); 1 - X ~ Beta(n-k+1, k).
        lower[mid] = _sps.beta.ppf(am, km, nm - km + 1)
        comp[mid] = _sps.beta.isf(am, nm - km + 1, km)
    return lower, comp


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> Any:
    """One-sided Clopper-Pearson lower confidence bound for a binomial proportion.

    With probability at least ``1 - alpha`` over the draw of ``k ~ Bin(n, p)``,
    the returned bound is ``<= p``. Exact at every ``n`` (conservative, never
    anti-conservative).

    Parameters
    ----------
    k : int or array-like of int
        Number of successes, ``0 <= k <= n``.
    n : int or array-like of int
        Number of trials, ``n >= 1``.
    alpha : float or array-like of float
        Error level in ``(0, 1)``.

    Returns
    -------
    lower : float or ndarray
        ``Beta(k, n - k + 1).ppf(alpha)``; exactly ``0`` at ``k = 0`` and
        exactly ``alpha ** (1 / n)`` at ``k = n``.

    Raises
    ------
    ValueError
        If ``alpha`` is outside ``(0, 1)``, ``n < 1``, ``k < 0``, ``k > n`` or
        the counts are not whole numbers.

    See Also
    --------
    clopper_pearson_upper : the matching upper bound.
    certified_radius : the radius straight from counts.

    Examples
    --------
    >>> from rrise_sklearn.stats import clopper_pearson_lower
    >>> round(float(clopper_pearson_lower(990, 1000, 0.001)), 4)
    0.976
    >>> float(clopper_pearson_lower(10, 10, 0.5)) == 0.5 ** 0.1
    True
    """
    kk, nn = _check_counts(k, n)
    a = _check_alpha(alpha)
    lower, _ = _cp_lower_with_complement(kk, nn, a)
    return _scalar_or_array(lower)


def clopper_pearson_upper(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> Any:
    """One-sided Clopper-Pearson upper confidence bound for a binomial proportion.

    With probability at least ``1 - alpha``, the returned bound is ``>= p``.

    Parameters
    ----------
    k : int or array-like of int
        Number of successes, ``0 <= k <= n``.
    n : int or array-like of int
        Number of trials, ``n >= 1``.
    alpha : float or array-like of float
        Error level in ``(0, 1)``.

    Returns
    -------
    upper : float or ndarray
        ``Beta(k + 1, n - k).isf(alpha)``; exactly ``1`` at ``k = n`` and
        exactly ``1 - alpha ** (1 / n)`` at ``k = 0``.

    Examples
    --------
    >>> from rrise_sklearn.stats import clopper_pearson_upper
    >>> round(float(clopper_pearson_upper(0, 1000, 0.001)), 6)
    0.006884
    """
    kk, nn = _check_counts(k, n)
    a = _check_alpha(alpha)
    # upper(k, n) = 1 - lower(n - k, n) by symmetry of the binomial.
    _, comp = _cp_lower_with_complement(nn - kk, nn, a)
    return _scalar_or_array(comp)


# ---------------------------------------------------------------------------
# radii
# ---------------------------------------------------------------------------
def _radius_from_complement(q: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """sigma * PhiInv(1 - q) where 1 - q > 1/2, else 0."""
    q, sigma = np.broadcast_arrays(q, sigma)
    out = np.zeros(q.shape, dtype=np.float64)
    ok = q < 0.5
    out[ok] = sigma[ok] * _sps.norm.isf(q[ok])
    return out


def radius_from_p_lower(p_lower: ArrayLike, sigma: ArrayLike) -> Any:
    """Certified L2 radius ``sigma * PhiInv(p_lower)`` (Cohen et al. 2019, Theorem 1).

    Parameters
    ----------
    p_lower : float or array-like
        A lower confidence bound on the top-class probability of the smoothed
        classifier, in ``[0, 1]``.
    sigma : float or array-like
        Noise level, ``> 0``, in the units of the model's input space.

    Returns
    -------
    radius : float or ndarray
        ``sigma * PhiInv(p_lower)`` where ``p_lower > 1/2``, else ``0.0``
        (abstain). Computed as ``sigma * norm.isf(1 - p_lower)`` in float64, so
        it does not saturate near ``p_lower = 1``.

    Examples
    --------
    >>> from rrise_sklearn.stats import radius_from_p_lower
    >>> round(float(radius_from_p_lower(0.975, 0.5)), 4)
    0.98
    >>> float(radius_from_p_lower(0.5, 0.5))
    0.0
    """
    p = _check_probability(p_lower, "p_lower")
    s = _check_sigma(sigma)
    return _scalar_or_array(_radius_from_complement(1.0 - p, s))


def certified_radius(k: ArrayLike, n: ArrayLike, alpha: ArrayLike, sigma: ArrayLike) -> Any:
    """Radius of Cohen's CERTIFY from the estimation count of the selected class.

    Equivalent to ``radius_from_p_lower(clopper_pearson_lower(k, n, alpha), sigma)``
    but computes ``1 - p_lower`` directly, so it keeps full precision near the
    ``n``-sample ceiling.

    Parameters
    ----------
    k : int or array-like of int
        Count of the selected class among ``n`` fresh noisy samples.
    n : int or array-like of int
        Number of estimation samples.
    alpha : float or array-like
        Error level of the certificate.
    sigma : float or array-like
        Noise level.

    Returns
    -------
    radius : float or ndarray
        Certified radius, ``0`` where the lower bound is not above ``1/2``.

    Examples
    --------
    >>> from rrise_sklearn.stats import certified_radius, max_certifiable_radius
    >>> r = certified_radius(10_000, 10_000, 0.001, 1.0)
    >>> bool(r == max_certifiable_radius(10_000, 0.001, 1.0))
    True
    """
    kk, nn = _check_counts(k, n)
    a = _check_alpha(alpha)
    s = _check_sigma(sigma)
    _, comp = _cp_lower_with_complement(kk, nn, a)
    return _scalar_or_array(_radius_from_complement(comp, s))


def top2_radius(pa_lower: ArrayLike, pb_upper: ArrayLike, sigma: ArrayLike) -> Any:
    """Top-2 certified radius ``sigma / 2 * (PhiInv(pa_lower) - PhiInv(pb_upper))``.

    Valid when ``pa_lower`` is a lower bound on the top-class probability and
    ``pb_upper`` an upper bound on every other class's probability, each at its
    share of the error budget (e.g. ``alpha / 2`` each).

    Parameters
    ----------
    pa_lower, pb_upper : float or array-like
        Probabilities in ``[0, 1]``.
    sigma : float or array-like
        Noise level, ``> 0``.

    Returns
    -------
    radius : float or ndarray
        The radius, ``0`` where it is not positive.

    Examples
    --------
    >>> from rrise_sklearn.stats import top2_radius, radius_from_p_lower
    >>> bool(abs(top2_radius(0.9, 0.1, 1.0) - radius_from_p_lower(0.9, 1.0)) < 1e-12)
    True
    """
    pa = _check_probability(pa_lower, "pa_lower")
    pb = _check_probability(pb_upper, "pb_upper")
    s = _check_sigma(sigma)
    pa, pb, s = np.broadcast_arrays(pa, pb, s)
    with np.errstate(invalid="ignore"):
        za = _sps.norm.isf(1.0 - pa)
        zb = _sps.norm.ppf(pb)
        r = 0.5 * s * (za - zb)
    r = np.where(np.isnan(r) | (r <= 0), 0.0, r)
    return _scalar_or_array(r)


def max_certifiable_radius(n: ArrayLike, alpha: ArrayLike, sigma: ArrayLike) -> Any:
    """Largest radius any ``n``-sample Clopper-Pearson certificate can give.

    ``sigma * PhiInv(alpha ** (1 / n))``: the radius when all ``n`` samples
    agree. No model, however good, certifies beyond it at this budget.

    Examples
    --------
    >>> from rrise_sklearn.stats import max_certifiable_radius
    >>> [round(float(max_certifiable_radius(n, 0.001, 1.0)), 2) for n in (100, 10_000, 100_000)]
    [1.5, 3.2, 3.81]
    """
    nn = _check_n(n)
    a = _check_alpha(alpha)
    s = _check_sigma(sigma)
    nn, a, s = np.broadcast_arrays(nn, a, s)
    q = -np.expm1(np.log(a) / nn)
    return _scalar_or_array(_radius_from_complement(q, s))


# ---------------------------------------------------------------------------
# PREDICT
# ---------------------------------------------------------------------------
def predict_pvalue(n_a: ArrayLike, n_b: ArrayLike) -> Any:
    """Two-sided binomial-test p-value of ``n_a`` successes in ``n_a + n_b`` at 0.5.

    Matches ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue``, vectorized
    (the null distribution is symmetric, so the p-value is
    ``min(1, 2 * P(X <= min(n_a, n_b)))``). Returns 1 when ``n_a + n_b = 0``.

    Examples
    --------
    >>> from rrise_sklearn.stats import predict_pvalue
    >>> round(float(predict_pvalue(60, 40)), 4)
    0.0569
    """
    a = _check_integral(n_a, "n_a")
    b = _check_integral(n_b, "n_b")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError(f"n_a and n_b must be counts >= 0; got n_a={n_a!r}, n_b={n_b!r}.")
    a, b = np.broadcast_arrays(a, b)
    total = a + b
    p = np.ones(a.shape, dtype=np.float64)
    pos = total > 0
    p[pos] = np.minimum(1.0, 2.0 * _sps.binom.cdf(np.minimum(a, b)[pos], total[pos], 0.5))
    return _scalar_or_array(p)


def predict_test(n_a: ArrayLike, n_b: ArrayLike, alpha: ArrayLike) -> Any:
    """Cohen's PREDICT decision: is the top class significantly ahead of the runner-up?

    Two-sided binomial test of ``n_a`` out of ``n_a + n_b`` against 0.5 (Hung &
    Fithian 2019). ``True`` means "return class A"; ``False`` means abstain.
    The probability of returning a class other than the smoothed classifier's
    is at most ``alpha``. Pass the larger of the two top counts as ``n_a``.

    Parameters
    ----------
    n_a, n_b : int or array-like of int
        Counts of the top and the runner-up class among the same samples.
    alpha : float or array-like
        Level of the test, in ``(0, 1)``.

    Returns
    -------
    decision : bool or ndarray of bool
        ``binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha``.

    Examples
    --------
    >>> from rrise_sklearn.stats import predict_test
    >>> bool(predict_test(90, 10, 0.001)), bool(predict_test(55, 45, 0.001))
    (True, False)
    """
    a = _check_alpha(alpha)
    pv = np.asarray(predict_pvalue(n_a, n_b))
    return _scalar_or_array(pv <= a)


# ---------------------------------------------------------------------------
# anytime-valid schedule (method.md section 2)
# ---------------------------------------------------------------------------
def anytime_levels(n_looks: int, alpha: float) -> np.ndarray:
    """Per-look error levels ``alpha_t = 5 alpha / ((t + 4) (t + 5))``, t = 1, 2, ...

    Their infinite sum is exactly ``alpha`` (telescoping), so testing a
    Clopper-Pearson bound at look ``t`` with level ``alpha_t`` and stopping at
    any look keeps the overall error at most ``alpha`` (union bound).

    Examples
    --------
    >>> from rrise_sklearn.stats import anytime_levels
    >>> lv = anytime_levels(3, 0.001)
    >>> [round(float(x / 0.001), 4) for x in lv]
    [0.1667, 0.119, 0.0893]
    """
    a = float(_check_alpha(alpha))
    if int(n_looks) < 1:
        raise ValueError(f"n_looks must be >= 1; got {n_looks!r}.")
    t = np.arange(1, int(n_looks) + 1, dtype=np.float64)
    return 5.0 * a / ((t + 4.0) * (t + 5.0))


def _anytime_schedule(
    n_start: int, growth: float, max_n: int, alpha: float, final_share: float
) -> tuple[list[int], np.ndarray]:
    """Checkpoints ``n_start, ceil(growth n), ...`` up to ``max_n`` and their per-look levels.

    ``final_share * alpha`` goes to the last look (at ``max_n``) and the rest
    follows :func:`anytime_levels` over the interim looks (``final_share=0``:
    the plain schedule over all looks); the levels sum to at most ``alpha``.
    """
    checkpoints = [int(n_start)]
    while checkpoints[-1] < max_n:
        checkpoints.append(min(int(max_n), int(np.ceil(checkpoints[-1] * growth))))
    if len(checkpoints) == 1:
        levels = np.array([float(alpha)])
    elif final_share == 0:
        levels = anytime_levels(len(checkpoints), alpha)
    else:
        interim = anytime_levels(len(checkpoints) - 1, alpha * (1 - final_share))
        levels = np.append(interim, alpha * final_share)
    return checkpoints, levels


# ---------------------------------------------------------------------------
# planners (arXiv 2404.17371): predictions, never certificates
# ---------------------------------------------------------------------------
def clt_lower(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> Any:
    """Normal-approximation lower bound ``p_hat - z_alpha * sqrt(p_hat (1 - p_hat) / n)``.

    .. warning::
       A **planning tool, not a certifier.** It is not a finite-sample bound:
       at nominal level 0.999 its coverage is about 0.095 for ``p = 0.999``,
       ``n = 100``, and at ``k = n`` it returns 1 (an infinite radius). Use
       :func:`clopper_pearson_lower` for certificates.

    Returns values clipped to ``[0, 1]``.

    Examples
    --------
    >>> from rrise_sklearn.stats import clt_lower
    >>> float(clt_lower(100, 100, 0.001))
    1.0
    """
    kk, nn = _check_counts(k, n)
    a = _check_alpha(alpha)
    p_hat = kk / nn
    z = _sps.norm.isf(a)
    out = p_hat - z * np.sqrt(p_hat * (1.0 - p_hat) / nn)
    return _scalar_or_array(np.clip(out, 0.0, 1.0))


def shore_ppf(p: ArrayLike) -> Any:
    """Shore's approximation of the standard normal quantile.

    ``PhiInv(p) ~ (p ** 0.135 - (1 - p) ** 0.135) / 0.1975``. Good to about 0.01
    on ``[0.5, 0.99]``; underestimates by about 3 % at 0.9999 and 10 % at
    ``1 - 1e-6``. A planning tool only.

    Examples
    --------
    >>> from rrise_sklearn.stats import shore_ppf
    >>> round(float(shore_ppf(0.975)), 2)
    1.97
    """
    pp = _check_probability(p, "p")
    return _scalar_or_array((pp**0.135 - (1.0 - pp) ** 0.135) / 0.1975)


def expected_radius_ratio(n: ArrayLike, alpha: ArrayLike, theta: ArrayLike = 1.64) -> Any:
    """Predicted ratio of the average radius at ``n`` samples to the ideal radius.

    ``1 - theta * z_alpha / sqrt(n)``, clipped at 0 (Seferis et al. 2024). The
    factor ``theta = 1.64`` is *typical*, not a bound: per input it is at least
    1.28 and unbounded as ``p_A -> 1``. Ratios of two budgets are predicted as
    ``expected_radius_ratio(n1) / expected_radius_ratio(n2)``. A prediction,
    not a guarantee.

    Examples
    --------
    >>> from rrise_sklearn.stats import expected_radius_ratio
    >>> round(float(expected_radius_ratio(1000, 0.001)), 3)
    0.84
    """
    nn = _check_n(n)
    a = _check_alpha(alpha)
    th = np.asarray(theta, dtype=np.float64)
    if np.any(~np.isfinite(th)) or np.any(th < 0):
        raise ValueError(f"theta must be a finite number >= 0; got theta={theta!r}.")
    z = _sps.norm.isf(a)
    return _scalar_or_array(np.maximum(0.0, 1.0 - th * z / np.sqrt(nn)))


def _cp_lower_real(k: float, n: float, alpha: float) -> float:
    """Clopper-Pearson lower bound with a real-valued (expected) count."""
    if k <= 0:
        return 0.0
    if k >= n:
        return math.exp(math.log(alpha) / n)
    return float(_sps.beta.ppf(alpha, k, n - k + 1))


def samples_for_radius(
    radius: ArrayLike,
    sigma: ArrayLike,
    p_a: ArrayLike,
    alpha: ArrayLike,
    *,
    max_n: int = 10**10,
) -> Any:
    """Smallest ``n`` whose Clopper-Pearson bound at the expected count reaches ``radius``.

    Planning tool: assumes the count comes out at its expectation
    ``k = p_a * n`` (a real number in the Beta quantile), so it predicts the
    budget for a *typical* run, not a guaranteed one.

    Parameters
    ----------
    radius : float or array-like
        Target radius, ``>= 0``.
    sigma : float or array-like
        Noise level.
    p_a : float or array-like
        Assumed true top-class probability.
    alpha : float or array-like
        Certificate error level.
    max_n : int, default=1e10
        Largest budget considered.

    Returns
    -------
    n : float or ndarray
        The predicted number of samples (a whole number, as float), or ``inf``
        where the radius is out of reach (``p_a <= Phi(radius / sigma)``, or
        more than ``max_n`` samples needed).

    Examples
    --------
    >>> from rrise_sklearn.stats import samples_for_radius
    >>> int(samples_for_radius(0.25, 0.25, 1.0, 0.001))
    40
    """
    r = np.asarray(radius, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"radius must be a finite number >= 0; got radius={radius!r}.")
    s = _check_sigma(sigma)
    p = _check_probability(p_a, "p_a")
    a = _check_alpha(alpha)
    r, s, p, a = np.broadcast_arrays(r, s, p, a)
    out = np.full(r.shape, np.inf)
    for idx in np.ndindex(r.shape):
        target = float(_sps.norm.cdf(r[idx] / s[idx]))
        target = max(target, 0.5)  # a positive radius needs p_lower > 1/2

        def ok(n: int, _p=float(p[idx]), _a=float(a[idx]), _t=target) -> bool:
            return _cp_lower_real(_p * n, n, _a) > _t

        if float(p[idx]) <= target or not ok(max_n):
            continue
        lo, hi = 0, 1
        while not ok(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        out[idx] = hi
    return _scalar_or_array(out)


@dataclass(frozen=True)
class SamplePlan:
    """A recommended Monte Carlo budget. All figures are **predictions**, not guarantees.

    Attributes
    ----------
    n : float
        Recommended number of estimation samples (``inf`` if out of reach).
    predicted_ratio : float
        Predicted average radius at ``n`` relative to ``reference_n``
        (``expected_radius_ratio(n) / expected_radius_ratio(reference_n)``).
    predicted_radius : float
        Radius at ``n`` for an input with top-class probability ``p_a`` whose
        count comes out at its expectation.
    reference_n : int
        The larger budget compared against.
    """

    n: float
    predicted_ratio: float
    predicted_radius: float
    reference_n: int


def plan_samples(
    sigma: float,
    alpha: float,
    *,
    radius: float | None = None,
    radius_loss: float | None = None,
    p_a: float = 0.99,
    reference_n: int = 100_000,
    theta: float = 1.64,
) -> SamplePlan:
    """Recommend a sample budget ``n`` for a target radius or an acceptable radius loss.

    A planning tool built on the predictors of Seferis et al. (2024):

    * ``radius=r``: the smallest ``n`` whose Clopper-Pearson radius at the
      *expected* count of an input with probability ``p_a`` exceeds ``r``
      (:func:`samples_for_radius`);
    * ``radius_loss=eps``: the smallest ``n`` whose predicted average radius
      is at least ``(1 - eps)`` times that at ``reference_n``, from
      ``expected_radius_ratio`` (``1 - theta z_alpha / sqrt(n)``).

    Predictions, not guarantees: a given input's count varies around its
    expectation, and ``theta = 1.64`` is a typical, not a worst-case, factor.
    The certificates themselves stay exact whatever ``n`` is chosen.

    Examples
    --------
    >>> from rrise_sklearn.stats import plan_samples
    >>> plan = plan_samples(0.25, 0.001, radius_loss=0.2, reference_n=10_000)
    >>> int(plan.n), round(plan.predicted_ratio, 3)
    (444, 0.8)
    """
    _check_sigma(sigma)
    _check_alpha(alpha)
    _check_n(reference_n, "reference_n")
    p = float(_check_probability(p_a, "p_a"))
    if (radius is None) == (radius_loss is None):
        raise ValueError("Give exactly one of radius (a target radius) or radius_loss (0-1).")
    ref = float(expected_radius_ratio(reference_n, alpha, theta))
    if radius is not None:
        n = float(samples_for_radius(radius, sigma, p, alpha))
    else:
        if not 0 < radius_loss < 1:
            raise ValueError(f"radius_loss must lie in (0, 1); got {radius_loss!r}.")
        z = float(_sps.norm.isf(alpha))
        denom = 1.0 - (1.0 - radius_loss) * ref
        n = float(math.ceil((theta * z / denom) ** 2 - 1e-9))
    if math.isinf(n):
        return SamplePlan(n, 0.0, 0.0, int(reference_n))
    ratio = float(expected_radius_ratio(n, alpha, theta)) / ref if ref > 0 else 0.0
    r_pred = float(radius_from_p_lower(_cp_lower_real(p * n, n, alpha), sigma))
    return SamplePlan(n, ratio, r_pred, int(reference_n))
