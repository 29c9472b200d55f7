"""RRISESurrogate: certification in one forward pass, conformally calibrated.

A surrogate network learns the smoothed classifier's Monte Carlo class
frequencies (soft-label cross-entropy); a one-time split-conformal calibration
turns its outputs into conservative radii (method.md section 3).
"""

from __future__ import annotations

import copy
import time
import warnings
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr as _ndtr
from sklearn.base import ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from skorch import NeuralNet

from ._draws import (
    AUGMENT,
    BASE,
    CALIB,
    MONITOR,
    SPLIT,
    TARGETS,
    TRAIN,
    VERIFY,
    VERIFY_REFINE,
    SurrogateDraws,
)
from ._validation import (
    check_count,
    check_level,
    check_nonnegative,
    check_share,
    check_stages,
    fill_missing_params,
    flat_rows,
    inferred_module_kwargs,
    refine_stages,
    through,
    validate_inputs,
    warn_if_off_scale,
)
from .calibration import conformal_rank, probit
from .conformal import (
    CalibrationViews,
    ConformalCalibration,
    StaleCalibrationError,
    certifiable_bound,
    headroom_scale,
    mc_bound,
    prediction_cap,
    resolve_grouping,
    staged_bounds,
)
from .ensemble import MeanLogProbEnsemble, fit_members, state_digest
from .metrics import certified_accuracy
from .monitoring import MonitorReport, ScoreMonitor, VerificationReport, verification_report
from .nets import JensenShannonLoss  # noqa: F401  (its old home, for one release)
from .pipeline import input_scale, warn_if_stretched
from .results import CertificationResult
from .sampling import check_distinct_streams, resolve_seed
from .smoothing import SmoothedClassifier, build_module, check_device, eval_forward

__all__ = [
    "MonitorReport",
    "RRISESurrogate",
    "StaleCalibrationError",
    "VerificationReport",
]

GROUPING_NAMES = ("auto", "class", "cap", "cap_margin")

# the conformity score: the surrogate's miss on the PhiInv scale (method.md section 3);
# the headroom and probability scores of rrise_sklearn.calibration measured worse here
_SCORE = "radius"


#: constructor options removed in 0.2, and what to use instead (a TypeError says so)
_REMOVED_OPTIONS = {
    "loss": "for loss='js' pass criterion=rrise_sklearn.nets.JensenShannonLoss (the same "
    "training); the default is the soft-label cross-entropy.",
    "calibrate": "the uncalibrated baseline of calibrate=False (no guarantee) is one line: "
    "sigma * scipy.stats.norm.ppf(sur.predict_proba(X).max(axis=1)).",
    "refine_size": "it changed the cost, not the threshold, since the staged refinement "
    "(n_refine draws later stages where the threshold needs them); drop it.",
    "augment_scale": "the noisy copies of n_augment use the smoothing sigma; drop it.",
}


def _check_held_out(X_cal: np.ndarray, X_train: np.ndarray, what: str) -> None:
    """Calibration inputs must not be training inputs: error if most are, warn if some are.

    A few exact repeats can be natural (data sets with duplicate images); the
    same array passed twice is the mistake this catches.
    """
    if len(X_cal) == 0 or len(X_train) == 0 or X_cal.shape[1:] != X_train.shape[1:]:
        return
    train = {r.tobytes() for r in flat_rows(X_train)}
    n_same = sum(r.tobytes() in train for r in flat_rows(X_cal))
    if n_same == 0:
        return
    msg = (
        f"{n_same} of the {len(X_cal)} calibration inputs are identical to {what}. "
        "Calibration inputs must be held out from both trainings, or the guarantee does not "
        "hold: pass inputs that trained neither network."
    )
    if n_same > len(X_cal) / 2:
        raise ValueError(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)


def _split_pipeline(smoothed: Any) -> tuple[Any, Any]:
    """``(preprocessing or None, smoothed classifier)`` of a SmoothedClassifier or a fitted
    Pipeline ending in one."""
    steps = getattr(smoothed, "steps", None)
    if not steps:
        return None, smoothed
    last = _unwrap(steps[-1][1])
    if not isinstance(last, SmoothedClassifier):
        raise TypeError(
            "A Pipeline given as smoothed must end in a SmoothedClassifier; its last step is "
            f"{type(last).__name__}."
        )
    prep = smoothed[:-1]
    if not last.__sklearn_is_fitted__():
        raise ValueError(
            "The Pipeline given as smoothed is not fitted: fit it first (pipe.fit(X, y)); the "
            "surrogate takes its preprocessing and its SmoothedClassifier as they are."
        )
    return prep, last


def _unwrap(smoothed: Any) -> Any:
    inner = getattr(smoothed, "estimator", None)
    if inner is not None and type(smoothed).__name__ == "FrozenEstimator":
        return inner
    return smoothed


