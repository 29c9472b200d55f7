"""The surrogate's fitted calibration: one object, its grouping, and the staged bounds.

:class:`ConformalCalibration` is everything a conformal calibration of
:class:`~rrise_sklearn.RRISESurrogate` fixes: the thresholds, the scores they came
from, how inputs are grouped, the prediction cap and what the calibration is about
(the smoothed classifier's sigma and Monte Carlo level, and a digest of the
surrogate's weights). It is made once by ``conformalize`` and never changed.

How calibration inputs are grouped is resolved once into a grouping object
(:func:`resolve_grouping`): :class:`Pooled` (one threshold), :class:`ByClass`
(one per predicted class) or :class:`CapSplit` (one for inputs predicted at the
prediction cap, one for the others, falling back to the pooled threshold) or
:class:`CapMargin` (the same groups sharing one budget: a margin at the cap). Each
knows which inputs its thresholds depend on (:meth:`Pooled.promote`), how to fit
them and which exceedance law a dataset-level bound or a drift test uses.

:func:`staged_bounds` is the staged Monte Carlo refinement as a pure function: its
only link to Monte Carlo is a ``draw`` callable, so it can be tested on a table.
The statistics are in ``method.md`` section 3; the exact two-group rule in
:func:`rrise_sklearn.calibration.two_group_thresholds`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats
from ._validation import check_nonnegative
from .calibration import (
    cap_margin_thresholds,
    cap_miss_level,
    conformal_rank,
    conformal_threshold,
    mapie_threshold,
    min_calibration_size,
    probit,
    two_group_thresholds,
)
from .ensemble import WeightWatch, state_digest

__all__ = [
    "ByClass",
    "CalibrationViews",
    "CapMargin",
    "CapSplit",
    "ConformalCalibration",
    "Pooled",
    "StaleCalibrationError",
    "cross_check_with_mapie",
    "certifiable_bound",
    "headroom_scale",
    "mc_bound",
    "prediction_cap",
    "resolve_grouping",
    "staged_bounds",
]

# scores at or below this (at the cap) count as ties with the all-correct bound (float noise
# between the cap and a Clopper-Pearson bound of n successes in n)
CAP_TIE = 1e-9


class StaleCalibrationError(ValueError):
    """The surrogate (or its smoothed classifier) changed since it was calibrated."""


def headroom_scale(y_hat: Any, cap: float, coef: float | None) -> np.ndarray:
    """The locally adaptive score's scale ``d = 1 + coef * (cap - y_hat)``.

    ``RRISESurrogate(score_scale=coef)`` divides each calibration score by ``d`` of
    its input and certifies ``y_hat - tau * d``: inputs far below the prediction cap
    (near the decision boundary, where the surrogate's probit errors are largest)
    get a wider margin, inputs near the cap a narrower one. ``d`` is a fixed
    function of the trained surrogate's capped prediction, never of calibration
    data, which is all the guarantee needs (user guide, "The locally adaptive
    score"); ``d >= 1`` since ``y_hat <= cap``. ``coef=None`` (or 0) is the plain
    score, ``d = 1``.

    Examples
    --------
    >>> from rrise_sklearn.conformal import headroom_scale
    >>> headroom_scale([3.35, 2.35, 0.35], cap=3.35, coef=0.5).tolist()
    [1.0, 1.5, 2.5]
    """
    y_hat = np.asarray(y_hat, dtype=np.float64)
    if not coef:
        return np.ones(y_hat.shape)
    return 1.0 + float(coef) * (float(cap) - np.minimum(y_hat, float(cap)))


def certifiable_bound(y_mc: Any, floor: bool = True) -> np.ndarray:
    """A Monte Carlo probit lower bound raised to 0 (``p = 1/2``) where it is below.

    Only certificates with a positive radius can be wrong: a certificate
    ``z = y_hat - tau * d`` is issued when ``z > 0`` and is wrong when it also
    exceeds the true probit ``p*`` of the surrogate's class, i.e. when
    ``z > max(p*, 0)``. On the event ``y_mc <= p*`` (probability at least
    ``1 - alpha_mc``) that implies ``z > max(y_mc, 0)``, so the score
    ``(y_hat - max(y_mc, 0)) / d`` bounds the same event as the plain score and
    is never larger: a calibration input whose surrogate class Monte Carlo puts
    below ``1/2`` (the surrogate picked another class, or an input at the
    decision boundary) scores ``y_hat / d``, not ``(y_hat - y_mc) / d``, and no
    longer inflates the threshold for everyone (user guide, "Only certificates
    that can be wrong count"). ``floor=False``: the bound unchanged (calibrations
    of earlier versions).

    Examples
    --------
    >>> from rrise_sklearn.conformal import certifiable_bound
    >>> certifiable_bound([-1.5, 0.25, 2.0]).tolist()
    [0.0, 0.25, 2.0]
    """
    y_mc = np.asarray(y_mc, dtype=np.float64)
    return np.maximum(y_mc, 0.0) if floor else y_mc


def mc_bound(k: Any, n: int, alpha: float) -> np.ndarray:
    """Clopper-Pearson lower bound of ``k`` successes in ``n`` at ``alpha``, on the probit scale.

    Examples
    --------
    >>> from rrise_sklearn.conformal import mc_bound
    >>> from scipy.stats import beta, norm
    >>> z = mc_bound([990], 1000, 0.001)[0]
    >>> bool(abs(z - norm.ppf(beta.ppf(0.001, 990, 11))) < 1e-9)
    True
    """
    k = np.asarray(k, dtype=np.float64)
    lo, comp = stats._cp_lower_with_complement(k, np.full(len(k), float(n)), np.full(len(k), alpha))
    return probit(lo, comp)


def prediction_cap(n: int, alpha: float) -> float:
    """The largest probit-scale lower bound ``n`` samples can give at ``alpha`` (all successes).

    Examples
    --------
    >>> from rrise_sklearn.conformal import mc_bound, prediction_cap
    >>> bool(abs(prediction_cap(1000, 0.001) - mc_bound([1000], 1000, 0.001)[0]) < 1e-9)
    True
    """
    t = np.log(alpha) / n
    return float(probit(np.exp(t), -np.expm1(t)))


def cross_check_with_mapie(y_hat: Any, y_mc: Any, tau: float, alpha_conf: float) -> None:
    """The order statistic must match MAPIE's one-sided split-conformal bound.

    Our exact order statistic is the source of truth. MAPIE 1.6 picks one
    order statistic more conservative for some sizes (floating-point rounding
    of its level: e.g. ``m`` = 499, 899, 999 at ``alpha_conf=0.05``), so its
    threshold may equal the next larger score; anything else is a bug.

    Raises
    ------
    RuntimeError
        If MAPIE's threshold is neither ``tau`` nor the next larger score.
    """
    m = len(y_hat)
    if m <= min_calibration_size(alpha_conf) or alpha_conf >= 0.5:
        # MAPIE refuses the smallest valid size (where tau is the largest score), and
        # a one-sided bound at alpha_conf >= 1/2 has no two-sided MAPIE equivalent.
        return
    tau_mapie = mapie_threshold(y_hat, y_mc, alpha_conf)
    scores = np.sort(np.asarray(y_hat, dtype=np.float64) - np.asarray(y_mc, dtype=np.float64))
    above = np.searchsorted(scores, tau, side="right")  # the next larger score, if any
    allowed = [tau] + ([float(scores[above])] if above < m else [])
    if not any(np.isclose(tau_mapie, a, rtol=1e-9, atol=1e-9) for a in allowed):
        raise RuntimeError(
            f"Conformal threshold mismatch: order statistic {tau!r}, MAPIE {tau_mapie!r} "
            "(neither equal nor one rank more conservative). Please report this with "
            "your MAPIE version."
        )


def _law(m_new: Any, m_cal: Any, rank: Any) -> dict:
    """One exceedance law (``calibration.exceedance_distribution``'s arguments), as arrays."""
    return {"m_new": np.atleast_1d(m_new), "m_cal": np.atleast_1d(m_cal),
            "rank": np.atleast_1d(rank)}  # fmt: skip


def _pooled_law(m_new: int, m_cal: int, alpha_conf: float, pac_delta: float | None) -> dict:
    return _law(int(m_new), int(m_cal), conformal_rank(int(m_cal), alpha_conf, pac_delta))


# ---------------------------------------------------------------------------
# groupings
# ---------------------------------------------------------------------------
class Pooled:
    """One threshold for every input (optionally a PAC threshold at ``pac_delta``)."""

    name = "pooled"

    def __init__(self, pac_delta: float | None = None) -> None:
        self.pac_delta = pac_delta

    def promote(self, scores: np.ndarray, top: np.ndarray, below: np.ndarray,
                alpha_conf: float) -> np.ndarray:  # fmt: skip
        """The inputs whose scores the thresholds depend on (at or above a threshold)."""
        promote = np.zeros(len(scores), dtype=bool)
        for g in self._groups(top):
            if len(g) == 0:
                continue
            try:
                tau = conformal_threshold(scores[g], alpha_conf, self.pac_delta)
            except ValueError:
                continue  # too few points (Mondrian class): no certificates to tighten
            promote[g[scores[g] >= tau]] = True
        return promote

    def _groups(self, top: np.ndarray) -> list[np.ndarray]:
        return [np.arange(len(top))]

    def fit(self, y_hat: np.ndarray, y_mc: np.ndarray, top: np.ndarray, below: np.ndarray,
            alpha_conf: float) -> dict:  # fmt: skip
        """The thresholds (and the fields of the calibration that say how they were chosen)."""
        scores = y_hat - y_mc
        tau = conformal_threshold(scores, alpha_conf, self.pac_delta)
        if self.pac_delta is None:
            cross_check_with_mapie(y_hat, y_mc, tau, alpha_conf)
        return {"thresholds": np.array([tau])}


class ByClass(Pooled):
    """One threshold per predicted class (Mondrian); a class with too few inputs gets none."""

    name = "class"

    def __init__(self, n_classes: int, pac_delta: float | None = None) -> None:
        super().__init__(pac_delta)
        self.n_classes = int(n_classes)

    def _groups(self, top: np.ndarray) -> list[np.ndarray]:
        return [np.flatnonzero(top == c) for c in range(self.n_classes)]

    def fit(self, y_hat: np.ndarray, y_mc: np.ndarray, top: np.ndarray, below: np.ndarray,
            alpha_conf: float) -> dict:  # fmt: skip
        scores = y_hat - y_mc
        taus = np.full(self.n_classes, np.inf)
        for c in range(self.n_classes):
            sel = top == c
            try:
                taus[c] = conformal_threshold(scores[sel], alpha_conf, self.pac_delta)
            except ValueError:
                continue  # too few points of this class: no certificates for it
            if self.pac_delta is None:
                cross_check_with_mapie(y_hat[sel], y_mc[sel], taus[c], alpha_conf)
        return {"thresholds": taus}


class CapSplit:
    """One threshold for inputs predicted at the prediction cap and one for the rest.

    Each group gets its own threshold when the calibration set plus the new input
    hold enough inputs of both groups, else the pooled one
    (:func:`~rrise_sklearn.calibration.two_group_thresholds`). Group 0 is "at the
    cap", group 1 "below the cap".
    """

    name = "cap"
    pac_delta = None

    def promote(self, scores: np.ndarray, top: np.ndarray, below: np.ndarray,
                alpha_conf: float) -> np.ndarray:  # fmt: skip
        # the thresholds this calibration would deploy: each group's own, or the pooled
        # one (then every input at or above it matters)
        thr, own, pooled = two_group_thresholds(scores, below, alpha_conf)
        promote = np.zeros(len(scores), dtype=bool)
        for j, g in enumerate((np.flatnonzero(~below), np.flatnonzero(below))):
            if own[j]:
                promote[g[scores[g] >= thr[j]]] = True
        return self._with_fallback(promote, scores, below, own, pooled)

    @staticmethod
    def _with_fallback(promote: np.ndarray, scores: np.ndarray, below: np.ndarray,
                       own: np.ndarray, pooled: float) -> np.ndarray:  # fmt: skip
        """Also the scores at or above the pooled threshold when a group falls back to it; never
        a score <= 0 at the cap (it already certifies the cap: more samples would only push
        the threshold below 0, certificates beyond the cap)."""
        if not own.all():
            promote[scores >= pooled] = True
        promote[~below & (scores <= CAP_TIE)] = False
        return promote

    def fit(self, y_hat: np.ndarray, y_mc: np.ndarray, top: np.ndarray, below: np.ndarray,
            alpha_conf: float) -> dict:  # fmt: skip
        scores = y_hat - y_mc
        thr, own, pooled = two_group_thresholds(scores, below, alpha_conf)
        cross_check_with_mapie(y_hat, y_mc, pooled, alpha_conf)
        for j, sel in enumerate((~below, below)):
            if own[j]:
                cross_check_with_mapie(y_hat[sel], y_mc[sel], thr[j], alpha_conf)
        return self._fields(thr, own, pooled, below)

    @staticmethod
    def _fields(thr: np.ndarray, own: np.ndarray, pooled: float, below: np.ndarray) -> dict:
        """The calibration fields of a two-group threshold."""
        return {
            "thresholds": thr,
            "own": own,
            "group_sizes": np.array([int((~below).sum()), int(below.sum())]),
            "pooled_threshold": float(pooled),
        }


class CapMargin(CapSplit):
    """The cap split's groups sharing one budget: a margin at the cap, the rest below.

    Inputs at the prediction cap deduct ``max(margin, own threshold)``; the
    inputs below the cap get the conformal budget the cap leaves unused, at
    most ``below_factor * alpha_conf`` among themselves
    (:func:`~rrise_sklearn.calibration.cap_margin_thresholds`). Same fallback to
    the pooled threshold as :class:`CapSplit`.
    """

    name = "cap_margin"

    def __init__(self, margin: float, below_factor: float = 3.0) -> None:
        self.margin = float(margin)
        self.below_factor = float(below_factor)

    def _thresholds(self, scores: np.ndarray, below: np.ndarray, alpha_conf: float) -> tuple:
        return cap_margin_thresholds(scores, below, alpha_conf, self.margin, self.below_factor)

    def promote(self, scores: np.ndarray, top: np.ndarray, below: np.ndarray,
                alpha_conf: float) -> np.ndarray:  # fmt: skip
        # every score the thresholds read: below the cap, those at or above its threshold;
        # at the cap, those above the margin and at or above q (the quantile that decides
        # the misses; the own threshold is at least q): the staged bounds then equal those
        # of full refinement (user guide, "A margin at the cap")
        thr, own, pooled, _ = self._thresholds(scores, below, alpha_conf)
        promote = np.zeros(len(scores), dtype=bool)
        if own.any():
            at = np.flatnonzero(~below)
            # at or above max(margin, q) (strictly above the margin): the misses and the own
            # threshold (at least q) only read these
            level = cap_miss_level(scores[at], alpha_conf, self.margin)
            promote[at[(scores[at] > self.margin) & (scores[at] >= level)]] = True
            if own[1]:
                b = np.flatnonzero(below)
                promote[b[scores[b] >= thr[1]]] = True
        return self._with_fallback(promote, scores, below, own, pooled)

    def fit(self, y_hat: np.ndarray, y_mc: np.ndarray, top: np.ndarray, below: np.ndarray,
            alpha_conf: float) -> dict:  # fmt: skip
        scores = y_hat - y_mc
        thr, own, pooled, ranks = self._thresholds(scores, below, alpha_conf)
        cross_check_with_mapie(y_hat, y_mc, pooled, alpha_conf)
        return {**self._fields(thr, own, pooled, below), "cap_margin": self.margin,
                "below_factor": self.below_factor, "threshold_ranks": ranks}  # fmt: skip


GROUPINGS = ("pooled", "class", "cap", "cap_margin")


def resolve_grouping(mondrian: Any, pac_delta: float | None, n_classes: int,
                     cap_margin: float = 0.1) -> Pooled | CapSplit:  # fmt: skip
    """The grouping of ``RRISESurrogate(mondrian=...)``, resolved once.

    ``"auto"`` is the margin at the cap, or one threshold with ``pac_delta``; ``False`` one
    threshold; ``"class"`` (or ``True``) one per predicted class; ``"cap"`` the cap
    split; ``"cap_margin"`` the cap split's groups sharing one budget, with
    ``cap_margin`` the least deduction at the cap.

    Examples
    --------
    >>> from rrise_sklearn.conformal import resolve_grouping
    >>> resolve_grouping("auto", None, 10).name, resolve_grouping("auto", 0.05, 10).name
    ('cap_margin', 'pooled')
    """
    if mondrian == "auto":
        mondrian = False if pac_delta is not None else "cap_margin"
    if mondrian == "cap":
        return CapSplit()
    if mondrian == "cap_margin":
        return CapMargin(cap_margin)
    if mondrian is True or mondrian == "class":
        return ByClass(n_classes, pac_delta)
    return Pooled(pac_delta)


# ---------------------------------------------------------------------------
# the staged Monte Carlo bounds
# ---------------------------------------------------------------------------
def staged_bounds(
    k: Any,
    n_first: int,
    stages: list[int],
    alpha_stage: float,
    y_hat: np.ndarray,
    promote: Callable[[np.ndarray], np.ndarray],
    draw: Callable[[np.ndarray, int, int], np.ndarray],
    floor: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Later calibration stages: more samples only where the threshold needs them.

    Repeats until nothing changes: compute the scores ``y_hat - bound`` (the bound
    floored at 0 with ``floor``, :func:`certifiable_bound`); every
    input that ``promote(scores)`` selects and that has not had every stage gets
    the next one (``stages[j]`` fresh samples, ``draw(inputs, j, round)`` returning
    their counts of the surrogate's class). An input's bound is the largest of
    its stages' Clopper-Pearson bounds, each from all its samples so far at
    ``alpha_stage``.

    Why this is valid and loses nothing: had every input had every stage, every
    bound would hold with probability ``1 - alpha_mc`` (union bound over the
    stages, ``alpha_stage = alpha_mc / (1 + len(stages))``) and the scores would be
    exchangeable. An input with fewer stages has a score at least as large, so the
    threshold is never below that of full refinement; and when the loop stops, the
    threshold and every score above it come from inputs with every stage while all
    others lie below, so the threshold *equals* that of full refinement (for these
    draws). ``draw`` must give each (stage, round) noise of its own.

    Parameters
    ----------
    k : array-like of shape (m,)
        First-stage counts of the surrogate's class.
    n_first : int
        First-stage samples per input.
    stages : list of int
        Extra samples of each later stage.
    alpha_stage : float
        Level of each stage's bound.
    y_hat : ndarray of shape (m,)
        The surrogate's (capped) probit-scale predictions.
    promote : callable
        ``promote(scores) -> bool mask``: the inputs the thresholds depend on.
    draw : callable
        ``draw(indices, stage, round) -> counts`` of the surrogate's class.
    floor : bool, default=False
        Score with the bounds floored at 0 (the returned bounds are not floored).

    Returns
    -------
    bounds : ndarray of shape (m,)
        The probit-scale Monte Carlo lower bounds.
    levels : ndarray of shape (m,)
        Later stages each input had.

    Examples
    --------
    A table of counts stands in for Monte Carlo: only the input near the
    threshold gets the second stage.

    >>> import numpy as np
    >>> from rrise_sklearn.conformal import mc_bound, staged_bounds
    >>> k = np.array([1000, 1000, 950])
    >>> y_hat = mc_bound(k, 1000, 0.0005) + [0.0, 0.1, 0.3]
    >>> bounds, levels = staged_bounds(
    ...     k, 1000, [9000], 0.0005, y_hat,
    ...     promote=lambda s: s >= np.max(s), draw=lambda i, j, r: np.full(len(i), 8600))
    >>> levels.tolist()
    [0, 0, 1]
    """
    m = len(y_hat)
    cum = np.cumsum([n_first, *stages])  # samples after each stage
    k = np.asarray(k, dtype=np.int64).copy()
    y_mc = mc_bound(k, n_first, alpha_stage)
    level = np.zeros(m, dtype=np.int64)  # stages after the first each input has had
    rnd = 0
    while stages:
        want = promote(y_hat - certifiable_bound(y_mc, floor)) & (level < len(stages))
        if not want.any():
            break
        for j in np.unique(level[want]):
            sel = np.flatnonzero(want & (level == j))
            k[sel] += np.asarray(draw(sel, int(j), rnd), dtype=np.int64)
            y_mc[sel] = np.maximum(y_mc[sel], mc_bound(k[sel], int(cum[j + 1]), alpha_stage))
            level[sel] = j + 1
        rnd += 1
    return y_mc, level


# ---------------------------------------------------------------------------
# the fitted calibration
# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ConformalCalibration:
    """A fitted conformal calibration of an RRISE surrogate (read-only).

    Made by :meth:`RRISESurrogate.conformalize <rrise_sklearn.RRISESurrogate.conformalize>`
    and held as its ``calibration_``.

    Attributes
    ----------
    grouping : {"pooled", "class", "cap", "cap_margin"}
        How inputs get their threshold.
    alpha_conf : float
        Conformal miscoverage level.
    pac_delta : float or None
        Level of a PAC threshold (``None``: marginal).
    thresholds : ndarray
        One threshold (pooled), one per class index (class; ``inf``: none),
        or ``[at the cap, below the cap]`` (cap, cap_margin).
    scores : ndarray of shape (m,)
        The calibration's conformity scores (after the staged refinement).
    classes : ndarray of shape (m,)
        The surrogate's class index of each calibration input.
    refine_levels : ndarray of shape (m,)
        Later Monte Carlo stages each calibration input had.
    prediction_cap : float
        The largest probit-scale bound the first stage can give; predictions are
        capped there.
    n_samples : int
        First-stage Monte Carlo samples per calibration input.
    stages : tuple of int
        Extra samples of each later stage (``n_refine``).
    setting : dict
        What the calibration is about: ``sigma`` and ``alpha_mc`` of the smoothed
        classifier.
    network_digest : str or None
        SHA-256 of the surrogate's weights when it was calibrated (``None`` in
        model files of format 1, where the file's checksums tie them).
    first_stage_scores : ndarray or None
        Scores of the first stage alone (what ``monitor`` compares with).
    first_stage_alpha : float or None
        Level of the first stage's bounds.
    own, group_sizes, pooled_threshold
        The cap split's (and the margin's): whether each group has its own
        threshold, the groups' sizes and the pooled threshold (``None`` for
        other groupings).
    cap_margin, below_factor, threshold_ranks
        The margin at the cap's (``None`` for other groupings): the least
        deduction at the cap, the most the group below the cap may be wrong
        among itself in units of ``alpha_conf``, and the rank within its group
        of the order statistic each group's law of exceedances uses
        (:func:`~rrise_sklearn.calibration.cap_margin_thresholds`).
    score_scale : float or None
        Coefficient of the locally adaptive score (:func:`headroom_scale`):
        ``scores`` and ``thresholds`` are in units of ``d`` and a certificate is
        ``y_hat - threshold * d``; ``None``: the plain score (``d = 1``; files of
        earlier versions).
    floor_bound : bool
        Whether scores use the Monte Carlo bound raised to 0
        (:func:`certifiable_bound`; every calibration of this version); ``False``
        in files of earlier versions, whose scores used the bound as it was.
    """

    grouping: str
    alpha_conf: float
    pac_delta: float | None
    thresholds: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    refine_levels: np.ndarray
    prediction_cap: float
    n_samples: int
    stages: tuple = ()
    setting: dict = field(default_factory=dict)
    network_digest: str | None = None
    first_stage_scores: np.ndarray | None = None
    first_stage_alpha: float | None = None
    own: np.ndarray | None = None
    group_sizes: np.ndarray | None = None
    pooled_threshold: float | None = None
    score_scale: float | None = None
    floor_bound: bool = False
    cap_margin: float | None = None
    below_factor: float | None = None
    threshold_ranks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}; got {self.grouping!r}.")
        self._check_fields()
        for name in ("thresholds", "scores", "classes", "refine_levels", "first_stage_scores",
                     "own", "group_sizes", "threshold_ranks"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, np.ndarray):
                v = v.copy()
                v.flags.writeable = False  # a fitted calibration is never edited in place
                object.__setattr__(self, name, v)

    def _check_fields(self) -> None:
        """Types and shapes a calibration must have (a model file may say anything)."""

        def arr(name: str, kind: str, size: int | None = None) -> None:
            v = getattr(self, name)
            if not (isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in kind):
                raise ValueError(f"calibration field {name} must be a 1-D array of kind {kind!r}")
            if size is not None and len(v) != size:
                raise ValueError(f"calibration field {name} must have {size} entries")

        m = len(self.scores) if isinstance(self.scores, np.ndarray) else -1
        arr("scores", "f")
        arr("classes", "iu", m)
        arr("refine_levels", "iu", m)
        arr("thresholds", "f", {"pooled": 1, "cap": 2, "cap_margin": 2}.get(self.grouping))
        if self.first_stage_scores is not None:
            arr("first_stage_scores", "f", m)
        for name in ("alpha_conf", "prediction_cap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not (
                np.isfinite(v)
            ):  # fmt: skip
                raise ValueError(f"calibration field {name} must be a finite number")
        if not 0 < self.alpha_conf < 1:
            raise ValueError("calibration field alpha_conf must lie in (0, 1)")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, (int, np.integer)):
            raise ValueError("calibration field n_samples must be an integer")
        if not isinstance(self.setting, dict) or not isinstance(self.stages, tuple):
            raise ValueError("calibration fields setting/stages must be a dict and a tuple")
        check_nonnegative(self.score_scale, "calibration field score_scale")
        if not isinstance(self.floor_bound, (bool, np.bool_)):
            raise ValueError("calibration field floor_bound must be true or false")
        if self.grouping in ("cap", "cap_margin"):
            arr("own", "b", 2)
            arr("group_sizes", "iu", 2)
            if not isinstance(self.pooled_threshold, (int, float, np.floating)):
                raise ValueError("calibration field pooled_threshold must be a number")
        if self.grouping == "cap_margin":
            arr("threshold_ranks", "iu", 2)
            for name, low in (("cap_margin", 0.0), ("below_factor", 1.0)):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not (
                    np.isfinite(v) and v >= low
                ):  # fmt: skip
                    raise ValueError(f"calibration field {name} must be a number >= {low}")
            if ((self.threshold_ranks < 0) | (self.threshold_ranks > self.group_sizes + 1)).any():
                raise ValueError("calibration field threshold_ranks must lie in 0..group size + 1")

    # -- what users read -------------------------------------------------
    @property
    def threshold(self) -> float | np.ndarray:
        """The threshold (a float for one pooled threshold, else the array)."""
        return float(self.thresholds[0]) if self.grouping == "pooled" else self.thresholds

    @property
    def n_calibration(self) -> int:
        """Number of calibration inputs."""
        return len(self.scores)

    @property
    def refined(self) -> np.ndarray:
        """Indices of the calibration inputs refined at least once."""
        return np.flatnonzero(self.refine_levels > 0)

    # -- certificates ----------------------------------------------------
    def below_cap(self, y_hat: np.ndarray) -> np.ndarray:
        """``True`` where the capped prediction is below the prediction cap."""
        return np.asarray(y_hat) < self.prediction_cap

    def threshold_for(self, top: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
        """The calibrated threshold of each input (``y_hat``: capped probit predictions)."""
        if self.grouping == "pooled":
            return np.full(len(top), self.thresholds[0])
        if self.grouping in ("cap", "cap_margin"):
            return self.thresholds[self.below_cap(y_hat).astype(np.int64)]
        return self.thresholds[top]

    def scale(self, y_hat: np.ndarray) -> np.ndarray:
        """The adaptive score's ``d`` of each input (:func:`headroom_scale`; ones by default)."""
        return headroom_scale(y_hat, self.prediction_cap, self.score_scale)

    def conformity_scores(self, y_hat: np.ndarray, y_mc: np.ndarray,
                          scale: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Scores of fresh Monte Carlo bounds, computed as this calibration computed its own:
        ``(y_hat - bound) / d`` with the bound floored at 0 when :attr:`floor_bound`
        (``scale``: each input's ``d``, default :meth:`scale`)."""
        d = self.scale(y_hat) if scale is None else np.asarray(scale, dtype=np.float64)
        y_hat = np.asarray(y_hat, dtype=np.float64)
        return (y_hat - certifiable_bound(y_mc, bool(self.floor_bound))) / d

    def calibrated_z(self, top: np.ndarray, y_hat: np.ndarray,
                     scale: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """``PhiInv`` of the calibrated lower bound of each input: ``y_hat - tau * d``
        (``scale``: each input's ``d``, default :meth:`scale`)."""
        d = self.scale(y_hat) if scale is None else np.asarray(scale, dtype=np.float64)
        return np.asarray(y_hat, dtype=np.float64) - self.threshold_for(top, y_hat) * d

    def check_setting(self, sigma: float, alpha_mc: float) -> None:
        """Refuse a smoothed classifier whose sigma or Monte Carlo level changed.

        Raises
        ------
        StaleCalibrationError
            Naming what changed and how to recalibrate.
        """
        now = {"sigma": float(sigma), "alpha_mc": float(alpha_mc)}
        then = self.setting
        changed = [k for k in then if k in now and not abs(then[k] - now[k]) <= 1e-12 * abs(now[k])]
        if changed:
            what = ", ".join(f"{k}={then[k]!r} then, {now[k]!r} now" for k in changed)
            raise StaleCalibrationError(
                f"This RRISESurrogate was calibrated for a smoothed classifier with other "
                f"settings ({what}); its threshold says nothing about the classifier as it is "
                "now. Restore the smoothed classifier's settings, or recalibrate with "
                "conformalize(X_cal) (refit with fit(X) when sigma changed)."
            )

    # -- the laws of exceedance counts -------------------------------------
    def _exceedance_groups(self, top: np.ndarray) -> dict:
        """Per calibration group: new inputs, calibration inputs, threshold rank.

        A class whose threshold is infinite (too few calibration points) gets
        rank ``m_cal + 1`` (no exceedances possible).
        """
        if self.grouping != "class":
            return _pooled_law(len(top), self.n_calibration, self.alpha_conf, self.pac_delta)
        K = len(self.thresholds)
        m_new = np.bincount(top, minlength=K)
        m_cal = np.bincount(self.classes, minlength=K)
        rank = np.empty(K, dtype=np.int64)
        for c in range(K):
            try:
                rank[c] = conformal_rank(int(m_cal[c]), self.alpha_conf, self.pac_delta)
            except ValueError:
                rank[c] = m_cal[c] + 1
        keep = m_cal > 0  # a class with no calibration point has tau = inf: no exceedances
        return _law(m_new[keep], m_cal[keep], rank[keep])

    def conformal_info(self, top: np.ndarray, y_hat: np.ndarray) -> dict:
        """What a dataset-level bound needs to account for the shared threshold.

        ``conformal_groups``: one law of the exceedance count (or, with
        ``conformal_split``, several whose quantiles add up, each at its share
        of the level). With the cap split a bound must hold whichever
        thresholds the calibration deployed (own or pooled, decided from the
        calibration's group sizes): the group laws hold given the groups, the
        pooled law holds marginally, so each gets half the level, in every
        calibration. With the margin at the cap the two groups' laws are not
        convolved (user guide, "A margin at the cap"): the cap, the inputs below it
        and the pooled law get a third each.
        """
        if self.grouping not in ("cap", "cap_margin"):
            return {"conformal_groups": self._exceedance_groups(top)}
        below = self.below_cap(y_hat)
        own = self.own
        sizes_new = np.array([int((~below).sum()), int(below.sum())])
        sizes_cal = np.asarray(self.group_sizes, dtype=np.int64)
        laws = []
        if own.any():
            j = np.flatnonzero(own)
            if self.grouping == "cap_margin":
                # one law per group, each at its own share: at the cap the exceedances of
                # the group's own threshold (the deduction is at least it); below it, of the
                # order statistic the shared budget picked, which given the groups and the
                # scores at the cap is that rank of i.i.d. scores below the cap (its law
                # holds given them, the cap's only marginally, so they are not convolved)
                ranks = np.asarray(self.threshold_ranks, dtype=np.int64)
                laws += [_law(sizes_new[i], sizes_cal[i], ranks[i]) for i in j]
            else:
                rank = np.array([conformal_rank(int(sizes_cal[i]), self.alpha_conf) for i in j])
                laws.append(_law(sizes_new[j], sizes_cal[j], rank))
        if not own.all():
            # inputs of a group without its own threshold: count every new input against
            # the pooled threshold (at least as many exceedances)
            laws.append(_pooled_law(len(top), self.n_calibration, self.alpha_conf, None))
        if self.grouping == "cap_margin":
            return {"conformal_groups": laws, "conformal_split": 3}
        return {"conformal_groups": laws, "conformal_split": 2}

    def drift_test(self, scores: np.ndarray, top: np.ndarray, y_hat: np.ndarray
                   ) -> tuple[np.ndarray, dict]:  # fmt: skip
        """Which fresh scores a drift test counts, and the law of that count.

        With the cap split the test counts the scores above the pooled threshold:
        computed the same way whichever thresholds the calibration deployed, so its
        law needs no condition. Otherwise the scores above each input's threshold.
        """
        if self.grouping in ("cap", "cap_margin"):
            tested = scores > self.pooled_threshold
            return tested, _pooled_law(len(scores), self.n_calibration, self.alpha_conf, None)
        return scores > self.threshold_for(top, y_hat), self._exceedance_groups(top)


# ---------------------------------------------------------------------------
# the estimator's view of its calibration
# ---------------------------------------------------------------------------
#: the loose calibration attributes of earlier versions -> the calibration's fields
_OLD_ATTRIBUTES = {
    "threshold_groups_": "grouping",
    "threshold_own_": "own",
    "threshold_group_sizes_": "group_sizes",
    "pooled_threshold_": "pooled_threshold",
    "refined_": "refined",
    "first_stage_scores_": "first_stage_scores",
    "first_stage_alpha_": "first_stage_alpha",
    "calibrated_for_": "setting",
    "calibration_classes_": "classes",
    "n_calibration_": "n_calibration",
    "calibration_samples_": "n_samples",
}


class CalibrationViews:
    """An estimator's side of its fitted ``calibration_``: views and the staleness guard.

    ``_check_network`` refuses a network whose weights are not those the
    calibration was made for (its ``module_``).

    ``threshold_``, ``calibration_scores_``, ``prediction_cap_`` and
    ``refine_levels_`` read the calibration's fields; the other loose
    attributes of earlier versions (``pooled_threshold_``, ``n_calibration_``,
    ...) still read, with a ``FutureWarning``, for one release.
    """

    def _calibration(self) -> ConformalCalibration:
        cal = self.__dict__.get("calibration_")
        if cal is None:
            raise AttributeError(
                f"{type(self).__name__} is not calibrated: call conformalize(X_cal)."
            )
        return cal

    threshold_ = property(
        lambda self: self._calibration().threshold,
        doc="Calibrated threshold (``calibration_.threshold``).",
    )
    calibration_scores_ = property(
        lambda self: self._calibration().scores,
        doc="Conformity scores of the calibration set (``calibration_.scores``).",
    )
    prediction_cap_ = property(
        lambda self: self._calibration().prediction_cap,
        doc="The cap of the probit predictions (``calibration_.prediction_cap``).",
    )
    refine_levels_ = property(
        lambda self: self._calibration().refine_levels,
        doc="Later Monte Carlo stages of each calibration input (``calibration_.refine_levels``).",
    )

    def _check_network(self, after_forward: bool = False) -> None:
        """Refuse to certify with a network other than the one calibrated.

        The threshold bounds *this* network's error; after ``partial_fit``, a
        manual weight change or a replaced layer it says nothing. The check is
        cheap when nothing changed: the identity, version counter and storage of
        every weight, remembered after the last full check (a SHA-256 of the
        weights against the calibration's ``network_digest``).
        """
        seen = self.__dict__.get("_network_seen_")
        if seen is not None and seen.unchanged(self.module_, after_forward):
            return
        want = self._calibration().network_digest
        if want is not None and state_digest(self.module_) != want:
            raise StaleCalibrationError(
                "The network changed since calibration (partial_fit, a weight or layer "
                "changed, another module_): the threshold says nothing about it. Recalibrate "
                "with conformalize(X_cal)."
            )
        self._network_seen_ = WeightWatch(self.module_)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_network_seen_", None)  # object identities: meaningless after unpickling
        return state

    def __getattr__(self, name: str) -> Any:
        cal = self.__dict__.get("calibration_")
        if name in _OLD_ATTRIBUTES and cal is not None:
            new = _OLD_ATTRIBUTES[name]
            warnings.warn(
                f"{type(self).__name__}.{name} is deprecated: read calibration_.{new} instead "
                "(removed in the next release).",
                FutureWarning,
                stacklevel=2,
            )
            value = getattr(cal, new)
            if name == "threshold_groups_":
                value = {"pooled": "one"}.get(value, value)  # the names of earlier versions
            if value is not None:
                return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
