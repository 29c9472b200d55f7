"""RRISESurrogate: certification in one forward pass, conformally calibrated.

A surrogate network learns the smoothed classifier's Monte Carlo class
frequencies (soft-label cross-entropy); a one-time split-conformal calibration
turns its outputs into conservative radii (method.md section 3).
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr as _ndtr
from sklearn.base import ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from skorch import NeuralNet

from . import stats
from ._validation import inferred_module_kwargs, validate_inputs
from .calibration import (
    calibrated_lower,
    conformal_rank,
    conformal_threshold,
    conformity_scores,
    exceedance_pvalue,
    mapie_threshold,
    min_calibration_size,
    probit,
    two_group_thresholds,
)
from .metrics import certified_accuracy
from .persistence import ModelFileMixin
from .results import CertificationResult
from .sampling import MonteCarloCounts, _inputs_digest, check_distinct_streams, resolve_seed
from .smoothing import SmoothedClassifier, build_module, eval_forward

__all__ = [
    "JensenShannonLoss",
    "MeanLogProbEnsemble",
    "RRISESurrogate",
    "VerificationReport",
]

# spawn keys of the surrogate's random streams
_SPLIT, _TARGETS, _AUGMENT, _CALIB, _VERIFY, _TRAIN, _BASE, _REFINE = 10, 11, 12, 13, 14, 15, 16, 17
_VERIFY_REFINE, _MONITOR = 18, 19
# the conformity score: the surrogate's miss on the PhiInv scale (method.md section 3);
# the headroom and probability scores of rrise_sklearn.calibration measured worse here
_SCORE = "radius"
# scores at or below this (at the cap) count as ties with the all-correct bound (float noise
# between the cap and a Clopper-Pearson bound of n successes in n)
_CAP_TIE = 1e-9


class JensenShannonLoss(torch.nn.Module):
    """Jensen-Shannon divergence between ``softmax(logits)`` and target frequencies.

    The loss of the prior offline surrogate (Accelerated Smoothing, Bhardwaj et
    al. 2024), kept as a baseline.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        m = 0.5 * (p + target)
        logm = torch.log(m.clamp_min(1e-12))
        kl_p = (p * (logp - logm)).sum(1)
        kl_t = torch.where(
            target > 0,
            target * (torch.log(target.clamp_min(1e-12)) - logm),
            torch.zeros_like(target),
        ).sum(1)
        return (0.5 * (kl_p + kl_t)).mean()


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
        pooled one with ``mondrian="cap"``); under exchangeability at most a
        fraction ``alpha_conf`` in expectation.
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


class MeanLogProbEnsemble(torch.nn.Module):
    """Several surrogate networks as one: the mean of their log-softmax outputs.

    Its output, read as logits, gives the normalized geometric mean of the
    members' class probabilities. Used by ``RRISESurrogate(n_members=k)``.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.surrogate import MeanLogProbEnsemble
    >>> ens = MeanLogProbEnsemble([torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)])
    >>> tuple(ens(torch.zeros(4, 3)).shape)
    (4, 2)
    """

    #: inputs up to this many rows take the fused path (larger batches are
    #: already dominated by arithmetic, where one GEMM per member is faster here)
    fused_max_rows = 64

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self._stacked: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled() and len(x) <= self.fused_max_rows:
            layers = self._stacked_layers()
            if layers is not None:
                return _fused_mean_log_softmax(layers, x)
        return torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members]).mean(dim=0)

    def _stacked_layers(self) -> list | None:
        """The members' dense layers stacked into ``(k, in, out)`` weights, if all are MLPs.

        One batched matrix product per layer serves every member, so a
        single query costs about one network's Python and kernel overhead
        instead of ``k``. Rebuilt whenever a weight changes (tracked by the
        tensors' version counters); ``None`` for other architectures, which
        take the loop.
        """
        signature = _layer_ids(self.members)
        if self._stacked is not None and self._stacked[0] == signature:
            # same members, same layer objects: reuse unless a weight tensor was replaced
            # or changed in place (version counters)
            _, linears, key, layers, _ = self._stacked
            try:
                if _weights_key(linears) == key:
                    return layers
            except (AttributeError, KeyError):  # a bias removed: rebuild (and refuse) below
                pass
        specs = [_dense_layers(m) for m in self.members]
        if any(s is None for s in specs) or len({tuple(map(len, s)) for s in specs}) != 1:
            return None
        shapes = {tuple((w.shape, b.shape, act) for w, b, act in s) for s in specs}
        if len(shapes) != 1:
            return None
        with torch.no_grad():
            layers = [
                (
                    torch.stack([s[i][0].t() for s in specs]).contiguous(),
                    torch.stack([s[i][1] for s in specs])[:, None, :].contiguous(),
                    specs[0][i][2],
                )
                for i in range(len(specs[0]))
            ]
        linears = [m for k in self.members for m in k.net if isinstance(m, torch.nn.Linear)]
        # strong references to every object whose id is in the keys, so that no id can be
        # reused by a new layer or tensor while this cache entry lives
        alive = (
            list(self.members),
            [list(k.net) for k in self.members],
            [(m.weight, m.bias) for m in linears],
        )
        self._stacked = (signature, linears, _weights_key(linears), layers, alive)
        return layers


def _dense_layers(module: torch.nn.Module) -> list | None:
    """``[(weight, bias, relu_after), ...]`` of an MLP-shaped module, else None."""
    from .nets import MLP

    seq = module.net if isinstance(module, MLP) else None
    if seq is None:
        return None
    out: list = []
    for layer in seq:
        if isinstance(layer, torch.nn.Linear) and layer.bias is not None:
            out.append([layer.weight, layer.bias, False])
        elif isinstance(layer, torch.nn.ReLU) and out:
            out[-1][2] = True
        elif not isinstance(layer, torch.nn.Dropout):  # dropout is the identity in eval mode
            return None
    return [tuple(x) for x in out]


def _layer_ids(members: Any) -> tuple:
    """Ids of the members and of their MLP layers: changes when any of them is replaced."""
    from .nets import MLP

    # through ``_modules`` (plain dicts): ``m.net`` would go through Module.__getattr__
    return tuple(
        (id(m), *map(id, m._modules["net"]._modules.values())) if isinstance(m, MLP) else (id(m),)
        for m in members
    )


def _weights_key(linears: list) -> tuple:
    """Identity and version counter of every weight and bias of ``linears``."""
    params = (m._parameters for m in linears)  # a plain dict: faster than m.weight, m.bias
    return tuple(
        (id(w), w._version, id(b), b._version)
        for w, b in ((p["weight"], p["bias"]) for p in params)
    )


def _fused_mean_log_softmax(layers: list, x: torch.Tensor) -> torch.Tensor:
    k = layers[0][0].shape[0]
    h = x.reshape(1, x.shape[0], -1).expand(k, -1, -1)
    for w, b, relu in layers:
        h = torch.baddbmm(b, h, w)
        if relu:
            h = torch.relu(h)
    return torch.log_softmax(h, dim=2).mean(dim=0)


#: optimizers whose update of a weight depends only on that weight's own gradients
#: (so members trained together as one batched network get the updates they would alone)
_ELEMENTWISE_OPTIMIZERS = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.SGD,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)


def _progress_only(callbacks: Any) -> list | None:
    """The EpochProgress bars among ``callbacks`` if they are all there is, else None."""
    from .callbacks import EpochProgress

    found = []
    for cb in callbacks or []:
        cb = cb[1] if isinstance(cb, tuple) else cb
        if not isinstance(cb, EpochProgress):
            return None
        found.append(cb)
    return found


