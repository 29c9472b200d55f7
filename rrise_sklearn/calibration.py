"""Split-conformal calibration of surrogate certificates (method.md section 3).

Pure functions over numpy arrays; :class:`~rrise_sklearn.RRISESurrogate` calls them.

Scores. For a calibration input with surrogate top-class probability ``h`` and a
fresh Monte Carlo lower bound ``p_low`` on the smoothed classifier's probability
of that class:

* ``"probability"``: ``s = h - p_low``; deployment bound ``p_tilde = h - tau``.
* ``"radius"``: ``s = PhiInv(h) - PhiInv(p_low)``; deployment bound
  ``p_tilde = Phi(PhiInv(h) - tau)``, i.e. radius ``sigma (PhiInv(h) - tau)``.

* ``"headroom"``: on the PhiInv scale, the miss relative to the headroom left
  below a ceiling ``c`` (the largest value the calibration Monte Carlo can
  certify plus an offset): ``s = (PhiInv(h) - PhiInv(p_low)) / (c - PhiInv(h))``;
  deployment bound ``PhiInv(p_tilde) = PhiInv(h) - tau (c - PhiInv(h))``. The
  surrogate's errors shrink as its confidence grows, so a single threshold on
  this scale costs confident inputs less radius than a constant margin.

In every case ``s(x) <= tau`` and ``p_low(x) <= p(x)`` imply ``p(x) >= p_tilde``;
the score is a fixed function of ``x`` and the Monte Carlo evidence, which is all
the split-conformal argument needs.

Threshold. ``tau`` is the ``k``-th smallest of the ``m`` calibration scores with
``k = ceil((m + 1)(1 - alpha_conf))`` (marginal validity, needs
``m >= 1/alpha_conf - 1``), or, for a training-conditional (PAC) guarantee that
holds with probability ``1 - delta`` over the calibration draw, the smallest
``k`` with ``BinomCDF(k - 1; m, 1 - alpha_conf) >= 1 - delta``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as _sps
from scipy.special import ndtri as _ndtri
from sklearn.base import BaseEstimator, RegressorMixin

__all__ = [
    "calibrated_lower",
    "cap_margin_thresholds",
    "cap_miss_level",
    "conformal_rank",
    "conformity_scores",
    "conformal_threshold",
    "exceedance_distribution",
    "exceedance_pvalue",
    "mapie_threshold",
    "min_calibration_size",
    "probit",
    "two_group_thresholds",
]

# PhiInv of the smallest/largest probabilities we let into a score: keeps the
# scores finite (MAPIE rejects infinities) without changing any decision.
_Z_MIN = -38.0


def probit(p: Any, q: Any = None) -> np.ndarray:
    """``PhiInv(p)`` in float64, from ``q = 1 - p`` when given (precise near 1).

    Clipped below at -38 so scores stay finite.

    Examples
    --------
    >>> from rrise_sklearn.calibration import probit
    >>> round(float(probit(0.975)), 3)
    1.96
    """
    p = np.asarray(p, dtype=np.float64)
    q = 1.0 - p if q is None else np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore"):
        # scipy.special.ndtri is what norm.ppf / norm.isf evaluate, without their per-call
        # argument handling (a large part of a one-input certify)
        z = np.where(q < 0.5, -_ndtri(np.clip(q, 0, 1)), _ndtri(np.clip(p, 0, 1)))
    return np.maximum(z, _Z_MIN)


def min_calibration_size(alpha_conf: float, delta: float | None = None) -> int:
    """Smallest calibration set for which the threshold is finite.

    ``ceil(1 / alpha_conf - 1)`` for the marginal threshold; for the PAC
    threshold the smallest ``m`` with ``(1 - alpha_conf) ** m <= delta``.

    Examples
    --------
    >>> from rrise_sklearn.calibration import min_calibration_size
    >>> min_calibration_size(0.01), min_calibration_size(0.01, delta=0.05)
    (99, 299)
    """
    _check_level(alpha_conf, "alpha_conf")
    if delta is None:
        return int(math.ceil(1.0 / alpha_conf - 1.0 - 1e-12))
    _check_level(delta, "delta")
    return int(math.ceil(math.log(delta) / math.log1p(-alpha_conf) - 1e-12))


def _check_level(a: float, name: str) -> None:
    if not isinstance(a, (int, float, np.floating)) or not 0 < a < 1:
        raise ValueError(f"{name} must lie in (0, 1); got {name}={a!r}.")


def conformal_rank(m: int, alpha_conf: float, delta: float | None = None) -> int:
    """1-based rank ``k`` of the score used as threshold among ``m`` scores.

    Raises ``ValueError`` naming the minimum size when ``k > m``.

    Examples
    --------
    >>> from rrise_sklearn.calibration import conformal_rank
    >>> conformal_rank(737, 0.01)
    731
    """
    _check_level(alpha_conf, "alpha_conf")
    if delta is None:
        k = int(math.ceil((m + 1) * (1.0 - alpha_conf) - 1e-9))
    else:
        _check_level(delta, "delta")
        ks = np.arange(1, m + 2)
        ok = _sps.binom.cdf(ks - 1, m, 1.0 - alpha_conf) >= 1.0 - delta
        k = int(ks[np.argmax(ok)]) if ok.any() else m + 1
    if k > m:
        need = min_calibration_size(alpha_conf, delta)
        what = f"alpha_conf={alpha_conf}" + ("" if delta is None else f", delta={delta}")
        raise ValueError(
            f"The calibration set has {m} points; {what} needs at least {need}. Use more "
            "calibration data (calibration_size / conformalize(X_cal)) or a larger alpha_conf."
        )
    return k


def conformal_threshold(scores: Any, alpha_conf: float, delta: float | None = None) -> float:
    """The split-conformal threshold: the ``conformal_rank``-th smallest score.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.calibration import conformal_threshold
    >>> float(conformal_threshold(np.arange(1, 100) / 100, 0.1))
    0.9
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if np.isnan(s).any():
        raise ValueError("scores contain NaN.")
    k = conformal_rank(len(s), alpha_conf, delta)
    return float(s[k - 1])