class RRISESurrogate(CalibrationViews, ClassifierMixin, NeuralNet):
    """One-forward-pass certifier: a surrogate of a smoothed classifier, conformally calibrated.

    Guarantee: for an input exchangeable with the calibration set,
    ``P(radius > 0 and the certificate is wrong) <= alpha_conf + alpha_mc``
    (marginally over the calibration draw and the input; with ``pac_delta``
    the ``alpha_conf`` part holds with probability ``1 - pac_delta`` over the
    calibration draw). "Wrong" means the smoothed classifier's class differs
    from the certified class or is not constant on the certified ball. It
    holds for the network that was calibrated: after ``partial_fit`` or any
    change of the weights, certification refuses until :meth:`conformalize`.
    What each setting measured: the user guide and ``benchmarks/README.md``.

    Parameters
    ----------
    smoothed : SmoothedClassifier, Pipeline or FrozenEstimator
        The smoothed classifier to imitate. A fitted one (``FrozenEstimator``
        keeps it fitted through ``clone``) is used as is; an unfitted one is
        fitted on a ``smoothed_size`` part of ``X`` (needs ``y``). A fitted
        Pipeline ending in a SmoothedClassifier: its preprocessing
        (``preprocessing_``) is applied to every input the surrogate takes
        (``fit``, ``conformalize``, ``certify``, ...), so it certifies raw
        inputs and saves as one model; radii are in the SmoothedClassifier's
        input space (:func:`rrise_sklearn.certify` also gives them in raw
        units).
    module : torch module class or instance, default=None
        Surrogate network. ``None`` copies the smoothed classifier's base
        network, weights included (the best measured initialization).
    n_targets : int or None, default=2000
        Monte Carlo samples per training target (``None``: the smoothed
        classifier's ``n``).
    n_augment : int, default=32
        Noisy copies ``x + N(0, sigma^2 I)`` of every training input, each
        with its own Monte Carlo target (``(1 + n_augment) * n_targets``
        samples per training input).
    n_calibration : int or None, default=20_000
        Monte Carlo samples of every calibration input in the first stage
        (``None``: the smoothed classifier's ``n``). It sets the cap of the
        predictions (:attr:`prediction_cap_`, at ``alpha_mc`` divided by the
        number of stages; ``3.35`` with the defaults); no radius exceeds
        ``sigma * (prediction_cap_ - threshold)``.
    n_refine : int, list of int or None, default=(200_000, 1_000_000)
        Later Monte Carlo stages at calibration, drawn only where the threshold
        needs them (:func:`~rrise_sklearn.conformal.staged_bounds`; ``None``:
        one stage), each bound at ``alpha_mc`` over the number of stages.
    alpha_conf : float, default=0.01
        Conformal miscoverage level.
    alpha_mc : float, default=None
        Level of the calibration Clopper-Pearson bounds; default the smoothed
        classifier's ``alpha``.
    calibration_size : float or int, default=0.25
        Part of ``X`` held out for calibration when the surrogate must train
        on part of ``X`` (see :meth:`fit`).
    smoothed_size : float, default=0.5
        Part of ``X`` used to fit an unfitted ``smoothed``.
    mondrian : {"auto", False, "class", "cap", "cap_margin"}, default="auto"
        Groups with their own threshold
        (:func:`~rrise_sklearn.conformal.resolve_grouping`): ``False`` one
        threshold; ``"class"`` one per predicted class; ``"cap"`` inputs
        predicted at the cap and the others, with the pooled threshold as
        fallback; ``"cap_margin"`` the same groups sharing one budget: inputs
        at the cap deduct at least ``cap_margin`` and the others get the
        budget the cap leaves unused, at most ``3 * alpha_conf`` among themselves
        (user guide, "A margin at the cap"); ``"auto"`` is ``"cap_margin"``,
        or ``False`` with ``pac_delta``.
    pac_delta : float, default=None
        If set, a training-conditional threshold valid with probability
        ``1 - pac_delta`` over the calibration draw.
    score_scale : float or None, default=None
        The locally adaptive score: each calibration score is divided by
        ``d = 1 + score_scale * (prediction_cap_ - y_hat)`` of its input and a
        certificate is ``y_hat - threshold * d``
        (:func:`~rrise_sklearn.conformal.headroom_scale`), so inputs far below
        the cap, where the surrogate's errors are largest, get a wider margin
        and those near it a narrower one. Same guarantee (user guide);
        ``None``: the plain score.
    cap_margin : float, default=0.1
        With ``mondrian="cap_margin"``: the least probit-scale deduction of an
        input predicted at the cap (the radius ceiling is
        ``sigma * (prediction_cap_ - max(cap_margin, own threshold))``).
    n_members : int, default=5
        Networks in the surrogate's ensemble
        (:class:`~rrise_sklearn.ensemble.MeanLogProbEnsemble`), each with its own
        training seed, calibrated as one network.
    score_radius : float, default=0.0
        ``score`` returns the certified accuracy at this radius.
    random_state : int or None, default=None
        Seeds the splits, the Monte Carlo calls and the training.
    cache_dir : str, optional
        Keep the Monte Carlo counts here in chunks: a killed ``fit`` resumes
        and gives the same surrogate. Needs an int ``random_state``.
    verbose : int, default=0
        Drives the surrogate's own Monte Carlo phases (the wrapped classifier's
        ``verbose`` is not used for them): ``1``: progress bars labelled
        "targets n=...", "calibration n=...", "calibration stage k n=...",
        "verify n=...", and the estimated time of each phase expected to take
        over a minute (a warning above an hour); ``2``: also the epoch log.
    **kwargs
        skorch parameters (``lr``, ``max_epochs``, ``batch_size``,
        ``optimizer``, ``criterion``, ``callbacks``, ``device``,
        ``module__*``, ...).

    Attributes
    ----------
    smoothed_ : SmoothedClassifier
        The fitted smoothed classifier.
    calibration_ : ConformalCalibration
        The fitted calibration, read-only: thresholds, scores, grouping, cap,
        and the sigma, ``alpha_mc`` and weights it was made for.
    threshold_, calibration_scores_, prediction_cap_, refine_levels_
        Read-only views of ``calibration_``'s fields.
    train_inputs_, train_counts_ : ndarray
        Surrogate training inputs (with noisy copies) and their Monte Carlo
        counts; pass them to another ``fit`` to reuse them.
    amortization_ : dict
        Measured seconds (targets, training, calibration, per-query Monte Carlo
        and surrogate certification) and the break-even number of queries.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from rrise_sklearn import SmoothedClassifier, RRISESurrogate
    >>> from rrise_sklearn.nets import MLP
    >>> X, y = make_moons(1200, noise=0.1, random_state=0)
    >>> smoothed = SmoothedClassifier(MLP, sigma=0.25, lr=1e-2, max_epochs=20,
    ...                               module__hidden=32, n=500, random_state=0)
    >>> # sample sizes lowered so that the example runs in seconds (see the defaults)
    >>> sur = RRISESurrogate(smoothed, n_targets=500, n_augment=1, n_calibration=2000,
    ...                      n_refine=20_000, n_members=2, alpha_conf=0.05,
    ...                      max_epochs=5, random_state=0).fit(X, y)
    >>> prediction, radius = sur.certify(X[:5])
    >>> bool((radius >= 0).all())
    True
    """

    def __init__(
        self,
        smoothed: Any,
        module: Any = None,
        *,
        n_targets: int | None = 2000,
        n_augment: int = 32,
        n_calibration: int | None = 20_000,
        n_refine: int | tuple | list | None = (200_000, 1_000_000),
        alpha_conf: float = 0.01,
        alpha_mc: float | None = None,
        calibration_size: float | int = 0.25,
        smoothed_size: float = 0.5,
        mondrian: bool | str = "auto",
        pac_delta: float | None = None,
        score_scale: float | None = None,
        cap_margin: float = 0.1,
        n_members: int = 5,
        score_radius: float = 0.0,
        random_state: Any = None,
        cache_dir: str | None = None,
        criterion: Any = torch.nn.CrossEntropyLoss,
        optimizer: Any = torch.optim.Adam,
        lr: float = 1e-3,
        max_epochs: int = 20,
        batch_size: int = 256,
        train_split: Any = None,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        if isinstance(smoothed, torch.nn.Module):
            raise TypeError(
                "smoothed must be a SmoothedClassifier, not a torch module: wrap the network "
                "first, e.g. SmoothedClassifier(net, sigma=0.25).fit(X, y), or "
                "SmoothedClassifier(net, classes=[...]).initialize() for a trained one."
            )
        for name in _REMOVED_OPTIONS.keys() & kwargs.keys():
            raise TypeError(f"RRISESurrogate: {name} was removed; {_REMOVED_OPTIONS[name]}")
        # shuffle training batches unless told otherwise (skorch's DataLoader does not)
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            verbose=verbose,
            **kwargs,
        )
        self.smoothed = smoothed
        self.n_targets = n_targets
        self.n_augment = n_augment
        self.n_calibration = n_calibration
        self.n_refine = n_refine
        self.alpha_conf = alpha_conf
        self.alpha_mc = alpha_mc
        self.calibration_size = calibration_size
        self.smoothed_size = smoothed_size
        self.mondrian = mondrian
        self.pac_delta = pac_delta
        self.score_scale = score_scale
        self.cap_margin = cap_margin
        self.n_members = n_members
        self.score_radius = score_radius
        self.random_state = random_state
        self.cache_dir = cache_dir

    def __setstate__(self, state: dict) -> None:
        # a pickle of an earlier version lacks the parameters added since (score_scale,
        # cap_margin, ...): they get their defaults; the fitted calibration is kept as it was
        super().__setstate__(fill_missing_params(type(self), state))

    # ------------------------------------------------------------------
    # skorch hooks
    # ------------------------------------------------------------------
    @property
    def _default_callbacks(self) -> list:
        from skorch.callbacks import EpochTimer, PassthroughScoring

        from .callbacks import EpochLog

        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("print_log", EpochLog()),
        ]

    def initialize(self) -> RRISESurrogate:
        check_device(self.device)
        return super().initialize()

    def initialize_criterion(self) -> RRISESurrogate:
        """skorch's, then a criterion that asks for ``n_samples`` (``None``) gets the samples
        behind each training target (e.g. :class:`~rrise_sklearn.nets.ProbitTailLoss`)."""
        super().initialize_criterion()
        if getattr(self.criterion_, "n_samples", 0) is None:
            n = self.__dict__.get("target_samples_")
            if n is None and hasattr(self, "smoothed_"):
                n = int(self.n_targets or self.smoothed_.n)
            self.criterion_.n_samples = n
        return self

    def initialize_module(self) -> RRISESurrogate:
        """A copy of the base network (``module=None``) or the given module."""
        if self.module is None:
            smoothed = getattr(self, "smoothed_", None)
            if smoothed is None:
                raise NotFittedError("RRISESurrogate needs a fitted smoothed classifier first.")
            self.module_ = copy.deepcopy(smoothed.module_)
            return self
        self.module_ = build_module(self)
        return self

    # ------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------
    def _check_params(self) -> None:
        """Check the surrogate's own parameters (skorch checks its own at initialize)."""
        check_count(self.n_targets, "n_targets", none_ok=True)
        check_count(self.n_calibration, "n_calibration", none_ok=True)
        check_stages(self.n_refine, "n_refine")
        check_share(self.calibration_size, "calibration_size", count_ok=True)
        check_share(self.smoothed_size, "smoothed_size")
        check_count(self.n_members, "n_members")
        check_count(self.n_augment, "n_augment", minimum=0)
        check_level(self.alpha_conf, "alpha_conf")
        check_level(self.alpha_mc, "alpha_mc", none_ok=True)
        check_level(self.pac_delta, "pac_delta", none_ok=True)
        if self.cache_dir is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(
                "cache_dir needs an int random_state (e.g. random_state=0): a rerun after a crash "
                f"must draw the same noise to reuse finished chunks; got {self.random_state!r}."
            )
        if not (isinstance(self.mondrian, (bool, np.bool_)) or self.mondrian in GROUPING_NAMES):
            raise ValueError(
                f"mondrian must be 'auto', False, 'class', 'cap' or 'cap_margin'; got "
                f"{self.mondrian!r}."
            )
        if self.mondrian is True:
            warnings.warn("mondrian=True is deprecated: pass mondrian='class' (the same grouping).",
                          FutureWarning, stacklevel=3)  # fmt: skip
        check_nonnegative(self.score_scale, "score_scale")
        if self.mondrian in ("cap", "cap_margin") and self.pac_delta is not None:
            raise ValueError(
                f"mondrian={self.mondrian!r} splits a marginal threshold; with pac_delta pass "
                "mondrian=False (one threshold) or mondrian='class'."
            )
        m = self.cap_margin
        if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) or not (
            np.isfinite(m) and m >= 0
        ):  # fmt: skip
            raise ValueError(f"cap_margin must be a finite number >= 0 (probit units); got {m!r}.")

    def _check_fitted(self, calibrated: bool = True, network_checked_later: bool = False) -> None:
        if not getattr(self, "initialized_", False) or not hasattr(self, "smoothed_"):
            raise NotFittedError(
                "This RRISESurrogate instance is not fitted yet. Call fit(X) first."
            )
        if not calibrated:
            return
        cal = self.__dict__.get("calibration_")
        if cal is None:
            raise NotFittedError("The surrogate is not calibrated: call conformalize(X_cal).")
        cal.check_setting(self.sigma_, self.alpha_mc_)
        if not network_checked_later:
            self._check_network()

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None, **fit_params: Any) -> Any:
        """skorch's ``partial_fit``; it drops the calibration (the network changes).

        ``y`` are soft targets (class frequencies); over a Pipeline, ``X`` is in its raw
        units and goes through its preprocessing first, as in every other method. Call
        :meth:`conformalize` afterwards to certify again.
        """
        self.__dict__.pop("calibration_", None)
        self.__dict__.pop("_network_seen_", None)
        return super().partial_fit(self._model_space(X), y, classes=classes, **fit_params)

    @property
    def classes_(self) -> np.ndarray:
        """Class labels (those of the smoothed classifier)."""
        try:
            return self.smoothed_.classes_
        except AttributeError:
            raise AttributeError("RRISESurrogate has no classes_ before fit.") from None

    @property
    def sigma_(self) -> float:
        return float(self.smoothed_.sigma)

    @property
    def alpha_mc_(self) -> float:
        return float(self.smoothed_.alpha if self.alpha_mc is None else self.alpha_mc)

    def _model_space(self, X: Any) -> Any:
        """Inputs as the smoothed classifier takes them: through the preprocessing of a
        Pipeline given as ``smoothed`` (float32 first, as :func:`rrise_sklearn.certify` does)."""
        return through(self.__dict__.get("preprocessing_"), X)

    def _X(self, X: Any, reset: bool = False) -> np.ndarray:
        X = validate_inputs(self, X, reset=reset)
        smoothed = self.__dict__.get("smoothed_")
        stats = getattr(smoothed, "input_stats_", None)
        if stats is not None:
            warn_if_off_scale(type(self).__name__, X, stats, float(smoothed.sigma))
        return X

    def _logits(self, X: np.ndarray) -> torch.Tensor:
        """The surrogate's logits (on the CPU), one direct module pass per chunk.

        Not skorch's ``forward``, which builds a DataLoader per call (about
        2.5 ms per call here, far more than a small network's forward pass;
        one-pass certification is about latency).
        """
        return eval_forward(self.module_, X, self.device)

    def _top(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Surrogate class, its probability h and 1 - h, in float64 from the logits."""
        z = self._logits(X).double().numpy()
        top = np.argmax(z, axis=1)
        z = z - z[np.arange(len(z)), top][:, None]  # top logit is 0
        e = np.exp(z)
        total = e.sum(axis=1)
        h = 1.0 / total
        q = (total - 1.0) / total  # sum of the other classes' probabilities
        return top, h, q

    def _score_scale(self, X: np.ndarray, y_hat: np.ndarray, cap: float,
                     coef: float | None) -> np.ndarray:  # fmt: skip
        """The adaptive score's ``d`` of each input: a fixed function of the trained
        surrogate (here of its capped prediction), never of calibration data."""
        return headroom_scale(y_hat, cap, coef)

    def _prediction(self, h: np.ndarray, q: np.ndarray, cap: float) -> np.ndarray:
        """The probit prediction capped where a first-stage Monte Carlo bound ends (any fixed
        function of ``x`` is a valid conformal predictor: the cap keeps the guarantee)."""
        return np.minimum(probit(h, q), cap)

    # ------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------
    def _prepare(self, X: Any, y: Any = None) -> tuple[np.ndarray, Any]:
        """Validate, seed, and make sure a fitted smoothed classifier is at hand.

        Returns the part of ``X`` left for the surrogate (all of it unless the
        smoothed classifier had to be fitted on a part) and ``y``.
        """
        self._check_params()
        self.root_seed_ = resolve_seed(self.random_state)
        self.preprocessing_, smoothed = _split_pipeline(_unwrap(self.smoothed))
        X = self._X(self._model_space(X), reset=True)
        if not isinstance(smoothed, SmoothedClassifier):
            raise TypeError(
                "smoothed must be a SmoothedClassifier or a fitted Pipeline ending in one "
                "(optionally wrapped in sklearn.frozen.FrozenEstimator); got "
                f"{type(smoothed).__name__}."
            )
        if not smoothed.__sklearn_is_fitted__():
            if y is None:
                raise ValueError(
                    "smoothed is not fitted: pass y so that it can be fitted on part of X, or "
                    "pass a fitted SmoothedClassifier."
                )
            base = np.random.SeedSequence(self.root_seed_, spawn_key=(BASE,))  # no smoothed_ yet
            seed = int(base.generate_state(1)[0] % (2**31))
            X, X_base, y, y_base = train_test_split(
                X, np.asarray(y), test_size=self.smoothed_size, random_state=seed
            )
            smoothed = clone(smoothed).fit(X_base, y_base)
        expected = tuple(getattr(smoothed, "input_shape_", X.shape[1:]))
        if expected != tuple(X.shape[1:]):
            raise ValueError(
                f"X has inputs of shape {tuple(X.shape[1:])}, but the smoothed classifier was "
                f"fitted on inputs of shape {expected}."
            )
        self.smoothed_ = smoothed
        self.module_inferred_kwargs_ = inferred_module_kwargs(
            tuple(X.shape[1:]), len(smoothed.classes_)
        )

        return X, y

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        train_inputs: Any = None,
        train_counts: Any = None,
        calibration_counts: Any = None,
        **fit_params: Any,
    ) -> RRISESurrogate:
        """Compute Monte Carlo targets, train the surrogate, and calibrate it.

        Which inputs train and which calibrate: by default the smoothed
        classifier's own training inputs (``smoothed.training_inputs_``) train
        and all of ``X`` calibrates; an unfitted ``smoothed`` is first fitted
        on a ``smoothed_size`` part of ``X``; given ``train_inputs`` train and
        all of ``X`` calibrates; without kept inputs (a pretrained module, a
        loaded file) or with ``train_inputs="split"``, ``calibration_size`` of
        ``X`` calibrates and the rest trains.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs that trained neither network: the calibration set,
            exchangeable with the inputs to certify (passing training inputs
            again is reported).
        y : array-like, optional
            Labels, only to fit an unfitted ``smoothed``.
        train_inputs : array-like or "split", optional
            The surrogate's training inputs (no labels); their targets are
            computed here unless ``train_counts`` are given.
        train_counts : array-like, optional
            Precomputed counts of ``train_inputs`` (noisy copies included).
        calibration_counts : array-like, optional
            Precomputed calibration counts of ``X`` (see :meth:`conformalize`).

        Returns
        -------
        self : RRISESurrogate
        """
        self.__dict__.pop("calibration_", None)  # a failed refit leaves no stale calibration
        prep, last = _split_pipeline(_unwrap(self.smoothed))
        if prep is not None:  # before the costly part: radii in scaler units may surprise
            warn_if_stretched(input_scale(prep), "RRISESurrogate", last.sigma, stacklevel=2)
        X_tr, counts, X_cal, timings = _fit_routes(
            self, X, y, train_inputs, train_counts, calibration_counts
        )
        self.train_inputs_, self.train_counts_ = X_tr, counts
        self.target_samples_ = int(np.max(np.sum(counts, axis=1)))  # samples behind a target

        t0 = time.perf_counter()
        targets = (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
        seeds = self._draws.stream(TRAIN).generate_state(int(self.n_members))
        # skorch's partial_fit: X_tr is in model space already (ours would transform it again)
        train = partial(NeuralNet.partial_fit, self)
        self.module_ = fit_members(self, X_tr, targets, seeds, fit_params, train=train)
        if isinstance(self.module_, MeanLogProbEnsemble):
            self.initialize_optimizer()  # over the ensemble's weights
        self.module_.eval()  # certification runs in eval mode (partial_fit switches back)
        timings["training"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self._conformalize(X_cal, counts=calibration_counts)
        timings["calibration"] = time.perf_counter() - t0
        self.amortization_ = _amortization(self, X_cal, timings)
        return self

    def compute_targets(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Training inputs (``X`` and ``n_augment`` noisy copies) and their Monte Carlo counts.

        Returns
        -------
        inputs : ndarray of shape (n_samples * (1 + n_augment), n_features)
        counts : ndarray of shape (len(inputs), n_classes)
        """
        if not hasattr(self, "smoothed_"):
            X, _ = self._prepare(X)  # usable before fit, e.g. to share targets
        else:
            X = self._model_space(X)
        return self._compute_targets(X)

    def _compute_targets(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`compute_targets` of inputs already in the smoothed classifier's space."""
        X = self._X(X)
        rng = np.random.default_rng(self._draws.stream(AUGMENT))
        copies = [X] + [
            (X + self.sigma_ * rng.standard_normal(X.shape)).astype(np.float32)
            for _ in range(int(self.n_augment))
        ]
        inputs = np.concatenate(copies, axis=0)
        n_t = int(self.n_targets or self.smoothed_.n)
        counts = self.smoothed_.sample_counts(
            inputs,
            n_t,
            random_state=self._draws.stream(TARGETS),
            cache_dir=self._draws.cache("targets", inputs),
            verbose=int(self.verbose),
            desc=f"targets n={n_t}",
        )
        return inputs, counts

    # ------------------------------------------------------------------
    # calibration
    # ------------------------------------------------------------------
    def _calibration_evidence(
        self,
        X: np.ndarray,
        n: int,
        tag: int,
        random_state: Any = None,
        counts: Any = None,
        alpha: float | None = None,
        seed: np.random.SeedSequence | None = None,
        cap: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Surrogate class, its capped probit prediction (``cap``, default the calibration's),
        the Monte Carlo probit lower bound (at ``alpha``, default ``alpha_mc``) and the count
        of the surrogate's class."""
        top, h, q = self._top(X)
        if seed is None:
            seed = self._draws.seed_for(tag, random_state)
        counts = self._draws.counts(
            X,
            n,
            seed,
            counts,
            name=f"counts (n_calibration={n})",
            purpose="calibration" if tag == CALIB else None,
            desc={CALIB: "calibration", VERIFY: "verify"}.get(tag, "monitor") + f" n={n}",
        )
        k = counts[np.arange(len(X)), top]
        y_mc = mc_bound(k, n, self.alpha_mc_ if alpha is None else alpha)
        cap = self.calibration_.prediction_cap if cap is None else cap
        return top, self._prediction(h, q, cap), y_mc, k

    def _refine_stages(self) -> list[int]:
        """Extra samples of each refinement stage (empty without ``n_refine``)."""
        return refine_stages(self.n_refine)

    @property
    def _draws(self) -> SurrogateDraws:
        return SurrogateDraws(self.smoothed_, self.root_seed_, self.cache_dir, int(self.verbose))

    def conformalize(
        self,
        X_cal: Any,
        *,
        random_state: Any = None,
        counts: Any = None,
        refine_counts: Any = None,
    ) -> RRISESurrogate:
        """Calibrate (or recalibrate) the threshold on fresh data.

        ``n_calibration`` fresh Monte Carlo samples per input, later stages where
        the threshold needs them (:func:`~rrise_sklearn.conformal.staged_bounds`),
        then the thresholds of ``mondrian``'s grouping (conformal order
        statistics; the pooled one cross-checked against MAPIE). The result is one read-only
        :class:`~rrise_sklearn.conformal.ConformalCalibration` in
        ``calibration_``, tied to the surrogate's weights as they are now.

        Parameters
        ----------
        X_cal : array-like of shape (m, ...)
            Calibration inputs, exchangeable with the inputs to certify and
            used to train neither network.
        random_state : int or None, optional
            Seed of this calibration's noise (default: derived from the
            estimator's ``random_state``).
        counts : array-like of shape (m, n_classes), optional
            Precomputed counts of ``X_cal`` with ``n_calibration`` samples each
            (``smoothed.sample_counts(X_cal, n, noise_sharing=1)``).
        refine_counts : array-like of shape (m, n_classes), optional
            With one refinement stage: its precomputed counts (another stream).

        Returns
        -------
        self : RRISESurrogate

        Raises
        ------
        ValueError
            If the calibration set is too small for ``alpha_conf`` (naming the
            minimum size), or given counts share a noise stream with others.
        """
        self._check_fitted(calibrated=False)
        return self._conformalize(
            self._model_space(X_cal), random_state=random_state, counts=counts,
            refine_counts=refine_counts,
        )  # fmt: skip

    def _conformalize(self, X_cal: Any, *, random_state: Any = None, counts: Any = None,
                      refine_counts: Any = None) -> RRISESurrogate:  # fmt: skip
        """:meth:`conformalize` of inputs already in the smoothed classifier's space."""
        self._check_fitted(calibrated=False)
        X_cal = self._X(X_cal)
        conformal_rank(len(X_cal), self.alpha_conf, self.pac_delta)  # fail before Monte Carlo
        n_cal = int(self.n_calibration or self.smoothed_.n)
        stages = self._refine_stages()
        if refine_counts is not None and len(stages) != 1:
            raise ValueError("refine_counts needs exactly one refinement stage (an integer "
                             f"n_refine); got n_refine={self.n_refine!r}.")  # fmt: skip
        draws = self._draws
        draws.check_streams(random_state, counts, refine_counts, bool(stages),
                            getattr(self, "train_counts_", None))  # fmt: skip
        grouping = resolve_grouping(self.mondrian, self.pac_delta, len(self.classes_),
                                    self.cap_margin)  # fmt: skip
        alpha_1 = self.alpha_mc_ / (1 + len(stages))  # alpha_mc split over the stages
        cap = prediction_cap(n_cal, alpha_1)
        top, y_hat, y_mc, k = self._calibration_evidence(
            X_cal, n_cal, CALIB, random_state, counts, alpha=alpha_1, cap=cap
        )
        below = y_hat < cap
        coef = check_nonnegative(self.score_scale, "score_scale")
        d = self._score_scale(X_cal, y_hat, cap, coef)  # scores in units of d (1: plain)
        # scores use the bound floored at 0: only certificates with a positive radius count
        first_stage_scores = (y_hat - certifiable_bound(y_mc)) / d  # what monitor() compares with
        y_mc, levels = staged_bounds(
            k, n_cal, stages, alpha_1, y_hat,
            promote=lambda s: grouping.promote(s / d, top, below, self.alpha_conf),
            draw=draws.stage_draw(X_cal, top, stages, random_state, refine_counts), floor=True,
        )  # fmt: skip
        y_mc = certifiable_bound(y_mc)
        fitted = grouping.fit(y_hat / d, y_mc / d, top, below, self.alpha_conf)
        self.calibration_ = ConformalCalibration(
            grouping=grouping.name, alpha_conf=float(self.alpha_conf),
            pac_delta=grouping.pac_delta, **fitted, score_scale=coef, floor_bound=True,
            scores=(y_hat - y_mc) / d, classes=top, refine_levels=levels, prediction_cap=cap,
            n_samples=n_cal, stages=tuple(stages),
            setting={"sigma": self.sigma_, "alpha_mc": self.alpha_mc_},
            network_digest=state_digest(self.module_),
            first_stage_scores=first_stage_scores, first_stage_alpha=float(alpha_1),
        )  # fmt: skip
        self._network_seen_ = None
        return self

    # ------------------------------------------------------------------
    # certification
    # ------------------------------------------------------------------
    def certify(self, X: Any) -> CertificationResult:
        """Certify in one forward pass: radius ``sigma * PhiInv(p_tilde)`` where the
        calibrated bound ``p_tilde`` exceeds 1/2, else abstain (class docstring: the guarantee).

        Returns
        -------
        result : CertificationResult
            ``prediction``, ``radius``, ``p_lower`` (``p_tilde``); no counts.

        Raises
        ------
        StaleCalibrationError
            If the weights, sigma or ``alpha_mc`` changed since the calibration.
        """
        self._check_fitted(network_checked_later=True)
        X = self._X(self._model_space(X))
        top, h, q = self._top(X)
        self._check_network(after_forward=True)  # the weights this very pass used
        sigma = self.sigma_
        cal = self.calibration_
        y_hat = self._prediction(h, q, cal.prediction_cap)
        z = cal.calibrated_z(top, y_hat, self._score_scale(X, y_hat, cal.prediction_cap,
                                                           cal.score_scale))  # fmt: skip
        radius = np.where(z > 0, sigma * z, 0.0)
        radius = np.where(np.isfinite(radius), radius, 0.0)
        p_lower = _ndtr(z)  # the normal CDF (what scipy's norm.cdf evaluates)
        smoothed = self.smoothed_
        return CertificationResult(
            prediction=smoothed._labels(top, radius <= 0),
            radius=radius,
            p_lower=p_lower,
            counts=None,
            abstain_label=smoothed.abstain_label_,
            n_samples=np.zeros(len(X), dtype=np.int64),
            info={
                "sigma": sigma,
                "alpha_conf": cal.alpha_conf,
                "alpha_mc": self.alpha_mc_,
                "conformity_score": _SCORE,
                "score_scale": cal.score_scale,
                "calibrated": True,
                # how the certificates' errors depend on each other (one shared threshold)
                "dependence": "conformal",
                **cal.conformal_info(top, y_hat),
            },
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """The surrogate's class probabilities (its estimate of the smoothed ones)."""
        self._check_fitted(calibrated=False)
        X = self._X(self._model_space(X))
        return torch.softmax(self._logits(X).double(), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The surrogate's class (argmax of ``predict_proba``), no abstention."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Certified accuracy at ``score_radius`` of :meth:`certify`."""
        res = self.certify(X)
        return float(
            certified_accuracy(np.asarray(y), res.prediction, res.radius, float(self.score_radius))
        )

    # ------------------------------------------------------------------
    # deployment monitoring and cost accounting
    # ------------------------------------------------------------------
    def verify(
        self, X: Any, n: int | None = None, *, level: float = 0.01, random_state: Any = None
    ) -> VerificationReport:
        """One-shot drift test: do fresh Monte Carlo scores still look like the calibration's?

        Scores every input of ``X`` as the calibration did (every stage) and
        tests the number above the threshold against its exact law under
        exchangeability (:func:`~rrise_sklearn.monitoring.verification_report`);
        without drift it alarms at most at rate ``level``. Once per fresh
        sample; for repeated checks use :meth:`monitor`.

        Parameters
        ----------
        X : array-like of shape (m_v, ...)
            Deployment inputs, not used for training or calibration.
        n : int, optional
            Must equal the calibration's ``n_calibration`` (the default).
        level : float, default=0.01
            False-alarm probability of the test.
        random_state : int or None, optional
            Seed of the verification's noise (default: a stream of its own).

        Returns
        -------
        report : VerificationReport
        """
        self._check_fitted()
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got level={level!r}.")
        X = self._X(self._model_space(X))
        cal = self.calibration_
        n_cal = cal.n_samples
        if n is not None and int(n) != n_cal:
            raise ValueError(
                f"verify(n={n}) differs from the calibration's n_calibration={n_cal}: the scores "
                "would follow another law and the test would not hold its level. Call "
                "verify(X) (it uses the calibration's n), or recalibrate with "
                "set_params(n_calibration=...) and conformalize(X_cal)."
            )
        alpha_1 = cal.first_stage_alpha
        top, y_hat, y_mc, k = self._calibration_evidence(
            X, n_cal, VERIFY, random_state, alpha=alpha_1, cap=cal.prediction_cap
        )
        base = self._draws.seed_for(VERIFY_REFINE, random_state)
        n_tot, k = n_cal, np.asarray(k, dtype=np.int64)
        for j, n_extra in enumerate(cal.stages):  # every stage, for every input
            seed = np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, j))
            extra = self._draws.counts(X, n_extra, seed, desc=f"verify stage {j + 2} n={n_extra}")
            k, n_tot = k + extra[np.arange(len(X)), top], n_tot + n_extra
            y_mc = np.maximum(y_mc, mc_bound(k, n_tot, alpha_1))
        d = self._score_scale(X, y_hat, cal.prediction_cap, cal.score_scale)
        return verification_report(cal, cal.conformity_scores(y_hat, y_mc, d), top, y_hat, level,
                                   scale=d)  # fmt: skip

    def monitor(self, X: Any, *, level: float = 0.01, reset: bool = False) -> MonitorReport:
        """Anytime-valid drift monitoring: call it after every batch of deployment traffic.

        Scores ``X`` as the calibration's first stage did and feeds the scores
        to an online exchangeability test seeded with the calibration's
        (:class:`~rrise_sklearn.monitoring.ScoreMonitor`): the false-alarm rate
        stays below ``level`` however many batches are checked. Restarts after
        a recalibration or with ``reset=True``; not saved in model files.

        Parameters
        ----------
        X : array-like of shape (m, ...)
            The latest batch of deployment inputs.
        level : float, default=0.01
            False-alarm probability over the whole stream (fixed per stream).
        reset : bool, default=False
            Start a new stream.

        Returns
        -------
        report : MonitorReport
        """
        self._check_fitted()
        cal = self.calibration_
        if cal.first_stage_scores is None:
            raise ValueError(
                "monitor needs the calibration's first-stage scores, which this surrogate does "
                "not have (a model file of an older version): recalibrate with conformalize."
            )
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got level={level!r}.")
        X = self._X(self._model_space(X))
        mon = self.__dict__.get("monitor_")
        if reset or mon is None or not mon.follows(cal.first_stage_scores):
            calls = mon.calls if mon is not None else 0  # noise streams never repeat
            rng = np.random.default_rng(self._draws.stream(MONITOR))
            mon = self.monitor_ = ScoreMonitor(cal.first_stage_scores, level, rng, calls)
        mon.check_level(level)
        mon.calls += 1
        seed = np.random.SeedSequence(self.root_seed_, spawn_key=(MONITOR, mon.calls))
        top, y_hat, y_mc, _ = self._calibration_evidence(
            X, cal.n_samples, MONITOR, alpha=cal.first_stage_alpha, seed=seed,
            cap=cal.prediction_cap,
        )  # fmt: skip
        d = self._score_scale(X, y_hat, cal.prediction_cap, cal.score_scale)
        scores = cal.conformity_scores(y_hat, y_mc, d)
        return mon.feed(scores, int((scores > cal.threshold_for(top, y_hat)).sum()))


def _amortization(sur: RRISESurrogate, X_cal: np.ndarray, timings: dict) -> dict:
    """Measured per-query costs of Monte Carlo and of the surrogate, and the break-even."""
    probe = X_cal[: min(len(X_cal), 32)]
    if len(probe) == 0:
        return dict(timings)
    t0 = time.perf_counter()
    sur.smoothed_.certify(probe)
    mc = (time.perf_counter() - t0) / len(probe)
    t0 = time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - t0 < 0.05:
        sur._top(probe)
        reps += 1
    one = (time.perf_counter() - t0) / (reps * len(probe))
    fixed = timings["targets"] + timings["training"] + timings["calibration"]
    return {
        **timings,
        "mc_per_query": mc,
        "surrogate_per_query": one,
        "speedup": mc / one if one > 0 else float("inf"),
        "break_even_queries": fixed / (mc - one) if mc > one else float("inf"),
    }


def _fit_routes(est: RRISESurrogate, X: Any, y: Any, train_inputs: Any, train_counts: Any,
                calibration_counts: Any) -> tuple:  # fmt: skip
    """The routes of :meth:`RRISESurrogate.fit`: ``(train inputs, their counts, calibration inputs,
    timings)``, the smoothed classifier fitted first when it is not."""
    split = isinstance(train_inputs, str)
    if split and train_inputs != "split":
        raise ValueError(
            f"train_inputs must be an array of inputs or 'split'; got {train_inputs!r}."
        )
    if split:
        if train_counts is not None or calibration_counts is not None:
            raise ValueError(
                "train_inputs='split' computes its own targets and calibration counts: "
                "train_counts and calibration_counts cannot be used with it."
            )
        train_inputs = None
    check_distinct_streams(train_counts=train_counts, calibration_counts=calibration_counts)
    X, y = est._prepare(X, y)
    timings: dict[str, float] = {}
    kept = getattr(est.smoothed_, "training_inputs_", None)
    if train_inputs is None and train_counts is None and not split and kept is not None:
        train_inputs = kept
    if calibration_counts is not None and train_inputs is None:
        # X is split, so counts of X would not match the calibration part
        raise ValueError(
            "calibration_counts needs all of X to calibrate: pass train_inputs (or fit "
            "the smoothed classifier with SmoothedClassifier.fit, which keeps its inputs)."
        )
    if kept is not None and train_inputs is not kept:
        _check_held_out(X, kept, "the smoothed classifier's training inputs")
    if train_inputs is not None:
        what = (
            "the smoothed classifier's training inputs (the surrogate's too)"
            if train_inputs is kept
            else "the surrogate's training inputs"
        )
        if train_inputs is not kept:  # the user's, in the units of the Pipeline's input
            train_inputs = est._model_space(train_inputs)
        train_inputs = est._X(train_inputs)  # validated once, reused below
        _check_held_out(X, train_inputs, what)

    if train_counts is not None:
        if train_inputs is None:
            raise ValueError("train_counts needs the matching train_inputs.")
        X_tr = est._X(train_inputs)
        counts = np.asarray(train_counts)
        if counts.shape != (len(X_tr), len(est.classes_)):
            raise ValueError(
                f"train_counts has shape {counts.shape}; expected "
                f"({len(X_tr)}, {len(est.classes_)}) for the given train_inputs."
            )
        X_cal = X
        timings["targets"] = 0.0
    elif train_inputs is not None:
        X_cal = X
        t0 = time.perf_counter()
        X_tr, counts = est._compute_targets(train_inputs)
        timings["targets"] = time.perf_counter() - t0
    else:
        seed = int(est._draws.stream(SPLIT).generate_state(1)[0] % (2**31))
        X_fit, X_cal = train_test_split(X, test_size=est.calibration_size, random_state=seed)
        if not split:  # chosen for the user: say so (train_inputs="split" asks for it)
            warnings.warn(
                f"RRISESurrogate.fit: the smoothed classifier kept no training inputs (a "
                f"pretrained or loaded model), so X is split: {len(X_fit):,} inputs train the "
                f"surrogate (targets: {len(X_fit) * (1 + int(est.n_augment)):,} inputs x "
                f"{int(est.n_targets or est.smoothed_.n):,} samples) and {len(X_cal):,} "
                "calibrate. Pass train_inputs=<inputs not in X> to calibrate on all of X, or "
                "train_inputs='split' to choose this split.",
                UserWarning,
                stacklevel=3,
            )
        t0 = time.perf_counter()
        X_tr, counts = est._compute_targets(X_fit)
        timings["targets"] = time.perf_counter() - t0
    return X_tr, counts, X_cal, timings
