"""Deployment checks of a calibrated surrogate: their reports.

:meth:`RRISESurrogate.verify <rrise_sklearn.RRISESurrogate.verify>` (a one-shot drift
test) returns a :class:`VerificationReport`; :meth:`RRISESurrogate.monitor
<rrise_sklearn.RRISESurrogate.monitor>` (anytime-valid, after every batch) a
:class:`MonitorReport`. The tests behind them are here too: :func:`verification_report`
and :class:`ScoreMonitor`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import exceedance_pvalue

__all__ = ["MonitorReport", "ScoreMonitor", "VerificationReport", "verification_report"]


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :meth:`RRISESurrogate.verify` (deployment drift check).

    Attributes
    ----------
    n_inputs : int
        Inputs checked with fresh Monte Carlo.
    n_certified : int
        Of those, inputs with a positive surrogate radius.
    n_contradicted : int
        Positive-radius certificates whose Monte Carlo lower bound falls below
        the surrogate's calibrated bound (score above the threshold).
    n_exceed : int
        Inputs (certified or not) whose score exceeds the threshold (the
        pooled one with ``mondrian="cap"`` or ``"cap_margin"``); under
        exchangeability at most a fraction ``alpha_conf`` in expectation.
    rate : float
        ``n_exceed / n_inputs``.
    p_value : float
        Probability of at least ``n_exceed`` exceedances if the inputs are
        exchangeable with the calibration set (Beta-Binomial law given the
        calibration; see :func:`~rrise_sklearn.calibration.exceedance_pvalue`).
    alarm : bool
        ``p_value <= level``: recalibrate (the inputs have likely drifted).
    """

    n_inputs: int
    n_certified: int
    n_contradicted: int
    n_exceed: int
    rate: float
    alpha_conf: float
    p_value: float
    alarm: bool


@dataclass
class MonitorReport:
    """State of :meth:`RRISESurrogate.monitor` after a batch (anytime-valid drift alarm).

    Attributes
    ----------
    n_seen : int
        Deployment inputs monitored since the monitor started.
    n_batch : int
        Inputs in this batch.
    n_exceed_batch : int
        Inputs of this batch whose score exceeds the threshold (a diagnostic;
        about ``alpha_conf`` of them without drift).
    martingale : float
        Current value of MAPIE's jumper martingale over the calibration
        scores followed by the deployment scores.
    max_martingale : float
        Its largest value so far.
    threshold : float
        ``1 / level``; crossing it once raises the alarm for good.
    level : float
        False-alarm probability over the whole stream, however often it is
        checked (Ville's inequality).
    alarm : bool
        The martingale crossed the threshold: the deployment scores are not
        exchangeable with the calibration's. Recalibrate.
    """

    n_seen: int
    n_batch: int
    n_exceed_batch: int
    martingale: float
    max_martingale: float
    threshold: float
    level: float
    alarm: bool


def verification_report(
    calibration: Any,
    scores: np.ndarray,
    top: np.ndarray,
    y_hat: np.ndarray,
    level: float,
    scale: np.ndarray | None = None,
) -> VerificationReport:
    """The one-shot drift test of fresh scores against a calibration.

    Parameters
    ----------
    calibration : ConformalCalibration
        The calibration under test.
    scores : ndarray of shape (m,)
        Fresh conformity scores, drawn exactly as the calibration drew its own
        (every stage for every input).
    top, y_hat : ndarray of shape (m,)
        The surrogate's class and capped probit prediction of each input.
    level : float
        False-alarm probability of the test.
    scale : ndarray of shape (m,), optional
        Each input's ``d`` of the adaptive score (``scores`` already divided by
        it); default the calibration's own (ones for the plain score).

    Returns
    -------
    report : VerificationReport
    """
    exceed = scores > calibration.threshold_for(top, y_hat)
    certified = calibration.calibrated_z(top, y_hat, scale) > 0  # the deployed certificates
    tested, law = calibration.drift_test(scores, top, y_hat)
    n_exceed, m = int(tested.sum()), len(scores)
    p_value = exceedance_pvalue(n_exceed, law["m_new"], law["m_cal"], law["rank"])
    return VerificationReport(
        n_inputs=m,
        n_certified=int(certified.sum()),
        n_contradicted=int((exceed & certified).sum()),
        n_exceed=n_exceed,
        rate=n_exceed / m if m else 0.0,
        alpha_conf=float(calibration.alpha_conf),
        p_value=p_value,
        alarm=p_value <= level,
    )


class ScoreMonitor:
    """The running state of ``RRISESurrogate.monitor``: an anytime-valid drift test.

    MAPIE's online exchangeability test (jumper martingale, in ``_monitor``),
    seeded with a calibration's first-stage scores in random order, then fed
    the scores of deployment batches.

    Parameters
    ----------
    calibration_scores : ndarray
        The first-stage scores of the calibration the monitor watches.
    level : float
        False-alarm probability over the whole stream.
    rng : numpy.random.Generator
        Seeds the martingale and the order of the calibration scores.
    calls : int, default=0
        Batches seen by earlier monitors of the same estimator (their noise
        streams are never reused).
    """

    def __init__(
        self, calibration_scores: np.ndarray, level: float, rng: Any, calls: int = 0
    ) -> None:
        from ._monitor import ScoreMartingale  # importing MAPIE takes seconds

        seed_scores = np.asarray(calibration_scores, dtype=float)
        self.key = _scores_key(seed_scores)
        self.test = ScoreMartingale(
            task="regression",
            test_level=level,
            warn=False,
            burn_in=0,
            random_state=int(rng.integers(2**63)),
        )
        self.test.feed(rng.permutation(seed_scores))
        self.calls = calls
        self.seen = 0
        self.start = len(self.test.martingale_value_history)

    def follows(self, calibration_scores: np.ndarray) -> bool:
        """Whether this monitor watches the calibration with these first-stage scores."""
        return self.key == _scores_key(np.asarray(calibration_scores, dtype=float))

    def check_level(self, level: float) -> None:
        if not np.isclose(self.test.test_level, level):
            raise ValueError(
                f"the running monitor uses level={self.test.test_level}; pass that level, or "
                f"reset=True to start a new stream at level={level}."
            )

    def feed(self, scores: np.ndarray, n_exceed: int) -> MonitorReport:
        """Add one batch's scores (``n_exceed`` of them above their thresholds)."""
        test = self.test
        test.feed(scores)
        self.seen += len(scores)
        history = np.asarray(test.martingale_value_history[self.start :] or [1.0])
        return MonitorReport(
            n_seen=self.seen,
            n_batch=len(scores),
            n_exceed_batch=int(n_exceed),
            martingale=float(test.current_martingale_value),
            max_martingale=float(history.max()),
            threshold=float(test.reject_threshold),
            level=float(test.test_level),
            alarm=test.is_exchangeable is False,
        )


def _scores_key(scores: np.ndarray) -> str:
    return hashlib.sha256(scores.tobytes()).hexdigest()