def two_group_thresholds(
    scores: Any, group: Any, alpha_conf: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Thresholds for two groups of inputs (Mondrian), falling back to one pooled threshold.

    ``group`` must be a fixed function of the input (0 or 1), such as "the
    surrogate's prediction sits at the cap". A new input of group ``g`` gets
    its group's own threshold (the conformal order statistic of that group's
    scores) when the calibration set plus that input hold at least
    ``min_calibration_size(alpha_conf) + 1`` inputs of *each* group, else the
    pooled threshold of all scores.

    Why counting the new input matters: consider the ``m + 1`` inputs
    (calibration and new) as a set, and the new one as a uniform draw from it.
    Whether the groups are large enough is then a property of the set, the
    same whichever input is the new one. When they are, the new input is a
    uniform draw from its own group and its group's threshold covers it with
    probability ``1 - alpha_conf``; when they are not, the pooled threshold
    covers it. Deciding from the calibration counts alone would let the
    decision depend on which input is the new one, and the pooled threshold,
    then used mostly for inputs of the smaller group, could miss them at up to
    about twice ``alpha_conf`` (``tests/test_calibration.py`` shows such a set).

    Parameters
    ----------
    scores : array-like of shape (m,)
        Calibration scores.
    group : array-like of shape (m,) of {0, 1} or bool
        Group of each calibration input.
    alpha_conf : float
        Conformal miscoverage level.

    Returns
    -------
    thresholds : ndarray of shape (2,)
        The threshold of a new input of group 0 and of group 1.
    own : ndarray of shape (2,) of bool
        Whether that threshold is the group's own (``False``: pooled).
    pooled : float
        The pooled threshold of all scores.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.calibration import two_group_thresholds
    >>> rng = np.random.default_rng(0)
    >>> group = np.repeat([0, 1], [300, 700])
    >>> scores = np.where(group == 0, 0.1, 1.0) * rng.random(1000)
    >>> thresholds, own, pooled = two_group_thresholds(scores, group, 0.01)
    >>> own.tolist(), bool(thresholds[0] < 0.1 < pooled)
    ([True, True], True)
    >>> two_group_thresholds(scores[250:], group[250:], 0.01)[1].tolist()  # 50 of group 0
    [False, False]
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(group).ravel().astype(bool).astype(np.int64)
    if len(g) != len(s):
        raise ValueError(f"scores and group differ in length ({len(s)} and {len(g)}).")
    pooled = conformal_threshold(s, alpha_conf)
    need = min_calibration_size(alpha_conf) + 1  # per group, new input included
    sizes = np.bincount(g, minlength=2)
    thresholds = np.full(2, pooled)
    own = np.zeros(2, dtype=bool)
    for j in (0, 1):
        with_new = sizes.copy()
        with_new[j] += 1
        if (with_new >= need).all():
            thresholds[j] = conformal_threshold(s[g == j], alpha_conf)
            own[j] = True
    return thresholds, own, pooled