def _epoch_bar(desc: str, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def _rows(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)


def _check_held_out(X_cal: np.ndarray, X_train: np.ndarray, what: str) -> None:
    """Calibration inputs must not be training inputs: error if most are, warn if some are.

    A few exact repeats can be natural (data sets with duplicate images); the
    same array passed twice is the mistake this catches.
    """
    if len(X_cal) == 0 or len(X_train) == 0 or X_cal.shape[1:] != X_train.shape[1:]:
        return
    train = {r.tobytes() for r in _rows(X_train)}
    n_same = sum(r.tobytes() in train for r in _rows(X_cal))
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


def _unwrap(smoothed: Any) -> Any:
    inner = getattr(smoothed, "estimator", None)
    if inner is not None and type(smoothed).__name__ == "FrozenEstimator":
        return inner
    return smoothed


class RRISESurrogate(ModelFileMixin, ClassifierMixin, NeuralNet):
    """One-forward-pass certifier: a surrogate of a smoothed classifier, conformally calibrated.

    Guarantee: for an input exchangeable with the calibration set,
    ``P(radius > 0 and the certificate is wrong) <= alpha_conf + alpha_mc``
    (marginally over the calibration draw and the input; with ``pac_delta``
    the ``alpha_conf`` part holds with probability ``1 - pac_delta`` over the
    calibration draw). "Wrong" means the smoothed classifier's class differs
    from the certified class or is not constant on the certified ball.

    Parameters
    ----------
    smoothed : SmoothedClassifier or FrozenEstimator
        The smoothed classifier to imitate. A fitted one (or one wrapped in
        ``sklearn.frozen.FrozenEstimator`` so that ``clone`` and grid search
        keep it fitted) is used as is: then ``X`` given to ``fit`` must not
        have been used to train it. An unfitted one is cloned and fitted on
        its own part of ``X`` (``smoothed_size``), which needs ``y``.
    module : torch module class or instance, default=None
        Surrogate network. ``None`` copies the smoothed classifier's base
        network, weights included (the best measured initialization).
    n_targets : int or None, default=2000
        Monte Carlo samples per training target (``None``: the smoothed
        classifier's ``n``).
    n_augment : int, default=32
        Noisy copies ``x + N(0, sigma^2 I)`` of every training input, each
        with its own Monte Carlo target (more training data at the cost of
        more target computation: ``(1 + n_augment) * n_targets`` samples per
        training input). 32 measured best on digits (threshold 0.29 z-units
        against 0.48 with 8).
    augment_scale : float, default=1.0
        Noise of the copies, as a multiple of the smoothing ``sigma``.
    n_calibration : int or None, default=20_000
        Monte Carlo samples of every calibration input in the first stage
        (``None``: the smoothed classifier's ``n``). It sets the cap of the
        predictions (:attr:`prediction_cap_`, at ``alpha_mc`` divided by the
        number of stages; ``3.35`` with the defaults), and no radius exceeds
        ``sigma * (prediction_cap_ - threshold_)``: on digits ``3.18 sigma``
        (threshold 0.17), just under the ``3.2 sigma`` of Monte Carlo CERTIFY
        at ``n=10_000, alpha=0.001``; on MNIST-5k at sigma 0.25, ``2.74
        sigma`` (threshold 0.61), so no certificate reaches ``r = 0.75``
        there. A larger ``n_calibration`` raises the cap.
    n_refine : int, list of int or None, default=(200_000, 1_000_000)
        Later Monte Carlo stages at calibration (``None``: one stage), drawn
        only where the threshold needs them: while some input whose score is
        at or above the threshold has not had every stage, it gets the next
        one (``n_refine[j]`` fresh samples), and the threshold is recomputed.
        Each input's bound is the largest of its stages' Clopper-Pearson
        bounds (each from all its samples so far, at ``alpha_mc`` divided by
        the number of stages, so ``alpha_mc`` still bounds the Monte Carlo
        error). The threshold comes out equal to the one of drawing every
        stage for every input, at a fraction of the cost: on digits, a few
        percent of the calibration inputs reach the last stage. The cap of
        the predictions stays that of ``n_calibration``.
    refine_size : float, int or None, default=None
        Also give the second stage, in the first round, to this share (float
        in (0, 1]) or number (int) of the calibration inputs with the largest
        first-stage scores (per predicted class with ``mondrian=True``).
        ``None``: only the inputs the threshold needs. Changes the cost, not
        the threshold (up to the Monte Carlo draws).
    alpha_conf : float, default=0.01
        Conformal miscoverage level.
    alpha_mc : float, default=None
        Level of the calibration Clopper-Pearson bounds; default the smoothed
        classifier's ``alpha``.
    calibration_size : float or int, default=0.25
        Part of ``X`` held out for calibration when the surrogate must train
        on part of ``X`` (see :meth:`fit`): only when the smoothed classifier
        kept no training inputs and none are passed.
    smoothed_size : float, default=0.5
        Part of ``X`` used to fit an unfitted ``smoothed``.
    mondrian : {"auto", False, True, "class", "cap"}, default="auto"
        How the calibration groups its inputs, each group with its own
        threshold (Mondrian conformal prediction; the group must be a fixed
        function of the input). ``"auto"``: ``"cap"``, or one threshold with
        ``pac_delta``. ``False``: one threshold. ``True`` or
        ``"class"``: one per predicted class (class-conditional validity; a
        class with too few calibration points gets no certificates).
        ``"cap"``: one for the inputs whose prediction sits at the cap
        (:attr:`prediction_cap_`) and one for the others, so that a
        threshold driven by the harder inputs does not cut the radii of the
        most confident ones (no radius exceeds ``sigma * (prediction_cap_ -
        threshold)``); when the calibration set plus the input to certify
        hold fewer than ``min_calibration_size(alpha_conf) + 1`` inputs of
        either group, the input gets the pooled threshold
        (:func:`~rrise_sklearn.calibration.two_group_thresholds` says why the
        input to certify is counted). Not with ``pac_delta``. On MNIST-5k at
        sigma = 0.25, half of the calibration images sit at the cap; on
        digits too few do (34 of 632 at sigma = 0.25), so there every input
        gets the pooled threshold, as with ``False`` (``benchmarks/README.md``).
    pac_delta : float, default=None
        If set, a training-conditional threshold valid with probability
        ``1 - pac_delta`` over the calibration draw.
    loss : {"soft_ce", "js"}, default="soft_ce"
        Training loss on the count frequencies: soft-label cross-entropy, or
        the Jensen-Shannon loss of the prior offline surrogate
        (:class:`JensenShannonLoss`; a baseline).
    n_members : int, default=5
        Train this many surrogate networks (each from the same
        initialization, with its own training seed) and certify with their
        ensemble (:class:`MeanLogProbEnsemble`, one batched pass for MLP
        members), calibrated as one network, so the guarantee is unchanged.
        MLP members under the default training loop train together as one
        batched network (each with its own order and optimizer state; 2.8x
        faster than one skorch fit per member for 5 members on digits);
        others train one after the other. On digits, 5 networks gave a
        mean gap to Monte Carlo of 1.7 points at sigma = 0.25 and 2.0 at 0.5
        (3 networks: 2.0 and 2.2; one: 2.9-3.6 and 2.8-3.4), before
        ``n_refine`` (benchmarks/README.md).
    calibrate : bool, default=True
        ``False`` reproduces the uncalibrated baseline: radius
        ``sigma * PhiInv(h)`` with no guarantee (``loss="js"`` for the prior
        method). For comparisons only.
    score_radius : float, default=0.0
        ``score`` returns the certified accuracy at this radius.
    random_state : int or None, default=None
        Seeds the splits, the Monte Carlo calls and the training.
    cache_dir : str, optional
        Keep the Monte Carlo counts of the targets, the calibration and the
        refinement in chunks under this folder
        (:func:`~rrise_sklearn.sampling.precompute_counts`): a crashed or
        killed ``fit`` resumes where it stopped and gives the same surrogate.
        Needs an int ``random_state``. Verification counts are not cached.
    verbose : int, default=0
        ``> 0`` prints an epoch log (skorch's, or one line per epoch with the
        members' mean training loss when they train as one batched network)
        and shows progress bars.
    **kwargs
        skorch parameters (``lr``, ``max_epochs``, ``batch_size``,
        ``optimizer``, ``callbacks``, ``device``, ``module__*``, ...).

    Attributes
    ----------
    smoothed_ : SmoothedClassifier
        The fitted smoothed classifier.
    threshold_ : float or ndarray
        Calibrated threshold ``tau``: one per class with ``mondrian=True``;
        with ``mondrian="cap"`` that of inputs predicted at the cap and that
        of the others (each the group's own or the pooled one).
    threshold_groups_ : {"one", "class", "cap"}
        How the last calibration grouped its inputs (certification follows it
        until the next calibration, whatever ``mondrian`` says since).
    threshold_own_, threshold_group_sizes_, pooled_threshold_ : ndarray, ndarray, float
        With ``mondrian="cap"``: whether each group (at the cap, below it)
        got its own threshold, the calibration inputs in each, and the
        pooled threshold (which :meth:`verify` tests against).
    calibration_scores_ : ndarray
        Conformity scores of the calibration set.
    prediction_cap_ : float
        Largest score-scale value a Monte Carlo lower bound with
        ``n_calibration`` samples can reach (at ``alpha_mc`` divided by the
        number of stages); predictions are capped there, so no radius
        exceeds ``sigma * (prediction_cap_ - threshold_)``.
    refined_ : ndarray of int
        Indices (into the last calibration set) of the inputs that had at
        least one later stage; empty without ``n_refine``.
    refine_levels_ : ndarray of int
        For each calibration input, how many later stages it had (0 to
        ``len(n_refine)``).
    first_stage_scores_ : ndarray
        The calibration scores from the first Monte Carlo stage alone, at
        level ``first_stage_alpha_`` (equal to ``calibration_scores_`` without
        ``n_refine``); :meth:`monitor` compares deployment scores with them.
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
        augment_scale: float = 1.0,
        n_calibration: int | None = 20_000,
        n_refine: int | tuple | list | None = (200_000, 1_000_000),
        refine_size: float | int | None = None,
        alpha_conf: float = 0.01,
        alpha_mc: float | None = None,
        calibration_size: float | int = 0.25,
        smoothed_size: float = 0.5,
        mondrian: bool | str = "auto",
        pac_delta: float | None = None,
        loss: str = "soft_ce",
        n_members: int = 5,
        calibrate: bool = True,
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
        self.augment_scale = augment_scale
        self.n_calibration = n_calibration
        self.n_refine = n_refine
        self.refine_size = refine_size
        self.alpha_conf = alpha_conf
        self.alpha_mc = alpha_mc
        self.calibration_size = calibration_size
        self.smoothed_size = smoothed_size
        self.mondrian = mondrian
        self.pac_delta = pac_delta
        self.loss = loss
        self.n_members = n_members
        self.calibrate = calibrate
        self.score_radius = score_radius
        self.random_state = random_state
        self.cache_dir = cache_dir

    # ------------------------------------------------------------------
    # skorch hooks
    # ------------------------------------------------------------------
    @property
    def _default_callbacks(self) -> list:
        from skorch.callbacks import EpochTimer, PassthroughScoring, PrintLog

        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("print_log", PrintLog()),
        ]

    def initialize_criterion(self) -> RRISESurrogate:
        if self.loss == "js":
            self.criterion_ = JensenShannonLoss()
            return self
        return super().initialize_criterion()

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
    def _stream(self, tag: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.root_seed_, spawn_key=(tag,))

    def _check_params(self) -> None:
        """Check the surrogate's own parameters (skorch checks its own at initialize)."""
        if self.loss not in ("soft_ce", "js"):
            raise ValueError(f"loss must be 'soft_ce' or 'js'; got {self.loss!r}.")
        for name in ("n_targets", "n_calibration"):
            v = getattr(self, name)
            if v is not None and (not _is_count(v)):
                raise ValueError(f"{name} must be None or an integer >= 1; got {v!r}.")
        v = self.n_refine
        if v is not None and not (
            _is_count(v)
            or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_count(e) for e in v))
        ):
            raise ValueError(
                "n_refine must be None, an integer >= 1 (one refinement stage) or a non-empty "
                f"list of integers >= 1 (the extra samples of each stage); got {v!r}."
            )
        r = self.refine_size
        if r is not None and (
            isinstance(r, bool)
            or not (
                (isinstance(r, (int, np.integer)) and r >= 1)
                or (isinstance(r, (float, np.floating)) and 0 < r <= 1)
            )
        ):
            raise ValueError(
                "refine_size must be None, a share in (0, 1] (float) or a number of inputs "
                f">= 1 (int); got {r!r}."
            )
        for name in ("calibration_size", "smoothed_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (
                (isinstance(v, (float, np.floating)) and 0 < v < 1)
                or (name == "calibration_size" and isinstance(v, (int, np.integer)) and v >= 1)
            ):
                raise ValueError(
                    f"{name} must be a share in (0, 1)"
                    + (" or a number of inputs >= 1" if name == "calibration_size" else "")
                    + f"; got {v!r}."
                )
        if not (np.isscalar(self.augment_scale) and self.augment_scale >= 0):
            raise ValueError(f"augment_scale must be >= 0; got {self.augment_scale!r}.")
        if (
            isinstance(self.n_members, bool)
            or not isinstance(self.n_members, (int, np.integer))
            or self.n_members < 1
        ):
            raise ValueError(f"n_members must be an integer >= 1; got {self.n_members!r}.")
        if not isinstance(self.n_augment, (int, np.integer)) or self.n_augment < 0:
            raise ValueError(f"n_augment must be an integer >= 0; got {self.n_augment!r}.")
        if not 0 < self.alpha_conf < 1:
            raise ValueError(f"alpha_conf must lie in (0, 1); got {self.alpha_conf!r}.")
        if self.alpha_mc is not None and not 0 < self.alpha_mc < 1:
            raise ValueError(f"alpha_mc must be None or lie in (0, 1); got {self.alpha_mc!r}.")
        if self.cache_dir is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(
                "cache_dir needs an int random_state (e.g. random_state=0): a rerun after a "
                "crash must draw the same noise to reuse finished chunks; got "
                f"{self.random_state!r}."
            )
        if self.pac_delta is not None and not 0 < self.pac_delta < 1:
            raise ValueError(f"pac_delta must be None or in (0, 1); got {self.pac_delta!r}.")
        if not (
            isinstance(self.mondrian, (bool, np.bool_)) or self.mondrian in ("class", "cap", "auto")
        ):
            raise ValueError(
                "mondrian must be 'auto', False, True (or 'class') or 'cap'; got "
                f"{self.mondrian!r}."
            )
        if self.mondrian == "cap" and self.pac_delta is not None:
            raise ValueError(
                "mondrian='cap' splits a marginal threshold; with pac_delta pass mondrian=False "
                "(one threshold) or mondrian='class'."
            )

    @property
    def _mondrian_mode(self) -> str:
        """``"one"``, ``"class"`` or ``"cap"``: how the next calibration groups its inputs."""
        m = self.mondrian
        if m == "auto":
            return "one" if self.pac_delta is not None else "cap"
        if isinstance(m, str):
            return m
        return "class" if m else "one"

    def _check_fitted(self, calibrated: bool = True) -> None:
        if not getattr(self, "initialized_", False) or not hasattr(self, "smoothed_"):
            raise NotFittedError(
                "This RRISESurrogate instance is not fitted yet. Call fit(X) first."
            )
        if calibrated and self.calibrate and not hasattr(self, "threshold_"):
            raise NotFittedError("The surrogate is not calibrated: call conformalize(X_cal).")
        if calibrated and self.calibrate:
            self._check_calibrated_for()

    def _calibrated_setting(self) -> dict:
        """What a calibration is about: the smoothed classifier's sigma and Monte Carlo level."""
        return {"sigma": float(self.smoothed_.sigma), "alpha_mc": self.alpha_mc_}

    def _check_calibrated_for(self) -> None:
        """Refuse to certify once the smoothed classifier no longer matches the calibration.

        The threshold bounds the surrogate's error against the smoothed
        classifier *at the calibration's sigma*; with another sigma the radii
        would be scaled by the new sigma and the certificates would be about
        a different classifier.
        """
        then = getattr(self, "calibrated_for_", None)
        if then is None:
            return
        now = self._calibrated_setting()
        changed = [k for k in then if not abs(then[k] - now[k]) <= 1e-12 * abs(now[k])]
        if changed:
            what = ", ".join(f"{k}={then[k]!r} then, {now[k]!r} now" for k in changed)
            raise ValueError(
                f"This RRISESurrogate was calibrated for a smoothed classifier with other "
                f"settings ({what}); its threshold says nothing about the classifier as it is "
                "now. Restore the smoothed classifier's settings, or recalibrate with "
                "conformalize(X_cal) (refit with fit(X) when sigma changed)."
            )

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

    def _X(self, X: Any, reset: bool = False) -> np.ndarray:
        return validate_inputs(self, X, reset=reset)

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

    def _score_scale(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """A probability (given with its complement) on the conformity-score scale."""
        return probit(p, q)

    def _prediction(self, h: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The surrogate's prediction on the score scale, capped at the calibration ceiling.

        The cap is the largest value a Monte Carlo lower bound with ``n_calibration``
        samples can reach; predicting above it only inflates the scores of confident
        inputs (and so the threshold for every input). Any fixed function of ``x`` is a
        valid conformal predictor, so the cap keeps the guarantee.
        """
        return np.minimum(self._score_scale(h, q), self.prediction_cap_)

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
        X = self._X(X, reset=True)
        smoothed = _unwrap(self.smoothed)
        if not isinstance(smoothed, SmoothedClassifier):
            raise TypeError(
                "smoothed must be a SmoothedClassifier (optionally wrapped in "
                f"sklearn.frozen.FrozenEstimator); got {type(smoothed).__name__}."
            )
        if not smoothed.__sklearn_is_fitted__():
            if y is None:
                raise ValueError(
                    "smoothed is not fitted: pass y so that it can be fitted on part of X, or "
                    "pass a fitted SmoothedClassifier."
                )
            seed = int(self._stream(_BASE).generate_state(1)[0] % (2**31))
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

        Which inputs train the surrogate and which calibrate it:

        - by default the inputs the smoothed classifier was trained on
          (``smoothed.training_inputs_``, kept by ``SmoothedClassifier.fit``)
          train the surrogate, and all of ``X`` calibrates it. No held-out
          input is spent on training; this measured best on digits (mean gap
          to Monte Carlo 2.0 points against 3.5-5.0 for training on part of
          ``X``, benchmarks/README.md);
        - an unfitted ``smoothed`` is first fitted on a ``smoothed_size`` part
          of ``X`` (needs ``y``); then as above, with the rest of ``X``
          calibrating;
        - ``train_inputs`` given: those train, all of ``X`` calibrates;
        - a smoothed classifier without training inputs (a pretrained module,
          ``partial_fit``, a loaded model file), or ``train_inputs="split"``:
          ``X`` is split, ``calibration_size`` of it calibrates.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs used to train neither the smoothed classifier nor the
            surrogate: the calibration set (exchangeable with the inputs to
            certify). Inputs identical to the surrogate's training inputs are
            reported: a warning if a few are, an error if most are (the
            usual mistake of passing the training set again).
        y : array-like, optional
            Labels; only needed when ``smoothed`` is not fitted yet (it is then
            fitted on a ``smoothed_size`` part of ``X``).
        train_inputs : array-like or "split", optional
            The surrogate's training inputs; no labels needed. Without
            ``train_counts`` their targets are computed here (with
            ``n_augment`` noisy copies each). ``"split"`` trains on part of
            ``X`` instead of the smoothed classifier's inputs.
        train_counts : array-like, optional
            Precomputed Monte Carlo counts of ``train_inputs`` (taken as the
            full training set, noisy copies included; e.g.
            ``other.train_inputs_`` and ``other.train_counts_``).
        calibration_counts : array-like, optional
            Precomputed calibration counts of ``X`` when all of ``X``
            calibrates (see :meth:`conformalize`).

        Returns
        -------
        self : RRISESurrogate
        """
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
        X, y = self._prepare(X, y)
        timings: dict[str, float] = {}
        kept = getattr(self.smoothed_, "training_inputs_", None)
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
            train_inputs = self._X(train_inputs)  # validated once, reused below
            _check_held_out(X, train_inputs, what)

        if train_counts is not None:
            if train_inputs is None:
                raise ValueError("train_counts needs the matching train_inputs.")
            X_tr = self._X(train_inputs)
            counts = np.asarray(train_counts)
            if counts.shape != (len(X_tr), len(self.classes_)):
                raise ValueError(
                    f"train_counts has shape {counts.shape}; expected "
                    f"({len(X_tr)}, {len(self.classes_)}) for the given train_inputs."
                )
            X_cal = X
            timings["targets"] = 0.0
        elif train_inputs is not None:
            X_cal = X
            t0 = time.perf_counter()
            X_tr, counts = self.compute_targets(train_inputs)
            timings["targets"] = time.perf_counter() - t0
        else:
            seed = int(self._stream(_SPLIT).generate_state(1)[0] % (2**31))
            X_fit, X_cal = train_test_split(X, test_size=self.calibration_size, random_state=seed)
            t0 = time.perf_counter()
            X_tr, counts = self.compute_targets(X_fit)
            timings["targets"] = time.perf_counter() - t0
        self.train_inputs_, self.train_counts_ = X_tr, counts

        t0 = time.perf_counter()
        targets = (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
        devices = [self.device] if str(self.device).startswith("cuda") else []
        seeds = self._stream(_TRAIN).generate_state(int(self.n_members))
        with torch.random.fork_rng(devices=devices):
            members = self._fit_stacked(X_tr, targets, seeds, fit_params)
            for j, seed in enumerate(seeds if members is None else []):
                # one skorch fit per member; member 0 = the single-network fit
                members = members or []
                torch.manual_seed(int(seed))
                if j > 0 or not self.warm_start or not getattr(self, "initialized_", False):
                    self.initialize()
                self.partial_fit(X_tr, targets, **fit_params)
                members.append(self.module_)
        if len(members) > 1:
            self.module_ = MeanLogProbEnsemble(members).to(self.device)
            self.initialize_optimizer()  # a later partial_fit trains the ensemble
        self.module_.eval()  # certification runs in eval mode (partial_fit switches back)
        timings["training"] = time.perf_counter() - t0

        if self.calibrate:
            t0 = time.perf_counter()
            self.conformalize(X_cal, counts=calibration_counts)
            timings["calibration"] = time.perf_counter() - t0
        else:
            timings["calibration"] = 0.0
        self._measure_amortization(X_cal, timings)
        return self

    def _fit_stacked(
        self, X_tr: np.ndarray, targets: np.ndarray, seeds: np.ndarray, fit_params: dict
    ) -> list[torch.nn.Module] | None:
        """Train every member at once as one batched network; ``None`` where that would differ.

        Each member keeps what it has in the loop of skorch fits: its
        initialization (seeded the same way), its own shuffled order in every
        epoch, its own optimizer state. The loss is the sum of the members'
        mean losses, so with an element-wise optimizer each member's update is
        the one it would get alone; what changes is the cost, one batched
        matrix product per layer for all members instead of one skorch step
        per member. Taken for MLP members without dropout under the default
        training loop (element-wise optimizer, no callbacks but
        :class:`~rrise_sklearn.callbacks.EpochProgress` bars, no validation
        split, no fit parameters); anything else takes the loop. With
        ``verbose > 0`` it prints one line per epoch: the members' mean
        training loss and the epoch's seconds.
        """
        it_kw = self.get_params_for("iterator_train")
        progress = _progress_only(self.callbacks)
        if (
            len(seeds) < 2
            or fit_params
            or self.warm_start
            or self.train_split is not None
            or progress is None
            or self.optimizer not in _ELEMENTWISE_OPTIMIZERS
            or "param_groups" in self.get_params_for("optimizer")
            or self.iterator_train is not torch.utils.data.DataLoader
            or it_kw not in ({"shuffle": True}, {"shuffle": True, "batch_size": self.batch_size})
        ):
            return None
        inits = []
        verbose, self.verbose = self.verbose, 0  # no "Re-initializing ..." line per member
        try:
            for seed in seeds:
                torch.manual_seed(int(seed))
                self.initialize()
                layers = _dense_layers(self.module_)
                if layers is None or any(
                    isinstance(m, torch.nn.Dropout) and m.p > 0 for m in self.module_.modules()
                ):
                    return None
                inits.append((self.module_, layers))
        finally:
            self.verbose = verbose
        device = torch.device(self.device)
        with torch.no_grad():
            params = [
                torch.nn.Parameter(torch.stack([p[i][w].detach() for _, p in inits]).to(device))
                for i in range(len(inits[0][1]))
                for w in (0, 1)
            ]
        relu = [layer[2] for layer in inits[0][1]]
        named = [
            (f"layer{i // 2}.{'weight' if i % 2 == 0 else 'bias'}", p) for i, p in enumerate(params)
        ]
        args, kwargs = self.get_params_for_optimizer("optimizer", named)
        optimizer = self.optimizer(*args, **kwargs)
        criterion = self.criterion_
        criterion.train()
        X = torch.as_tensor(_rows(X_tr), device=device)
        T = torch.as_tensor(targets, device=device)
        k, N = len(seeds), len(X)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        bs = int(self.batch_size) if self.batch_size != -1 else N
        bars = [_epoch_bar(cb.desc, int(self.max_epochs)) for cb in progress]
        if self.verbose:
            print(f"training {k} members as one batched network ({N} rows, batch {bs})")
            print(f"{'epoch':>7}  {'train_loss':>12}  {'dur':>7}\n{'-' * 7}  {'-' * 12}  {'-' * 7}")
        for epoch in range(int(self.max_epochs)):
            t_epoch = time.perf_counter()
            total = 0.0
            order = torch.stack([torch.randperm(N, generator=g) for g in gens]).to(device)
            for i in range(0, N, bs):
                idx = order[:, i : i + bs]
                h = X[idx]  # (k, b, d): member j's own batch
                for li in range(len(relu)):
                    w, b = params[2 * li], params[2 * li + 1]
                    # Linear weights are (out, in): h @ w^T + b, for every member at once
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                    if relu[li]:
                        h = torch.relu(h)
                loss = k * criterion(h.reshape(-1, h.shape[-1]), T[idx].reshape(-1, T.shape[1]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * idx.shape[1]
            for bar in bars:
                bar.update(1)
                bar.set_postfix(loss=f"{total / (k * N):.4f}")  # members' mean train loss
            if self.verbose:
                dur = time.perf_counter() - t_epoch
                print(f"{epoch + 1:>7}  {total / (k * N):>12.4f}  {dur:>7.4f}", flush=True)
        for bar in bars:
            bar.close()
        members = []
        with torch.no_grad():
            for j, (module, layers) in enumerate(inits):
                for li, (w, b, _) in enumerate(layers):
                    w.copy_(params[2 * li][j])
                    b.copy_(params[2 * li + 1][j])
                members.append(module)
        return members

    def compute_targets(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Training inputs (``X`` and ``n_augment`` noisy copies) and their Monte Carlo counts.

        Returns
        -------
        inputs : ndarray of shape (n_samples * (1 + n_augment), n_features)
        counts : ndarray of shape (len(inputs), n_classes)
        """
        if not hasattr(self, "smoothed_"):
            X, _ = self._prepare(X)  # usable before fit, e.g. to share targets
        X = self._X(X)
        rng = np.random.default_rng(self._stream(_AUGMENT))
        copies = [X] + [
            (X + self.augment_scale * self.sigma_ * rng.standard_normal(X.shape)).astype(np.float32)
            for _ in range(int(self.n_augment))
        ]
        inputs = np.concatenate(copies, axis=0)
        n_t = int(self.n_targets or self.smoothed_.n)
        counts = self.smoothed_.sample_counts(
            inputs,
            n_t,
            random_state=self._stream(_TARGETS),
            cache_dir=self._cache("targets", inputs),
        )
        return inputs, counts

    # ------------------------------------------------------------------
    # calibration
    # ------------------------------------------------------------------
    def _cache(self, purpose: str | None, X: np.ndarray) -> str | None:
        """The cache folder of one Monte Carlo job: ``cache_dir/purpose/<inputs digest>``.

        Keyed by the inputs, so that recalibrating on other inputs never meets
        the chunks of an earlier calibration; the model, seed and sample size
        are checked by :func:`~rrise_sklearn.sampling.precompute_counts`.
        """
        if self.cache_dir is None or purpose is None:
            return None
        digest = _inputs_digest(X)[:16]
        return os.path.join(os.fspath(self.cache_dir), purpose, f"{X.shape[0]}-{digest}")

    def _counts_of(
        self,
        X: np.ndarray,
        n: int,
        seed: Any,
        counts: Any = None,
        name: str = "counts",
        purpose: str | None = None,
    ) -> np.ndarray:
        """Monte Carlo counts of ``X`` (independent noise per input), or checked given ones."""
        if counts is None:
            return self.smoothed_.sample_counts(
                X, n, random_state=seed, noise_sharing=1, cache_dir=self._cache(purpose, X)
            )
        counts = counts if isinstance(counts, MonteCarloCounts) else np.asarray(counts)
        if counts.shape != (len(X), len(self.classes_)) or np.any(counts.sum(1) != n):
            raise ValueError(
                f"{name} must have shape ({len(X)}, {len(self.classes_)}) with rows summing "
                f"to {n}; got shape {counts.shape}."
            )
        return counts

    def _mc_bound(self, k: np.ndarray, n: int, alpha: float) -> np.ndarray:
        """Clopper-Pearson lower bound of ``k`` successes in ``n``, on the score scale."""
        lo, comp = stats._cp_lower_with_complement(
            np.asarray(k, dtype=np.float64), np.full(len(k), float(n)), np.full(len(k), alpha)
        )
        return self._score_scale(lo, comp)

    def _calibration_evidence(
        self,
        X: np.ndarray,
        n: int,
        tag: int,
        random_state: Any = None,
        counts: Any = None,
        alpha: float | None = None,
        seed: np.random.SeedSequence | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Surrogate class, its score-scale prediction, the MC score-scale lower bound
        (at ``alpha``, default ``alpha_mc``) and the count of the surrogate's class."""
        top, h, q = self._top(X)
        if seed is None:
            seed = self._seed_for(tag, random_state)
        counts = self._counts_of(
            X,
            n,
            seed,
            counts,
            name=f"counts (n_calibration={n})",
            purpose="calibration" if tag == _CALIB else None,
        )
        k = counts[np.arange(len(X)), top]
        y_mc = self._mc_bound(k, n, self.alpha_mc_ if alpha is None else alpha)
        return top, self._prediction(h, q), y_mc, k

    def _seed_for(self, tag: int, random_state: Any = None) -> np.random.SeedSequence:
        """The noise seed of one purpose (calibration, refinement, verification, ...).

        The estimator's stream for ``tag``, or the caller's ``random_state``
        tagged with it: one explicit seed passed to ``conformalize`` and
        ``verify`` never gives two purposes the same noise.
        """
        if random_state is None:
            return self._stream(tag)
        return np.random.SeedSequence(resolve_seed(random_state), spawn_key=(tag,))

    def _refine_stages(self) -> list[int]:
        """Extra samples of each refinement stage (empty without ``n_refine``)."""
        r = self.n_refine
        if r is None:
            return []
        return [int(r)] if _is_count(r) else [int(e) for e in r]

    @property
    def _stage_alpha(self) -> float:
        """Level of each calibration bound: ``alpha_mc`` split over the stages (union bound)."""
        return self.alpha_mc_ / (1 + len(self._refine_stages()))

    def _check_streams(self, random_state: Any, counts: Any, refine_counts: Any) -> None:
        """No two Monte Carlo inputs of one calibration may share noise (nor the targets')."""
        cal = counts if counts is not None else resolve_seed(self._seed_for(_CALIB, random_state))
        ref = None
        if self.n_refine is not None:
            ref = (
                refine_counts
                if refine_counts is not None
                else resolve_seed(self._seed_for(_REFINE, random_state))
            )
        check_distinct_streams(
            training_targets=getattr(self, "train_counts_", None),
            calibration_counts=cal,
            refine_counts=ref,
        )

    def _refined_bounds(
        self,
        X: np.ndarray,
        top: np.ndarray,
        y_hat: np.ndarray,
        y_mc: np.ndarray,
        k: np.ndarray,
        n_cal: int,
        random_state: Any,
        refine_counts: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Later calibration stages: more samples only where the threshold needs them.

        Repeats until nothing changes: compute the threshold from the current
        scores; every input whose score is at or above it and that has not had
        every stage gets the next stage (``n_refine[j]`` fresh samples; with
        ``refine_size``, the first round also takes that many of the largest
        first-stage scores). An input's bound is the largest of its stages'
        Clopper-Pearson bounds, each from all its samples so far at
        ``alpha_mc / n_stages``.

        Why this is valid and loses nothing: had every input had every stage,
        every bound would hold with probability ``1 - alpha_mc`` (union bound)
        and the scores would be exchangeable. An input with fewer stages has a
        score at least as large, so the threshold is never below that of full
        refinement; and when the loop stops, the threshold and every score above
        it come from inputs with every stage while all others lie below, so the
        threshold *equals* that of full refinement (for these draws). Each
        promotion draws noise from a stream of its own (stage, round).

        Returns the bounds and the indices of the inputs refined at least once.
        """
        m = len(X)
        extras = self._refine_stages()
        alpha_s = self._stage_alpha
        cum = np.cumsum([n_cal, *extras])  # samples after each stage
        mode = self._mondrian_mode
        if mode == "class":
            groups = [np.flatnonzero(top == c) for c in range(len(self.classes_))]
        elif mode == "cap":
            below = self._below_cap(y_hat)
            groups = [np.flatnonzero(~below), np.flatnonzero(below)]
        else:
            groups = [np.arange(m)]
        given = None
        if refine_counts is not None:
            given = self._counts_of(
                X, extras[0], None, refine_counts, name=f"refine_counts (n_refine={extras[0]})"
            )
        base = self._seed_for(_REFINE, random_state)
        level = np.zeros(m, dtype=np.int64)  # stages after the first each input has had
        k = np.asarray(k, dtype=np.int64).copy()
        y_mc = y_mc.copy()
        rnd = 0
        while True:
            scores = self._scores(y_hat, y_mc)
            promote = np.zeros(m, dtype=bool)
            for g in groups:
                if len(g) == 0:
                    continue
                if rnd == 0 and self.refine_size is not None:
                    r = self.refine_size
                    size = min(
                        len(g),
                        int(r) if isinstance(r, (int, np.integer)) else int(np.ceil(r * len(g))),
                    )
                    promote[g[np.argsort(-scores[g], kind="stable")[:size]]] = True
                if mode == "cap":
                    continue  # thresholds below
                try:
                    tau = conformal_threshold(scores[g], self.alpha_conf, self.pac_delta)
                except ValueError:
                    continue  # too few points (Mondrian class): no certificates to tighten
                promote[g[scores[g] >= tau]] = True
            if mode == "cap":
                # the thresholds this calibration would deploy: each group's own, or the
                # pooled one (then every input at or above it matters)
                thr, own, pooled = two_group_thresholds(scores, below, self.alpha_conf)
                for j, g in enumerate(groups):
                    if own[j]:
                        promote[g[scores[g] >= thr[j]]] = True
                if not own.all():
                    promote[scores >= pooled] = True
                # a score <= 0 at the cap already certifies the cap; more samples would only
                # push the threshold below 0 (certificates beyond the cap), so leave it
                promote[~below & (scores <= _CAP_TIE)] = False
            promote &= level < len(extras)
            if not promote.any():
                break
            for j in np.unique(level[promote]):
                sel = np.flatnonzero(promote & (level == j))
                if given is not None:
                    extra = given[sel]
                else:
                    seed = np.random.SeedSequence(
                        base.entropy, spawn_key=(*base.spawn_key, int(j), rnd)
                    )
                    where = os.path.join("refine", f"stage{int(j) + 2}-round{rnd}")
                    extra = self._counts_of(X[sel], extras[j], seed, purpose=where)
                k[sel] += extra[np.arange(len(sel)), top[sel]]
                pooled = self._mc_bound(k[sel], int(cum[j + 1]), alpha_s)
                y_mc[sel] = np.maximum(y_mc[sel], pooled)
                level[sel] = j + 1
            rnd += 1
        self.refine_levels_ = level
        return y_mc, np.flatnonzero(level > 0)

    def conformalize(
        self,
        X_cal: Any,
        *,
        random_state: Any = None,
        counts: Any = None,
        refine_counts: Any = None,
    ) -> RRISESurrogate:
        """Calibrate (or recalibrate) the threshold on fresh data.

        Runs ``n_calibration`` fresh Monte Carlo samples per input (independent
        noise per input), takes the Clopper-Pearson lower bound at ``alpha_mc``
        of the surrogate's class (with ``n_refine``: a second stage for the
        inputs with the largest scores, see the class parameters), and sets
        the threshold ``tau`` to the conformal order statistic of the scores,
        cross-checked against MAPIE's ``SplitConformalRegressor``.

        Parameters
        ----------
        X_cal : array-like of shape (m, n_features)
            Calibration inputs, exchangeable with the inputs to certify and
            used neither to train the smoothed classifier nor the surrogate.
        random_state : int or None, optional
            Seed of the Monte Carlo noise of this calibration; default derived
            from the estimator's ``random_state`` (pass a new one when
            recalibrating on purpose with fresh noise).
        counts : array-like of shape (m, n_classes), optional
            Precomputed Monte Carlo counts of ``X_cal`` with ``n_calibration``
            samples each, drawn independently per input
            (``smoothed.sample_counts(X_cal, n, noise_sharing=1)``) and never
            used to train the surrogate: lets several surrogates share one
            expensive calibration run.
        refine_counts : array-like of shape (m, n_classes), optional
            With ``n_refine``: precomputed counts of ``X_cal`` with ``n_refine``
            samples each, drawn independently of ``counts`` (two calls of
            ``smoothed.sample_counts`` without ``random_state`` are: each call
            uses a fresh stream); only the rows of the refined inputs are used.

        Raises
        ------
        ValueError
            If the calibration set is too small for ``alpha_conf`` (the message
            names the minimum size), or if ``counts``, ``refine_counts``, the
            estimator's own draws or the training targets come from the same
            noise stream (they would count the same draws twice; counts from
            ``sample_counts`` carry their stream in ``noise_key``, plain arrays
            cannot be checked).
        """
        self._check_fitted(calibrated=False)
        X_cal = self._X(X_cal)
        m = len(X_cal)
        K = len(self.classes_)
        conformal_rank(m, self.alpha_conf, self.pac_delta)  # fail early, before Monte Carlo
        n_cal = int(self.n_calibration or self.smoothed_.n)
        refine = self.n_refine is not None
        if refine_counts is not None and not refine:
            raise ValueError("refine_counts needs n_refine (the samples per refined input).")
        if refine_counts is not None and len(self._refine_stages()) > 1:
            raise ValueError(
                "refine_counts needs a single refinement stage (an integer n_refine); with "
                f"n_refine={self.n_refine!r} the later stages are drawn where they are needed."
            )
        self._check_streams(random_state, counts, refine_counts)
        alpha_1 = self._stage_alpha  # alpha_mc split over the stages (union bound)
        t = np.log(alpha_1) / n_cal
        self.prediction_cap_ = float(self._score_scale(np.exp(t), -np.expm1(t)))
        top, y_hat, y_mc, k = self._calibration_evidence(
            X_cal, n_cal, _CALIB, random_state, counts, alpha=alpha_1
        )
        self.refined_ = np.zeros(0, dtype=np.int64)
        self.refine_levels_ = np.zeros(len(X_cal), dtype=np.int64)
        # what monitor() compares deployment scores with: every input scored the same way
        self.first_stage_scores_ = self._scores(y_hat, y_mc)
        self.first_stage_alpha_ = float(alpha_1)
        if refine:
            y_mc, self.refined_ = self._refined_bounds(
                X_cal, top, y_hat, y_mc, k, n_cal, random_state, refine_counts
            )
        scores = self._scores(y_hat, y_mc)
        self.calibration_scores_ = scores
        self.calibration_classes_ = top
        self.calibrated_for_ = self._calibrated_setting()
        self.n_calibration_ = m
        self.calibration_samples_ = n_cal
        mode = self._mondrian_mode
        self.threshold_groups_ = mode
        if mode == "one":
            tau = conformal_threshold(scores, self.alpha_conf, self.pac_delta)
            if self.pac_delta is None:
                self._cross_check(y_hat, y_mc, tau)
            self.threshold_ = tau
        elif mode == "cap":
            below = self._below_cap(y_hat)
            thr, own, pooled = two_group_thresholds(scores, below, self.alpha_conf)
            self._cross_check(y_hat, y_mc, pooled)
            for j, sel in enumerate((~below, below)):
                if own[j]:
                    self._cross_check(y_hat[sel], y_mc[sel], thr[j])
            self.threshold_ = thr
            self.threshold_own_ = own
            self.threshold_group_sizes_ = np.array([int((~below).sum()), int(below.sum())])
            self.pooled_threshold_ = pooled
        else:
            taus = np.full(K, np.inf)
            for c in range(K):
                sel = top == c
                try:
                    taus[c] = conformal_threshold(scores[sel], self.alpha_conf, self.pac_delta)
                except ValueError:
                    continue  # too few points of this class: no certificates for it
                if self.pac_delta is None:
                    self._cross_check(y_hat[sel], y_mc[sel], taus[c])
            self.threshold_ = taus
        return self

    def _cross_check(self, y_hat: np.ndarray, y_mc: np.ndarray, tau: float) -> None:
        """The order statistic must match MAPIE's one-sided split-conformal bound.

        Our exact order statistic is the source of truth. MAPIE 1.6 picks one
        order statistic more conservative for some sizes (floating-point rounding
        of its level: e.g. ``m`` = 499, 899, 999 at ``alpha_conf=0.05``), so its
        threshold may equal the next larger score; anything else is a bug.
        """
        m = len(y_hat)
        if m <= min_calibration_size(self.alpha_conf) or self.alpha_conf >= 0.5:
            # MAPIE refuses the smallest valid size (where tau is the largest score), and
            # a one-sided bound at alpha_conf >= 1/2 has no two-sided MAPIE equivalent.
            return
        tau_mapie = mapie_threshold(y_hat, y_mc, self.alpha_conf)
        scores = np.sort(self._scores(y_hat, y_mc))
        above = np.searchsorted(scores, tau, side="right")  # the next larger score, if any
        allowed = [tau] + ([float(scores[above])] if above < m else [])
        if not any(np.isclose(tau_mapie, a, rtol=1e-9, atol=1e-9) for a in allowed):
            raise RuntimeError(
                f"Conformal threshold mismatch: order statistic {tau!r}, MAPIE {tau_mapie!r} "
                "(neither equal nor one rank more conservative). Please report this with "
                "your MAPIE version."
            )

    # ------------------------------------------------------------------
    # certification
    # ------------------------------------------------------------------
    @property
    def _threshold_groups(self) -> str:
        """How the last calibration grouped its inputs (``"one"``, ``"class"``, ``"cap"``)."""
        return getattr(self, "threshold_groups_", "class" if np.ndim(self.threshold_) else "one")

    def _threshold_for(self, top: np.ndarray, y_hat: np.ndarray | None = None) -> np.ndarray:
        """The calibrated threshold of each input: one for all, per predicted class, or per
        cap group (``y_hat`` the capped score-scale prediction: at the cap or below)."""
        tau = self.threshold_
        groups = self._threshold_groups
        if groups == "one":
            return np.full(len(top), tau)
        if groups == "cap":
            if y_hat is None:
                raise TypeError("_threshold_for needs y_hat with mondrian='cap'")
            return tau[self._below_cap(y_hat).astype(np.int64)]
        return tau[top]

    def _scores(self, y_hat: np.ndarray, y_mc: np.ndarray) -> np.ndarray:
        """Conformity scores from score-scale predictions and Monte Carlo lower bounds."""
        return conformity_scores(y_hat, y_mc, _SCORE)

    def _calibrated_z(self, top: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
        """``PhiInv(p_tilde)`` of the calibrated bound, from the capped score-scale prediction."""
        return calibrated_lower(y_hat, self._threshold_for(top, y_hat), _SCORE)

    def certify(self, X: Any) -> CertificationResult:
        """Certify in one forward pass.

        Radius ``sigma * PhiInv(p_tilde)`` where the calibrated bound
        ``p_tilde`` exceeds 1/2, else abstain. See the class docstring for the
        guarantee.

        Returns
        -------
        result : CertificationResult
            ``prediction``, ``radius``, ``p_lower`` (``p_tilde``);
            ``counts`` is ``None``.
        """
        self._check_fitted()
        X = self._X(X)
        top, h, q = self._top(X)
        sigma = self.sigma_
        if self.calibrate:
            y_hat = self._prediction(h, q)
            z = self._calibrated_z(top, y_hat)
        else:
            z = probit(h, q)
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
                "alpha_conf": self.alpha_conf,
                "alpha_mc": self.alpha_mc_,
                "conformity_score": _SCORE,
                "calibrated": bool(self.calibrate),
                # how the certificates' errors depend on each other (one shared threshold)
                "dependence": "conformal" if self.calibrate else "none",
                **(self._conformal_info(top, y_hat) if self.calibrate else {}),
            },
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """The surrogate's class probabilities (its estimate of the smoothed ones)."""
        self._check_fitted(calibrated=False)
        X = self._X(X)
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

        Draws fresh Monte Carlo samples for every input of ``X`` exactly as the
        calibration did (``n_calibration`` samples, bound at the calibration's
        level; with ``n_refine``, every input also gets the second stage, which
        can only lower its score), counts the scores above the threshold, and
        tests that count against its law under exchangeability: given the
        calibration draw, the count is Beta-Binomial (see
        :func:`~rrise_sklearn.calibration.exceedance_distribution`; one term per
        class with ``mondrian=True``), not Binomial(len(X), alpha_conf) - a binomial
        test raised false alarms at 0.15-0.36 instead of 0.01 at the calibration
        sizes this library uses. With no drift the alarm rate is at most
        ``level`` (marginally over the calibration and verification draws).
        With ``mondrian="cap"`` the test counts the scores above the pooled
        threshold (:attr:`pooled_threshold_`), whose law does not depend on
        which thresholds the calibration deployed; ``n_contradicted`` still
        uses the deployed ones.

        Use it once on a fresh sample of deployment inputs. Testing after every
        batch of traffic inflates the false-alarm rate with the number of looks.

        Parameters
        ----------
        X : array-like of shape (m_v, n_features)
            Deployment inputs, not used for training or calibration.
        n : int, optional
            Samples per input. Must equal the calibration's ``n_calibration``
            (the default): another ``n`` changes the law of the scores, and the
            test would no longer hold its level.
        level : float, default=0.01
            False-alarm probability of the test.
        random_state : int or None, optional
            Seed of the verification Monte Carlo; default a stream derived from
            the estimator's ``random_state``, distinct from the calibration's.

        Returns
        -------
        report : VerificationReport

        Raises
        ------
        ValueError
            If ``n`` differs from the calibration's sample size, ``level`` is
            not in (0, 1), or the surrogate is not calibrated.
        """
        self._check_fitted()
        if not self.calibrate:
            raise ValueError("verify needs a calibrated surrogate (calibrate=True).")
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got level={level!r}.")
        X = self._X(X)
        n_cal = int(self.calibration_samples_)
        if n is not None and int(n) != n_cal:
            raise ValueError(
                f"verify(n={n}) differs from the calibration's n_calibration={n_cal}: the scores "
                "would follow another law and the test would not hold its level. Call "
                "verify(X) (it uses the calibration's n), or recalibrate with "
                "set_params(n_calibration=...) and conformalize(X_cal)."
            )
        alpha_1 = self._stage_alpha
        top, y_hat, y_mc, k = self._calibration_evidence(
            X, n_cal, _VERIFY, random_state, alpha=alpha_1
        )
        base = self._seed_for(_VERIFY_REFINE, random_state)
        n_tot, k = n_cal, np.asarray(k, dtype=np.int64)
        for j, n_extra in enumerate(self._refine_stages()):  # every stage, for every input
            seed = np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, j))
            extra = self._counts_of(X, n_extra, seed)
            k, n_tot = k + extra[np.arange(len(X)), top], n_tot + n_extra
            y_mc = np.maximum(y_mc, self._mc_bound(k, n_tot, alpha_1))
        scores = self._scores(y_hat, y_mc)
        exceed = scores > self._threshold_for(top, y_hat)
        certified = self._calibrated_z(top, y_hat) > 0  # the deployed certificates
        if self._threshold_groups == "cap":
            # the test counts the scores above the pooled threshold: computed the same way
            # whichever thresholds the calibration deployed, so its law needs no condition
            tested = scores > self.pooled_threshold_
            law = self._pooled_law(len(X))
        else:
            tested = exceed
            law = self._exceedance_groups(top)
        n_exceed, m = int(tested.sum()), len(X)
        p_value = exceedance_pvalue(n_exceed, *law)
        return VerificationReport(
            n_inputs=m,
            n_certified=int(certified.sum()),
            n_contradicted=int((exceed & certified).sum()),
            n_exceed=n_exceed,
            rate=n_exceed / m if m else 0.0,
            alpha_conf=float(self.alpha_conf),
            p_value=p_value,
            alarm=p_value <= level,
        )

    def monitor(self, X: Any, *, level: float = 0.01, reset: bool = False) -> MonitorReport:
        """Anytime-valid drift monitoring: call it after every batch of deployment traffic.

        Scores every input of ``X`` exactly as the calibration's first Monte
        Carlo stage scored its inputs (fresh Monte Carlo with
        ``n_calibration`` samples, independent noise per input and per call,
        the same level) and feeds the scores to MAPIE's online exchangeability
        test (:class:`mapie.exchangeability_testing.OnlineMartingaleTest`,
        jumper martingale), seeded with those first-stage calibration scores
        in random order. (With ``n_refine`` the refined scores, which were
        chosen by rank among the calibration inputs, are not used: a new input
        cannot be scored that way, and any fixed scoring rule serves the test.) Under
        exchangeability the martingale exceeds ``1 / level`` with probability
        at most ``level`` over the *whole* stream (Ville's inequality), so the
        false-alarm rate stays below ``level`` however many batches are
        checked. :meth:`verify` is a one-shot test: use it once on a fresh
        sample; use ``monitor`` for repeated checks.

        The monitor restarts by itself after a recalibration, and with
        ``reset=True``. It detects a change of the scores in either direction
        (harder or easier inputs). Its state is not saved by
        :func:`rrise_sklearn.save`.

        Parameters
        ----------
        X : array-like of shape (m, ...)
            The latest batch of deployment inputs (not used for training or
            calibration).
        level : float, default=0.01
            False-alarm probability over the whole stream. Fixed when the
            monitor starts; pass ``reset=True`` to change it.
        reset : bool, default=False
            Start a new stream (after acting on an alarm, say).

        Returns
        -------
        report : MonitorReport

        Raises
        ------
        ValueError
            If the surrogate is not calibrated, or ``level`` is not in (0, 1)
            or differs from the running monitor's.
        """
        self._check_fitted()
        if not self.calibrate:
            raise ValueError("monitor needs a calibrated surrogate (calibrate=True).")
        if not hasattr(self, "first_stage_scores_"):
            raise ValueError(
                "monitor needs the calibration's first-stage scores, which this surrogate does "
                "not have (a model file of an older version): recalibrate with conformalize."
            )
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got level={level!r}.")
        X = self._X(X)
        from ._monitor import ScoreMartingale

        seed_scores = np.asarray(self.first_stage_scores_, dtype=float)
        key = hashlib.sha256(seed_scores.tobytes()).hexdigest()
        state = getattr(self, "monitor_", None)
        if reset or state is None or state["calibration"] != key:
            rng = np.random.default_rng(self._stream(_MONITOR))
            test = ScoreMartingale(
                task="regression",
                test_level=level,
                warn=False,
                burn_in=0,
                random_state=int(rng.integers(2**63)),
            )
            test.feed(rng.permutation(seed_scores))
            calls = state["calls"] if state is not None else 0  # streams never repeat
            state = {"calibration": key, "test": test, "calls": calls, "seen": 0,
                     "start": len(test.martingale_value_history)}  # fmt: skip
            self.monitor_ = state
        test = state["test"]
        if not np.isclose(test.test_level, level):
            raise ValueError(
                f"the running monitor uses level={test.test_level}; pass that level, or "
                f"reset=True to start a new stream at level={level}."
            )
        seed = np.random.SeedSequence(self.root_seed_, spawn_key=(_MONITOR, state["calls"] + 1))
        state["calls"] += 1
        top, y_hat, y_mc, _ = self._calibration_evidence(
            X, int(self.calibration_samples_), _MONITOR, alpha=self.first_stage_alpha_, seed=seed
        )
        scores = self._scores(y_hat, y_mc)
        test.feed(scores)
        state["seen"] += len(X)
        history = np.asarray(test.martingale_value_history[state["start"] :] or [1.0])
        return MonitorReport(
            n_seen=state["seen"],
            n_batch=len(X),
            n_exceed_batch=int((scores > self._threshold_for(top, y_hat)).sum()),
            martingale=float(test.current_martingale_value),
            max_martingale=float(history.max()),
            threshold=float(test.reject_threshold),
            level=float(level),
            alarm=test.is_exchangeable is False,
        )

    def _conformal_info(self, top: np.ndarray, y_hat: np.ndarray) -> dict:
        """What a dataset-level bound needs to account for the shared threshold.

        ``conformal_groups``: one law of the exceedance count (or, with
        ``conformal_split``, several whose quantiles add up, each at its share
        of the level). With ``mondrian='cap'`` a bound must hold whichever
        thresholds the calibration deployed (own or pooled, decided from the
        calibration's group sizes): the group laws hold given the groups, the
        pooled law holds marginally, so each gets half the level, in every
        calibration.
        """
        if self._threshold_groups != "cap":
            m_new, m_cal, rank = self._exceedance_groups(top)
            return {"conformal_groups": {"m_new": m_new, "m_cal": m_cal, "rank": rank}}
        below = self._below_cap(y_hat)
        own = self.threshold_own_
        sizes_new = np.array([int((~below).sum()), int(below.sum())])
        sizes_cal = np.asarray(self.threshold_group_sizes_, dtype=np.int64)
        laws = []
        if own.any():
            j = np.flatnonzero(own)
            laws.append(
                {
                    "m_new": sizes_new[j],
                    "m_cal": sizes_cal[j],
                    "rank": np.array(
                        [conformal_rank(int(sizes_cal[i]), self.alpha_conf) for i in j]
                    ),
                }
            )
        if not own.all():
            # inputs of a group without its own threshold: count every new input against
            # the pooled threshold (at least as many exceedances)
            m_new, m_cal, rank = self._pooled_law(len(top))
            laws.append({"m_new": m_new, "m_cal": m_cal, "rank": rank})
        return {"conformal_groups": laws, "conformal_split": 2}

    def _pooled_law(
        self, m_new: int, pac_delta: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(m_new, m_cal, rank)`` of one threshold over the whole calibration set."""
        m = int(self.n_calibration_)
        rank = conformal_rank(m, self.alpha_conf, pac_delta)
        return np.array([int(m_new)]), np.array([m]), np.array([rank])

    def _below_cap(self, y_hat: np.ndarray) -> np.ndarray:
        """The cap split's groups: ``True`` where the capped prediction is below the cap."""
        return np.asarray(y_hat) < self.prediction_cap_

    def _exceedance_groups(self, top: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per calibration group: new inputs, calibration inputs, threshold rank.

        A group whose threshold is infinite (too few calibration points) gets
        rank ``m_cal + 1`` (no exceedances possible).
        """
        if self._threshold_groups == "one":
            return self._pooled_law(len(top), self.pac_delta)
        K = len(self.classes_)
        m_new = np.bincount(top, minlength=K)
        m_cal = np.bincount(self.calibration_classes_, minlength=K)
        rank = np.empty(K, dtype=np.int64)
        for c in range(K):
            try:
                rank[c] = conformal_rank(int(m_cal[c]), self.alpha_conf, self.pac_delta)
            except ValueError:
                rank[c] = m_cal[c] + 1
        keep = m_cal > 0  # a class with no calibration point has tau = inf: no exceedances
        return m_new[keep], m_cal[keep], rank[keep]

    def _measure_amortization(self, X_cal: np.ndarray, timings: dict) -> None:
        probe = X_cal[: min(len(X_cal), 32)]
        if len(probe) == 0:
            self.amortization_ = dict(timings)
            return
        t0 = time.perf_counter()
        self.smoothed_.certify(probe)
        mc = (time.perf_counter() - t0) / len(probe)
        t0 = time.perf_counter()
        reps = 0
        while reps < 3 or time.perf_counter() - t0 < 0.05:
            self._top(probe)
            reps += 1
        sur = (time.perf_counter() - t0) / (reps * len(probe))
        fixed = timings["targets"] + timings["training"] + timings["calibration"]
        self.amortization_ = {
            **timings,
            "mc_per_query": mc,
            "surrogate_per_query": sur,
            "speedup": mc / sur if sur > 0 else float("inf"),
            "break_even_queries": fixed / (mc - sur) if mc > sur else float("inf"),
        }