def cap_miss_level(scores_at_cap: Any, alpha_conf: float, margin: float) -> float:
    """Scores at the cap above this are the margin construction's misses: ``max(margin, q)``,
    ``q`` the ``ceil((1 - alpha_conf) m_cap)``-th smallest of the ``m_cap`` scores at the cap
    (:func:`cap_margin_thresholds`)."""
    at = np.sort(np.asarray(scores_at_cap, dtype=np.float64).ravel())
    return max(float(margin), float(at[int(math.ceil(len(at) * (1.0 - alpha_conf) - 1e-9)) - 1]))


def cap_margin_thresholds(
    scores: Any, below: Any, alpha_conf: float, margin: float, below_factor: float = 3.0
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Two groups sharing one budget: a margin at the prediction cap, the rest below it.

    The cap split (:func:`two_group_thresholds`) spends ``alpha_conf`` in each
    group. When the surrogate is almost never wrong at the cap, the group at the
    cap leaves its budget unused while the inputs below the cap pay their own
    tail. Here the group at the cap (``below`` false) deducts at least a fixed
    ``margin`` and the inputs below the cap get the budget it does not use:

    * at the cap: ``D = max(margin, tau_cap)``, ``tau_cap`` the group's own
      conformal threshold (as in the cap split);
    * below the cap: the conformal order statistic (rank
      ``conformal_rank(m, alpha_conf)``) of all ``m`` scores, where a score at
      the cap becomes ``+inf`` if it exceeds ``max(margin, q)`` (``q``: the
      ``ceil((1 - alpha_conf) m_cap)``-th smallest score at the cap) and
      ``-inf`` otherwise; raised to the below-cap group's own threshold at level
      ``below_factor * alpha_conf``.

    Guarantee (exchangeable calibration and new input; proof in the user guide,
    "A margin at the cap"): a new input's score exceeds its threshold with
    probability at most ``alpha_conf`` overall; at most ``alpha_conf`` among
    inputs at the cap and at most ``below_factor * alpha_conf`` among inputs
    below it. Each group gets its threshold only when the calibration set plus
    the new input hold ``min_calibration_size(alpha_conf) + 1`` inputs of both
    groups, else the pooled threshold (as in :func:`two_group_thresholds`).

    Parameters
    ----------
    scores : array-like of shape (m,)
        Calibration scores.
    below : array-like of shape (m,) of bool
        Whether each calibration input is predicted below the prediction cap.
    alpha_conf : float
        Conformal miscoverage level.
    margin : float
        The least deduction at the cap (``>= 0``, probit units).
    below_factor : float, default=3.0
        The most the group below the cap may be wrong among itself, in units of
        ``alpha_conf`` (``>= 1``).

    Returns
    -------
    thresholds : ndarray of shape (2,)
        The threshold of a new input at the cap and below it.
    own : ndarray of shape (2,) of bool
        Whether that threshold is the group's (``False``: pooled).
    pooled : float
        The pooled threshold of all scores.
    ranks : ndarray of shape (2,)
        1-based rank, within its group's calibration scores, of the order statistic
        each group's law of exceedances uses (``m_group + 1``: infinite; 0 where
        the group gets the pooled threshold): the cap's own threshold (``D`` is
        at least it) and the threshold below the cap.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.calibration import cap_margin_thresholds, two_group_thresholds
    >>> rng = np.random.default_rng(0)
    >>> below = np.repeat([False, True], [600, 400])
    >>> scores = np.where(below, rng.random(1000), -0.5)  # never wrong at the cap
    >>> thr, own, pooled, ranks = cap_margin_thresholds(scores, below, 0.01, margin=0.1)
    >>> split = two_group_thresholds(scores, below, 0.01)[0]
    >>> round(float(thr[0]), 2), bool(thr[1] < split[1])
    (0.1, True)
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    b = np.asarray(below).ravel().astype(bool)
    if len(b) != len(s):
        raise ValueError(f"scores and below differ in length ({len(s)} and {len(b)}).")
    margin = float(margin)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0; got {margin!r}.")
    if not (np.isfinite(below_factor) and below_factor >= 1):
        raise ValueError(f"below_factor must be >= 1; got {below_factor!r}.")
    thresholds, own, pooled = two_group_thresholds(s, b, alpha_conf)
    ranks = np.zeros(2, dtype=np.int64)
    if not own.any():
        return thresholds, own, pooled, ranks
    at, bl = np.sort(s[~b]), np.sort(s[b])
    m_cap, m_b = len(at), len(bl)
    rank_cap = conformal_rank(m_cap, alpha_conf)
    misses = int((at > cap_miss_level(at, alpha_conf, margin)).sum())  # the misses at the cap
    # the order statistic of the transformed scores: m_cap - misses at -inf come first, then
    # the scores below the cap, then the misses at +inf; so it is a below-cap score's rank
    rank_b = conformal_rank(len(s), alpha_conf) - (m_cap - misses)
    rank_b = max(rank_b, conformal_rank(m_b, min(below_factor * alpha_conf, 0.5)))
    if own[0]:
        thresholds[0] = max(margin, float(at[rank_cap - 1]))
        ranks[0] = rank_cap
    if own[1]:
        thresholds[1] = float(bl[rank_b - 1]) if rank_b <= m_b else np.inf
        ranks[1] = rank_b
    return thresholds, own, pooled, ranks


def exceedance_distribution(m_new: Any, m_cal: Any, rank: Any) -> np.ndarray:
    """Law of the number of new scores above the conformal thresholds of several groups.

    In one group, ``m_cal`` calibration scores and ``m_new`` new scores are
    exchangeable and continuous; the threshold is the ``rank``-th smallest
    calibration score. Given the calibration draw, each new score exceeds it
    with probability ``1 - F(tau)``, and ``F(tau)`` follows ``Beta(rank,
    m_cal + 1 - rank)``; so the count of exceedances is
    ``BetaBinomial(m_new, m_cal + 1 - rank, rank)`` (not ``Binomial(m_new,
    alpha_conf)``: all new scores share the one threshold). Groups (e.g. the
    classes of a Mondrian calibration) are independent given their sizes; the
    total is the convolution. With ties or with a threshold that is at least the
    exchangeable one, the count is stochastically smaller, so tail
    probabilities from this law stay valid (conservative).

    Parameters
    ----------
    m_new, m_cal, rank : int or array-like of int
        Per group: new scores, calibration scores, 1-based rank of the
        threshold. A group with ``rank > m_cal`` has an infinite threshold and
        contributes no exceedances.

    Returns
    -------
    pmf : ndarray of shape (sum(m_new) + 1,)
        ``pmf[j] = P(total exceedances = j)``.

    Examples
    --------
    >>> from rrise_sklearn.calibration import exceedance_distribution
    >>> pmf = exceedance_distribution(1, 19, 19)  # one new score, tau = max of 19
    >>> [round(float(v), 4) for v in pmf]
    [0.95, 0.05]
    """
    m_new, m_cal, rank = (
        np.atleast_1d(np.asarray(a, dtype=np.int64)) for a in (m_new, m_cal, rank)
    )
    if not (m_new.shape == m_cal.shape == rank.shape) or m_new.ndim != 1:
        raise ValueError("m_new, m_cal and rank must have one entry per group.")
    if np.any(m_new < 0) or np.any(m_cal < 1) or np.any(rank < 1):
        raise ValueError("m_new must be >= 0 and m_cal, rank >= 1.")
    pmf = np.ones(1)
    for mn, mc, k in zip(m_new.tolist(), m_cal.tolist(), rank.tolist(), strict=True):
        if mn == 0 or k > mc:
            part = np.zeros(mn + 1)
            part[0] = 1.0
        else:
            part = _sps.betabinom.pmf(np.arange(mn + 1), mn, mc + 1 - k, k)
        pmf = np.convolve(pmf, part)
    return pmf


def exceedance_pvalue(n_exceed: int, m_new: Any, m_cal: Any, rank: Any) -> float:
    """P(at least ``n_exceed`` exceedances) under :func:`exceedance_distribution`.

    The p-value of a one-shot test that new scores are exchangeable with the
    calibration scores (no drift); small values mean more scores exceed the
    threshold than exchangeability allows.

    Examples
    --------
    >>> from rrise_sklearn.calibration import exceedance_pvalue
    >>> round(exceedance_pvalue(60, 500, 49, 45), 3)  # 12 % of 500 against alpha_conf = 0.1
    0.298
    """
    pmf = exceedance_distribution(m_new, m_cal, rank)
    if n_exceed <= 0:
        return 1.0
    if n_exceed >= len(pmf):
        return 0.0
    return float(min(1.0, pmf[int(n_exceed) :].sum()))


SCORES = ("radius", "probability", "headroom")


def conformity_scores(
    y_hat: Any, y_mc: Any, kind: str = "radius", ceiling: float | None = None
) -> np.ndarray:
    """Conformity scores of calibration inputs.

    Parameters
    ----------
    y_hat : array-like
        The surrogate's prediction on the score scale (PhiInv of its top-class
        probability, or the probability itself for ``"probability"``).
    y_mc : array-like
        The Monte Carlo lower bound on the same scale.
    kind : {"radius", "probability", "headroom"}
    ceiling : float, optional
        ``c`` of the ``"headroom"`` score; must exceed every ``y_hat``.

    Examples
    --------
    >>> from rrise_sklearn.calibration import conformity_scores
    >>> conformity_scores([2.0, 3.0], [1.5, 3.25], "headroom", ceiling=4.0).tolist()
    [0.25, -0.25]
    """
    y_hat = np.asarray(y_hat, dtype=np.float64)
    diff = y_hat - np.asarray(y_mc, dtype=np.float64)
    if kind in ("radius", "probability"):
        return diff
    if kind != "headroom":
        raise ValueError(f"kind must be one of {SCORES}; got {kind!r}.")
    room = _headroom(y_hat, ceiling)
    return diff / room


def calibrated_lower(
    y_hat: Any, tau: Any, kind: str = "radius", ceiling: float | None = None
) -> np.ndarray:
    """The calibrated lower bound (score scale): largest ``y`` with score(y_hat, y) <= tau.

    Examples
    --------
    >>> from rrise_sklearn.calibration import calibrated_lower, conformity_scores
    >>> float(calibrated_lower(2.0, 0.25, "headroom", ceiling=4.0))
    1.5
    """
    y_hat = np.asarray(y_hat, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    if kind in ("radius", "probability"):
        return y_hat - tau
    if kind != "headroom":
        raise ValueError(f"kind must be one of {SCORES}; got {kind!r}.")
    return y_hat - tau * _headroom(y_hat, ceiling)


def _headroom(y_hat: np.ndarray, ceiling: float | None) -> np.ndarray:
    if ceiling is None or not np.all(y_hat < ceiling):
        raise ValueError(
            f"the headroom score needs a ceiling above every prediction; got {ceiling!r}."
        )
    return ceiling - y_hat


class _ScorePredictor(RegressorMixin, BaseEstimator):
    """Prefit regressor for MAPIE: row ``i`` of ``X`` is an index into ``y_hat``.

    MAPIE's ``SplitConformalRegressor`` wants a fitted sklearn regressor with
    float64 1-D predictions; the surrogate's predictions on the calibration set
    are computed once and served by index.
    """

    def __init__(self, y_hat: np.ndarray | None = None) -> None:
        self.y_hat = y_hat

    def fit(self, X: Any, y: Any = None) -> _ScorePredictor:
        self.n_features_in_ = 1
        return self

    def predict(self, X: Any) -> np.ndarray:
        idx = np.asarray(X).astype(np.int64).ravel()
        return np.asarray(self.y_hat, dtype=np.float64)[idx]


def mapie_threshold(y_hat: Any, y: Any, alpha_conf: float, ceiling: float | None = None) -> float:
    """The same threshold through MAPIE's one-sided split-conformal regression.

    One-sided lower bound of ``y`` (the Monte Carlo quantity) from the
    prediction ``y_hat`` (the surrogate's), with MAPIE 1.x's
    ``SplitConformalRegressor(prefit=True,
    conformity_score=AbsoluteConformityScore(sym=False),
    confidence_level=1 - 2 alpha_conf)``: its lower bound is
    ``y_hat - tau``, so ``tau = y_hat - lower``.

    With ``ceiling`` (the ``"headroom"`` score) the same regression is posed
    on the headroom ``c - y`` predicted by ``c - y_hat`` with MAPIE's
    ``GammaConformityScore`` (``(y - y_hat) / y_hat`` there), whose one-sided
    upper bound is ``(c - y_hat)(1 + tau)``.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.calibration import mapie_threshold, conformal_threshold
    >>> rng = np.random.default_rng(0)
    >>> y_hat = rng.uniform(size=200); y = y_hat - rng.uniform(size=200) ** 2
    >>> abs(mapie_threshold(y_hat, y, 0.05) - conformal_threshold(y_hat - y, 0.05)) < 1e-9
    True
    """
    from mapie.conformity_scores import AbsoluteConformityScore, GammaConformityScore
    from mapie.regression import SplitConformalRegressor

    y_hat = np.asarray(y_hat, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    conformal_rank(len(y), alpha_conf)  # our clear error first
    idx = np.arange(len(y), dtype=np.float64).reshape(-1, 1)
    if ceiling is None:
        score, pred, target = AbsoluteConformityScore(sym=False), y_hat, y
    else:
        score, pred, target = GammaConformityScore(), _headroom(y_hat, ceiling), ceiling - y
    reg = _ScorePredictor(pred).fit(idx, target)
    scr = SplitConformalRegressor(
        reg,
        confidence_level=1.0 - 2.0 * alpha_conf,
        conformity_score=score,
        prefit=True,
    )
    scr.conformalize(idx, target)
    _, intervals = scr.predict_interval(idx[:1])
    if ceiling is None:
        return float(y_hat[0] - np.asarray(intervals)[0, 0, 0])
    return float(np.asarray(intervals)[0, 1, 0] / pred[0] - 1.0)
