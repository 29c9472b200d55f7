"""SmoothedClassifier: a skorch classifier trained with Gaussian noise and certified by
randomized smoothing (Cohen, Rosenfeld & Kolter 2019)."""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from scipy.stats import norm as _sps_norm
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring
from skorch.dataset import unpack_data
from skorch.utils import to_tensor

from . import stats
from ._validation import (
    fill_missing_params,
    inferred_module_kwargs,
    input_stats,
    merge_input_stats,
    validate_inputs,
    warn_if_off_scale,
    warn_if_sigma_is_negligible,
)
from .callbacks import EpochLog
from .metrics import certified_accuracy
from .results import CertificationResult
from .sampling import (
    MAX_SIGMA,
    MonteCarloCounts,
    NonFiniteScoresError,
    announce_cost,
    monte_carlo_counts,
    non_finite_message,
    precompute_counts,
    resolve_seed,
)
from .training import check_params as check_training
from .training import smoothed_loss

__all__ = ["SmoothedClassifier"]

_FROM_PARAM = object()  # _set_classes: resolve the abstain label from the parameter

# spawn keys of the independent random streams an estimator uses
_SELECT, _ESTIMATE, _PREDICT, _TRAIN, _COUNTS = 0, 1, 2, 3, 4
# what a pickle of a version before a parameter existed did, where that is not its default:
# predict / predict_proba drew ``n`` samples before ``n_predict`` (2026-12-07)
_OLD_PICKLE_DEFAULTS = {"n_predict": None}


def _base_accuracy(net: Any, X: Any, y: Any) -> float:
    """Accuracy of the *base* network (no smoothing) for skorch's validation scoring."""
    logits = net.forward(X, training=False)
    pred = logits.argmax(dim=1).cpu().numpy()
    return float(np.mean(pred == np.asarray(y)))


def check_device(device: Any) -> None:
    """A clear error for a CUDA device on a machine without one (instead of torch's)."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r}, but torch sees no CUDA device here (torch "
            f"{torch.__version__}); pass device='cpu', or install a CUDA build of torch."
        )


def module_kwargs(net: Any) -> dict:
    """The constructor arguments :func:`build_module` passes to ``net.module``."""
    kwargs = net.get_params_for("module")
    if inspect.isclass(net.module):
        try:
            accepted = inspect.signature(net.module).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins
            accepted = {}
        for key, val in getattr(net, "module_inferred_kwargs_", {}).items():
            if key in accepted and key not in kwargs:
                kwargs[key] = val
    return kwargs


def build_module(net: Any) -> Any:
    """skorch's module construction, plus ``n_features`` / ``n_classes`` inferred in ``fit``.

    The inferred values (``net.module_inferred_kwargs_``) are passed only to a
    module *class* whose constructor accepts them and only where the user gave
    no ``module__*`` value.
    """
    return net.initialized_instance(net.module, module_kwargs(net))


def _certified_at(radius: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(n_inputs, n_radii): radius >= r, and not abstaining (radius > 0) for r = 0."""
    return (radius[:, None] >= grid[None, :]) & (radius[:, None] > 0)


def eval_forward(module: torch.nn.Module, X: Any, device: Any, chunk: int = 8192) -> torch.Tensor:
    """Outputs of ``module`` on ``X`` in eval mode, on the CPU, one pass per chunk of rows.

    Runs under ``torch.inference_mode`` in eval mode and restores the
    module's training flag; switches modes only when some submodule is
    training (the switch walks the whole module tree, which costs more than a
    one-input forward pass of a small ensemble). Used for the clean forward passes of
    the estimators (not for Monte Carlo, which goes through
    :func:`~rrise_sklearn.sampling.monte_carlo_counts`).
    """
    switch = _any_training(module)
    was_training = module.training
    if switch:
        module.eval()
    try:
        with torch.inference_mode():
            Xt = torch.as_tensor(X)
            starts = range(0, max(len(Xt), 1), chunk)  # one (empty) pass for no rows
            outs = [module(Xt[i : i + chunk].to(device)).cpu() for i in starts]
    finally:
        if switch:
            module.train(was_training)
    out = torch.cat(outs)
    if out.is_floating_point():
        # numpy on the CPU copy: cheaper than torch's reduction for one-input calls
        finite = (
            np.isfinite(out.numpy()).all()
            if out.dtype in (torch.float32, torch.float64)
            else bool(torch.isfinite(out).all())
        )
        if not finite:
            bad = int((~torch.isfinite(out)).reshape(len(out), -1).any(dim=1).sum())
            raise NonFiniteScoresError(non_finite_message(bad, len(out), "inputs"))
    return out


def _any_training(module: torch.nn.Module) -> bool:
    """Whether ``module`` or any submodule is in training mode (through the plain
    ``_modules`` dicts: ``module.modules()`` costs more than a one-input forward pass)."""
    stack = [module]
    while stack:
        m = stack.pop()
        if m.training:
            return True
        stack.extend(c for c in m._modules.values() if c is not None)
    return False


def _warn_if_n_too_small(n: int, alpha: float, what: str, name: str = "n") -> None:
    """Warn when no ``n``-sample outcome can certify (or decide) at ``alpha``."""
    if what == "certify":
        # the largest bound is alpha ** (1/n): it must exceed 1/2 for a positive radius
        need = int(np.floor(np.log2(1.0 / alpha))) + 1
    else:
        # the best two-sided p-value of n out of n at p = 1/2 is 2 * 0.5 ** n
        need = int(np.ceil(np.log2(2.0 / alpha) - 1e-12))
    if n < need:
        warnings.warn(
            f"{what} with {name}={n} at alpha={alpha} cannot "
            + (
                "certify any input (the radius ceiling is 0)"
                if what == "certify"
                else "reject a tie for any input (it abstains everywhere)"
            )
            + f"; use {name} >= {need}.",
            UserWarning,
            stacklevel=3,
        )


def _is_real(value: Any) -> bool:
    """A real number (numpy scalars included), not a bool or a string."""
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {name}={value!r}.")
    return int(value)


class SmoothedClassifier(NeuralNetClassifier):
    """Randomized-smoothing classifier over a torch module, trained through skorch.

    The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with
    ``eps ~ N(0, sigma^2 I)`` and ``f`` the torch module. ``fit`` trains ``f``
    with Gaussian noise of the same ``sigma`` (fresh noise every training
    batch; validation and inference never see it). ``certify`` gives each input
    a class and an L2 radius that hold with probability ``1 - alpha``.

    All skorch parameters work as usual (``lr``, ``max_epochs``,
    ``batch_size``, ``optimizer``, ``callbacks``, ``device``,
    ``module__*``, ...).

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The base network; must return logits (or scores) of shape
        ``(batch, n_classes)``. When it is a class whose constructor takes
        ``n_features`` / ``n_classes`` and those are not given as
        ``module__*``, they are filled in from the data. An *instance* is used
        as is (see "Smoothing a pretrained module" below).
    sigma : float, default=0.25
        Noise standard deviation, in the units of ``X`` as this estimator sees
        it (after any scaler in a pipeline). Radii are in the same units.
    n0 : int, default=100
        Selection samples of ``certify``.
    n : int, default=10_000
        Estimation samples of ``certify`` (and of ``score``, which certifies).
    n_predict : int or None, default=1_000
        Samples per input of ``predict`` and ``predict_proba`` (``None``:
        ``n``). Predicting needs no radius, so 1,000 samples decide almost every
        input that 10,000 would (``predict`` still abstains when the binomial
        test at ``alpha`` fails) at a tenth of the cost: 1,000 MNIST images
        with ``n=10_000`` took about 40 minutes on 2 CPU cores.
    alpha : float, default=0.001
        Error level: each certificate (and each non-abstaining ``predict``) is
        wrong with probability at most ``alpha``.
    abstain_label : object, default=None
        Label returned on abstention. ``None`` means ``-1`` for numeric
        labels; string labels need an explicit string. Never one of
        ``classes_``.
    score_radius : float, default=0.0
        ``score`` returns the certified accuracy at this radius.
    random_state : int or None, default=None
        Seeds training (weights, shuffling, noise) and every Monte Carlo call.
        The same seed gives the same certificates.
    mc_batch_size : int or "auto", default="auto"
        Rows per forward pass of the Monte Carlo engine; ``"auto"`` times a few
        sizes once per module and input shape
        (:func:`~rrise_sklearn.sampling.tuned_batch_size`). Never changes the
        certificates.
    noise_sharing : int, default=16
        Inputs sharing each noise block in the engine (see
        :func:`~rrise_sklearn.sampling.monte_carlo_counts`).
    n_jobs : int or None, default=None
        Parallel Monte Carlo workers (joblib; follows ``parallel_config``).
    training : str, default="gaussian"
        Training objective of the base network (:mod:`rrise_sklearn.training`):
        ``"gaussian"`` (noise augmentation), ``"consistency"``, ``"macer"``,
        ``"smoothadv"`` or ``"smoothmix"``. Their hyperparameters are
        ``training__*`` parameters (e.g. ``training__lbd=10``), grid-searchable
        like ``sigma``; the defaults are listed in
        :func:`rrise_sklearn.training.defaults`.
    criterion : torch loss class, default=torch.nn.CrossEntropyLoss
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=1e-3
    max_epochs : int, default=20
    batch_size : int, default=128
    train_split : callable or None, default=None
        skorch validation split; ``None`` trains on all of ``X``.
    iterator_train__shuffle : bool, default=True
        Shuffle the training batches (skorch's own default is not to).
    verbose : int, default=0
        ``1``: Monte Carlo progress bars labelled by phase ("selection
        n0=100", "estimation n=10000", "predict n=1000") and, before a phase
        expected to take over a minute, its estimated forward passes and time
        (from one timed batch here; a warning above an hour names the settings
        that shrink it); ``2``: also skorch's epoch log.
    **kwargs
        Any other skorch ``NeuralNetClassifier`` argument.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the column order of ``predict_proba`` and counts.
    n_features_in_ : int
        Number of features seen in ``fit``.
    module_ : torch.nn.Module
        The trained base network.
    training_inputs_ : ndarray of shape (n_samples, ...)
        The inputs of the last ``fit`` (without their noise). An
        :class:`~rrise_sklearn.RRISESurrogate` trains on them by default, so
        that all of its own ``X`` can calibrate. Not set by ``partial_fit`` nor
        for a pretrained module; ``del clf.training_inputs_`` before pickling
        drops it (:func:`rrise_sklearn.save` leaves it out unless
        ``include_training_data=True``). Kept without a copy when ``X`` is
        already float32 and C-contiguous (as scikit-learn's neighbors
        estimators keep theirs): change such an ``X`` in place only after
        the surrogate is fitted, or pass a copy to ``fit``.

    Notes
    -----
    **Smoothing a pretrained module.** Pass the trained instance and its
    classes and call ``initialize()`` instead of ``fit``::

        clf = SmoothedClassifier(trained_module, classes=[0, 1, 2], sigma=0.25).initialize()
        clf.certify(X)

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from rrise_sklearn import SmoothedClassifier
    >>> from rrise_sklearn.nets import MLP
    >>> X, y = make_moons(200, noise=0.1, random_state=0)
    >>> clf = SmoothedClassifier(MLP, sigma=0.25, max_epochs=30, lr=1e-2,
    ...                          module__hidden=32, n=1000, random_state=0).fit(X, y)
    >>> prediction, radius = clf.certify(X[:5])
    >>> prediction.shape, bool((radius >= 0).all())
    ((5,), True)
    """

    def __init__(
        self,
        module: Any,
        *args: Any,
        sigma: float = 0.25,
        n0: int = 100,
        n: int = 10_000,
        n_predict: int | None = 1_000,
        alpha: float = 0.001,
        abstain_label: Any = None,
        score_radius: float = 0.0,
        random_state: Any = None,
        mc_batch_size: int | str = "auto",
        noise_sharing: int = 16,
        n_jobs: int | None = None,
        training: str = "gaussian",
        criterion: Any = torch.nn.CrossEntropyLoss,
        optimizer: Any = torch.optim.Adam,
        lr: float = 1e-3,
        max_epochs: int = 20,
        batch_size: int = 128,
        train_split: Any = None,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        # shuffle training batches unless told otherwise (skorch's DataLoader does not)
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            *args,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            verbose=verbose,
            **kwargs,
        )
        self.sigma = sigma
        self.n0 = n0
        self.n = n
        self.n_predict = n_predict
        self.alpha = alpha
        self.abstain_label = abstain_label
        self.score_radius = score_radius
        self.random_state = random_state
        self.mc_batch_size = mc_batch_size
        self.noise_sharing = noise_sharing
        self.n_jobs = n_jobs
        self.training = training

    def __setstate__(self, state: dict) -> None:
        # a pickle of an earlier version: parameters added since get what that version did
        super().__setstate__(fill_missing_params(type(self), state, _OLD_PICKLE_DEFAULTS))

    # ------------------------------------------------------------------
    # skorch hooks
    # ------------------------------------------------------------------
    @property
    def _default_callbacks(self) -> list:
        # skorch's default valid_acc would call our (smoothed, Monte Carlo) predict
        # every epoch; score the base network instead.
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_base_accuracy, name="valid_acc", lower_is_better=False)),
            ("print_log", EpochLog()),
        ]

    prefixes_ = [*NeuralNetClassifier.prefixes_, "training"]

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict:
        """One training step of the ``training`` objective (see :mod:`rrise_sklearn.training`).

        ``"gaussian"``: skorch's step on ``x + N(0, sigma^2 I)``. The other
        objectives compute their loss from several noisy copies (and, for
        SmoothAdv / SmoothMix, attacked points) of the batch.
        """
        Xi, yi = unpack_data(batch)
        if not isinstance(Xi, torch.Tensor):
            raise TypeError(
                "SmoothedClassifier adds noise to tensor inputs; got a batch of type "
                f"{type(Xi).__name__}. Pass X as a float array."
            )
        sigma = float(self.sigma)
        if self.training == "gaussian":
            noisy = Xi + sigma * torch.randn_like(Xi)
            return super().train_step_single((noisy, yi), **fit_params)
        self._set_training(True)
        Xi, yi = to_tensor(Xi, device=self.device), to_tensor(yi, device=self.device)
        epoch = max(0, len(self.history) - 1)
        loss = smoothed_loss(
            self.training, self.module_, Xi, yi, sigma, self.get_params_for("training"), epoch
        )
        loss.backward()
        with torch.no_grad():
            y_pred = self.module_(Xi + sigma * torch.randn_like(Xi))
        return {"loss": loss, "y_pred": y_pred}

    def initialize_module(self) -> SmoothedClassifier:
        """Build the module, filling ``n_features`` / ``n_classes`` from the data."""
        self.module_ = build_module(self)
        return self

    def initialize_optimizer(self, *args: Any, **kwargs: Any) -> SmoothedClassifier:
        """As skorch's, but a module without trainable parameters gets no optimizer.

        (A fixed, parameter-free base classifier can still be smoothed and certified.)
        """
        if not any(p.requires_grad for p in self.module_.parameters()):
            self.optimizer_ = None
            return self
        return super().initialize_optimizer(*args, **kwargs)

    def initialize(self) -> SmoothedClassifier:
        """Initialize the skorch components; with ``classes=...`` the estimator can certify.

        This is the idiom for smoothing a pretrained module without training.
        """
        check_device(self.device)
        super().initialize()
        if self.classes is not None and not hasattr(self, "label_encoder_"):
            self._set_classes(np.asarray(self.classes))
        return self

    # ------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------
    def _validate_smoothing_params(self) -> None:
        sigma = self.sigma
        if not _is_real(sigma) or not np.isfinite(sigma) or not 0 < sigma <= MAX_SIGMA:
            raise ValueError(
                "sigma (the noise standard deviation, in the units of X) must be a finite "
                f"number in (0, {MAX_SIGMA:g}] (the noise is float32); got sigma={sigma!r}."
            )
        check_training(self.training, self.get_params_for("training"))
        _check_int("n0", self.n0)
        _check_int("n", self.n)
        if self.n_predict is not None:
            _check_int("n_predict", self.n_predict)
        if self.mc_batch_size != "auto":
            _check_int("mc_batch_size", self.mc_batch_size)
        _check_int("noise_sharing", self.noise_sharing)
        if not _is_real(self.alpha) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), e.g. 0.001; got alpha={self.alpha!r}.")
        if not _is_real(self.score_radius) or not self.score_radius >= 0:
            raise ValueError(f"score_radius must be >= 0; got {self.score_radius!r}.")

    def _set_classes(self, classes: np.ndarray, abstain_label: Any = _FROM_PARAM) -> None:
        """Encode the classes and resolve the abstain label (``abstain_label``: the one a fit
        resolved, when restoring; default: from the parameter)."""
        enc = LabelEncoder().fit(classes)
        if len(enc.classes_) < 2:
            raise ValueError(
                f"y has only one class ({enc.classes_.tolist()}); a classifier needs at least "
                "two classes. If the data set really has more, pass them as classes=[...]."
            )
        abstain = self.abstain_label if abstain_label is _FROM_PARAM else abstain_label
        if abstain is None:
            if enc.classes_.dtype.kind in "OUS":
                raise ValueError(
                    "String class labels need an explicit abstain_label of the same type, e.g. "
                    "SmoothedClassifier(..., abstain_label='abstain')."
                )
            abstain = -1
        if abstain in set(enc.classes_.tolist()):
            raise ValueError(
                f"abstain_label={abstain!r} is one of the classes {enc.classes_.tolist()}; "
                "choose a label that is not a class."
            )
        self.label_encoder_ = enc
        self.classes_inferred_ = enc.classes_
        self.abstain_label_ = abstain

    @property
    def classes_(self) -> np.ndarray:  # noqa: D401
        """Class labels seen in ``fit`` (or given by ``classes``)."""
        try:
            return self.label_encoder_.classes_
        except AttributeError:
            raise AttributeError(
                "SmoothedClassifier has no classes_ yet: call fit(X, y), or pass classes=... "
                "and call initialize() to smooth a pretrained module."
            ) from None

    def _check_fitted(self) -> None:
        if not getattr(self, "initialized_", False) or not hasattr(self, "label_encoder_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call fit(X, y) first "
                "(or pass classes=... and call initialize() for a pretrained module)."
            )

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "initialized_", False) and hasattr(self, "label_encoder_"))

    def _validate_X(self, X: Any) -> np.ndarray:
        self._check_fitted()
        self._validate_smoothing_params()
        X = validate_inputs(self, X, reset=not hasattr(self, "n_features_in_"))
        warn_if_off_scale(
            type(self).__name__, X, getattr(self, "input_stats_", None), float(self.sigma)
        )
        return X

    def _root_seed(self, random_state: Any = None) -> int:
        rs = self.random_state if random_state is None else random_state
        return resolve_seed(rs)

    @staticmethod
    def _stream(root: int, tag: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(root, spawn_key=(tag,))

    # ------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------
    def fit(self, X: Any, y: Any, **fit_params: Any) -> SmoothedClassifier:
        """Train the base module on Gaussian-noise-augmented ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs (numeric, finite).
        y : array-like of shape (n_samples,)
            Labels (integers or strings).
        **fit_params
            Passed to skorch's ``fit``.

        Returns
        -------
        self : SmoothedClassifier
        """
        if "sample_weight" in fit_params:
            raise TypeError(
                "SmoothedClassifier.fit does not take sample_weight (skorch would pass it to "
                "the module's forward). Weight classes with criterion__weight=torch.tensor(...), "
                "or resample X and y."
            )
        self._validate_smoothing_params()
        X, y = validate_inputs(self, X, y, reset=True)
        check_classification_targets(y)
        self.input_stats_ = input_stats(X)  # the data-scale guard's reference
        warn_if_sigma_is_negligible(type(self).__name__, float(self.sigma), self.input_stats_)
        self._n_count_draws = 0
        classes = np.unique(y) if self.classes is None else np.asarray(self.classes)
        self._set_classes(classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown.tolist()} that are not in classes.")
        y_enc = self.label_encoder_.transform(y).astype(np.int64)
        self.module_inferred_kwargs_ = inferred_module_kwargs(self.input_shape_, len(self.classes_))
        if self.random_state is None:
            self._fit_encoded(X, y_enc, **fit_params)
        else:
            seed = self._stream(self._root_seed(), _TRAIN).generate_state(1)[0]
            devices = [self.device] if str(self.device).startswith("cuda") else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed))
                self._fit_encoded(X, y_enc, **fit_params)
        # skorch set classes_inferred_ from the encoded labels; restore the real ones
        self.classes_inferred_ = self.label_encoder_.classes_
        self.training_inputs_ = X
        return self

    def _fit_encoded(self, X: np.ndarray, y_enc: np.ndarray, **fit_params: Any) -> None:
        # skorch's NeuralNet.fit, on labels already encoded (our partial_fit encodes)
        if not self.warm_start or not getattr(self, "initialized_", False):
            self.initialize()
        NeuralNetClassifier.partial_fit(self, X, y_enc, **fit_params)

    def partial_fit(
        self, X: Any, y: Any, classes: Any = None, **fit_params: Any
    ) -> SmoothedClassifier:
        """Train for one more epoch (noise-augmented), keeping the current weights.

        ``classes`` is needed on the first call if ``y`` does not show every class.
        """
        self._validate_smoothing_params()
        first = not getattr(self, "initialized_", False) or not hasattr(self, "label_encoder_")
        X, y = validate_inputs(self, X, y, reset=first)
        # the network is no longer trained on fit's inputs alone
        self.__dict__.pop("training_inputs_", None)
        self.input_stats_ = merge_input_stats(
            None if first else getattr(self, "input_stats_", None), input_stats(X)
        )
        check_classification_targets(y)
        if first:
            given = classes if classes is not None else self.classes
            self._set_classes(np.unique(y) if given is None else np.asarray(given))
            self.module_inferred_kwargs_ = inferred_module_kwargs(
                self.input_shape_, len(self.classes_)
            )
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown.tolist()} that are not in classes_.")
        y_enc = self.label_encoder_.transform(y).astype(np.int64)
        super().partial_fit(np.ascontiguousarray(X), y_enc, **fit_params)
        self.classes_inferred_ = self.label_encoder_.classes_
        return self

    # ------------------------------------------------------------------
    # Monte Carlo
    # ------------------------------------------------------------------
    def sample_counts(
        self,
        X: Any,
        n: int | None = None,
        *,
        random_state: Any = None,
        noise_sharing: int | None = None,
        cache_dir: str | None = None,
        chunk_size: int = 256,
        verbose: int | None = None,
        desc: str | None = None,
    ) -> MonteCarloCounts:
        """Monte Carlo class counts of the base network under this estimator's noise.

        Parameters
        ----------
        X : array-like of shape (n_inputs, n_features)
        n : int, optional
            Samples per input; default ``self.n``.
        random_state : int, SeedSequence or None
            Seed of this call. ``None`` (default): a fresh stream on every call,
            derived from ``self.random_state`` (call ``k`` after ``fit`` uses
            stream ``k``, so a sequence of calls is reproducible), and never the
            noise of an earlier call. Two calls with the same explicit seed
            draw the *same* noise.
        noise_sharing : int, optional
            Override the estimator's ``noise_sharing`` (``1``: independent
            inputs).
        cache_dir : str, optional
            Keep finished chunks of ``chunk_size`` inputs in this folder, so
            that a crashed or killed run resumes where it stopped (see
            :func:`~rrise_sklearn.sampling.precompute_counts`; the counts are
            the same as without it). Needs a fixed seed (``random_state`` here
            or on the estimator).
        chunk_size : int, default=256
            Inputs per cached chunk.
        verbose : int, optional
            Override the estimator's ``verbose`` for this call (progress bar,
            cost announcement).
        desc : str, optional
            Label of the progress bar and the announcement; default
            ``"counts n=<n>"``.

        Returns
        -------
        counts : MonteCarloCounts of shape (n_inputs, n_classes)
            Columns in ``classes_`` order; rows sum to ``n``. Its
            ``noise_key`` names the noise stream, so that
            :meth:`RRISESurrogate.conformalize <rrise_sklearn.RRISESurrogate.conformalize>`
            can refuse counts that reuse each other's noise.
        """
        X = self._validate_X(X)
        if cache_dir is not None and random_state is None and self.random_state is None:
            raise ValueError(
                "cache_dir needs a fixed seed: set random_state on the estimator or pass "
                "random_state=..., so that a rerun draws the same noise."
            )
        if random_state is None:
            k = getattr(self, "_n_count_draws", 0)
            self._n_count_draws = k + 1
            random_state = np.random.SeedSequence(self._root_seed(), spawn_key=(_COUNTS, k))
        n = self.n if n is None else n
        desc = f"counts n={n}" if desc is None else desc
        verbose = self.verbose if verbose is None else verbose
        if cache_dir is None:
            return self._counts(X, n, random_state, noise_sharing, desc=desc, verbose=verbose)
        return precompute_counts(
            self.module_,
            X,
            sigma=float(self.sigma),
            n=_check_int("n", n),
            n_classes=len(self.classes_),
            random_state=random_state,
            noise_sharing=int(noise_sharing or self.noise_sharing),
            cache_dir=cache_dir,
            chunk_size=chunk_size,
            n_jobs=self.n_jobs,
            batch_size=self.mc_batch_size,
            device=self.device,
            verbose=verbose,
            desc=desc,
        )

    def _counts(self, X: np.ndarray, n: int, seed: Any, noise_sharing: int | None = None,
                desc: str = "Monte Carlo", verbose: int | None = None) -> Any:  # fmt: skip
        if seed is None:
            seed = self._stream(self._root_seed(), _PREDICT)
        n = _check_int("n", n)
        verbose = self.verbose if verbose is None else verbose
        _announce(self, X, n, desc, verbose)
        try:
            return monte_carlo_counts(
                self.module_,
                X,
                sigma=float(self.sigma),
                n=n,
                n_classes=len(self.classes_),
                batch_size=self.mc_batch_size,
                random_state=seed,
                device=self.device,
                noise_sharing=int(noise_sharing or self.noise_sharing),
                n_jobs=self.n_jobs,
                verbose=verbose,
                desc=desc,
            )
        except RuntimeError as exc:  # a shape mismatch inside the network, say
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            raise ValueError(
                f"the network failed on inputs of shape {tuple(X.shape[1:])} ({exc}); check that "
                "X has the shape and number of features the module expects."
            ) from exc

    def _labels(self, idx: np.ndarray, abstain: np.ndarray) -> np.ndarray:
        labels = self.classes_[idx]
        if not abstain.any():
            return labels
        out = labels.astype(object)
        out[abstain] = self.abstain_label_
        text_classes = labels.dtype.kind in "US" or (
            labels.dtype.kind == "O" and all(isinstance(v, str) for v in labels)
        )
        if text_classes != isinstance(self.abstain_label_, str):
            return out  # numbers and a text label (or the reverse): keep both types as they are
        return np.asarray(out.tolist())

    # ------------------------------------------------------------------
    # prediction and certification
    # ------------------------------------------------------------------
    @property
    def _n_predict(self) -> int:
        return int(self.n if self.n_predict is None else self.n_predict)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Monte Carlo class frequencies of the smoothed classifier (``n_predict`` samples).

        Returns
        -------
        proba : ndarray of shape (n_inputs, n_classes)
            Rows sum to 1; columns in ``classes_`` order. Uses the same noise
            as :meth:`predict`, so ``predict`` is the argmax wherever it does not
            abstain.
        """
        X = self._validate_X(X)
        counts = self._counts(X, self._n_predict, None, desc=f"predict_proba n={self._n_predict}")
        return counts / counts.sum(axis=1, keepdims=True)

    def base_predict(self, X: Any) -> np.ndarray:
        """Class of the *base* network on clean inputs (no noise, no smoothing).

        For reports: the base network's clean accuracy beside the smoothed
        classifier's certified accuracy shows what smoothing costs.

        Returns
        -------
        prediction : ndarray of shape (n_inputs,)
            Labels of ``classes_``; never abstains.
        """
        X = self._validate_X(X)
        top = eval_forward(self.module_, X, self.device).argmax(dim=1).numpy()
        return self.classes_[top]

    def predict(self, X: Any) -> np.ndarray:
        """Cohen's PREDICT: the smoothed class, or ``abstain_label`` when unsure.

        Draws ``n_predict`` samples, and returns the top class only if the two-sided
        binomial test of the top two counts rejects a tie at level ``alpha``;
        the probability of returning a class other than the smoothed
        classifier's is then at most ``alpha``.

        Returns
        -------
        prediction : ndarray of shape (n_inputs,)
        """
        X = self._validate_X(X)
        _warn_if_n_too_small(self._n_predict, float(self.alpha), "predict", "n_predict")
        counts = self._counts(X, self._n_predict, None, desc=f"predict n={self._n_predict}")
        order = np.argsort(-counts, axis=1, kind="stable")
        top = order[:, 0]
        n_a = counts[np.arange(len(counts)), top]
        n_b = counts[np.arange(len(counts)), order[:, 1]] if counts.shape[1] > 1 else 0 * n_a
        ok = np.asarray(stats.predict_test(n_a, n_b, float(self.alpha)), dtype=bool)
        return self._labels(top, ~ok)

    def certify(
        self,
        X: Any,
        *,
        method: str = "cohen",
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        random_state: Any = None,
    ) -> CertificationResult:
        """Cohen's CERTIFY: a class and an L2 radius per input, each valid w.p. ``1 - alpha``.

        ``n0`` samples select the class; ``n`` *fresh* samples give its count
        ``k``; the one-sided Clopper-Pearson bound ``p_lower`` at ``alpha``
        gives the radius ``sigma * PhiInv(p_lower)``, or abstention (radius 0)
        when ``p_lower <= 1/2``.

        Parameters
        ----------
        X : array-like of shape (n_inputs, n_features)
        method : {"cohen", "top2"}, default="cohen"
            ``"top2"``: radius ``sigma/2 (PhiInv(pA_lower) - PhiInv(pB_upper))``
            with ``alpha/2`` for the top class's lower bound and ``alpha/2``
            shared (Bonferroni) by the upper bounds of all other classes, and
            ``pB_upper`` capped at ``1 - pA_lower``. Never smaller than the
            single-bound radius at ``alpha/2``; larger with many classes.
        n0, n, alpha : optional
            Override the estimator's parameters for this call.
        random_state : optional
            Seed of this call; default derived from ``self.random_state``.

        Returns
        -------
        result : CertificationResult
            ``prediction``, ``radius``, ``p_lower``, ``counts`` (estimation
            counts); unpacks as ``prediction, radius``.
        """
        X = self._validate_X(X)
        n0 = _check_int("n0", self.n0 if n0 is None else n0)
        n = _check_int("n", self.n if n is None else n)
        alpha = float(self.alpha if alpha is None else alpha)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1); got alpha={alpha!r}.")
        if method not in ("cohen", "top2"):
            raise ValueError(f"method must be 'cohen' or 'top2'; got {method!r}.")
        _warn_if_n_too_small(n, alpha if method == "cohen" else alpha / 2, "certify")
        root = self._root_seed(random_state)
        counts0 = self._counts(X, n0, self._stream(root, _SELECT), desc=f"selection n0={n0}")
        top = np.argmax(counts0, axis=1)
        counts = self._counts(X, n, self._stream(root, _ESTIMATE), desc=f"estimation n={n}")
        k = counts[np.arange(len(X)), top]
        sigma = float(self.sigma)
        if method == "cohen":
            p_lower = stats.clopper_pearson_lower(k, n, alpha)
            radius = stats.certified_radius(k, n, alpha, sigma)
        else:
            p_lower = stats.clopper_pearson_lower(k, n, alpha / 2)
            K = counts.shape[1]
            others = counts.copy()
            others[np.arange(len(X)), top] = -1
            k_b = others.max(axis=1).clip(min=0)
            level = alpha / 2 / max(1, K - 1)
            p_upper = np.minimum(stats.clopper_pearson_upper(k_b, n, level), 1.0 - p_lower)
            radius = stats.top2_radius(p_lower, p_upper, sigma)
        p_lower = np.atleast_1d(np.asarray(p_lower, dtype=np.float64))
        radius = np.atleast_1d(np.asarray(radius, dtype=np.float64))
        return CertificationResult(
            prediction=self._labels(top, radius <= 0),
            radius=radius,
            p_lower=p_lower,
            counts=counts,
            abstain_label=self.abstain_label_,
            n_samples=np.full(len(X), n0 + n, dtype=np.int64),
            info={
                "sigma": sigma,
                "alpha": alpha,
                "n0": n0,
                "n": n,
                "method": method,
                "noise_sharing": int(self.noise_sharing),
            },
        )

    def certify_adaptive(
        self,
        X: Any,
        *,
        max_n: int = 100_000,
        radius: float | Any = None,
        tol: float = 0.01,
        max_radius: float | None = None,
        n_start: int = 300,
        growth: float = 1.3,
        final_share: float = 0.5,
        futility: float | None = 0.05,
        n0: int | None = None,
        alpha: float | None = None,
        random_state: Any = None,
    ) -> CertificationResult:
        """Sound early-stopping CERTIFY: samples only as long as they can still help.

        After ``n0`` selection samples, estimation samples are drawn in batches
        up to geometric checkpoints ``N_1 = n_start, N_{t+1} = ceil(growth N_t)``
        (the last one is ``max_n``). At interim look ``t`` the Clopper-Pearson
        bounds use level ``alpha_t = 5 alpha' / ((t + 4)(t + 5))`` with
        ``alpha' = (1 - final_share) alpha``, and the last look uses
        ``final_share * alpha``; these sum to less than ``alpha``, so all bounds
        hold together with probability
        ``1 - alpha`` whenever sampling stops (union bound, method.md section
        2). Re-checking a fixed-``n`` bound after each batch instead is unsound.
        The reported radius is the largest one certified at any look.

        Stopping, per input (it never affects validity, only cost):

        * estimation mode (``radius=None``): when even ``max_n`` samples could
          not raise the radius by more than ``tol`` (judged from the valid upper
          bound of the probability), or the upper bound is at or below 1/2
          (abstain), or at ``max_n``;
        * decision mode (``radius=r``): as soon as the radius ``r`` is certified,
          or as soon as ``max_n`` samples could not certify ``r``;
        * grid decision mode (``radius=[r1, r2, ...]``): as soon as every radius
          of the grid is decided either way (the certified accuracy at each
          grid radius is then what ``max_n`` fixed samples would tend to give,
          at a fraction of the cost).

        Parameters
        ----------
        X : array-like of shape (n_inputs, n_features)
        max_n : int, default=100_000
            Most estimation samples per input.
        radius : float or sequence of float, optional
            Decision mode: answer "is the radius at least ``radius``?" (for
            every radius of a sequence; 0 means "not abstaining").
        tol : float, default=0.01
            Radius gain (input units) below which more samples are not worth it.
        max_radius : float, optional
            Estimation mode: also stop an input once its certified radius
            reaches this value (the largest radius you care about).
        n_start, growth : int, float, default=300, 1.3
            First checkpoint and growth factor of the checkpoints (1.05 to
            10). Close checkpoints stop an input soon after it is decided; the
            price, smaller per-look levels, grows only with the logarithm of
            the number of looks. On digits (grid mode, see ``futility``) the
            defaults needed 10.2-10.3x fewer samples than the fixed budget,
            ``growth=2, n_start=100`` 8.5-8.6x (benchmarks/README.md).
        final_share : float, default=0.5
            Share of ``alpha`` spent on the last look (at ``max_n``); the rest
            follows the ``5 alpha / ((t + 4)(t + 5))`` schedule over the interim
            looks. The levels sum to at most ``alpha`` either way; a larger
            share keeps the radius at ``max_n`` closer to a fixed-``n``
            certificate, a smaller one makes early decisions cheaper.
            ``0`` uses the plain schedule over all looks.
        futility : float or None, default=0.05
            Level of the upper confidence bound used to give up on an input
            (decide "no" / stop estimating). Giving up never produces a
            certificate, so this level does not enter the guarantee; it trades
            samples against agreement with a fixed ``max_n`` certificate.
            ``None`` uses each look's own level (most cautious). An input is
            given up once even ``max_n`` samples, the remaining ones drawn at
            that upper bound, could not reach the radius. On digits (grid mode
            over r in {0, 0.25, 0.5, 0.75}, max_n = 1e5, expected figures over
            replays of the sampling, benchmarks/README.md) 0.05 needed 10.2x
            fewer samples than the fixed budget, at most 0.41-0.51 points below
            its certified accuracy (two sets of replays), ``None`` 7.2x
            (0.17-0.25 points), 0.1 11.3x (0.79-0.98 points).
        n0, alpha, random_state : optional
            Override the estimator's parameters.

        Returns
        -------
        result : CertificationResult
            As :meth:`certify`, with ``n_samples`` (selection + estimation)
            per input; ``counts`` are the estimation counts drawn. In decision
            mode ``info["decided"]`` (shape ``(n_inputs, n_radii)`` for a
            sequence) is ``True`` where the radius is at least ``radius``.
        """
        X = self._validate_X(X)
        n0 = _check_int("n0", self.n0 if n0 is None else n0)
        max_n = _check_int("max_n", max_n)
        n_start = min(_check_int("n_start", n_start), max_n)
        alpha = float(self.alpha if alpha is None else alpha)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1); got alpha={alpha!r}.")
        if not 1.05 <= growth <= 10:
            raise ValueError(f"growth must lie in [1.05, 10]; got growth={growth!r}.")
        grid = None if radius is None else np.atleast_1d(np.asarray(radius, dtype=np.float64))
        if grid is not None and (
            grid.ndim != 1
            or len(grid) == 0
            or not np.all(np.isfinite(grid))
            or np.any(grid < 0)
            or (np.ndim(radius) == 0 and radius <= 0)
        ):
            raise ValueError(
                f"radius must be a number > 0 or a sequence of radii >= 0; got radius={radius!r}."
            )
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0; got tol={tol!r}.")
        if not 0 <= final_share < 1:
            raise ValueError(f"final_share must lie in [0, 1); got final_share={final_share!r}.")
        # union bound: (1 - final_share) alpha over the interim looks, final_share alpha
        # at max_n (where inputs close to a decision end up)
        checkpoints, levels = stats._anytime_schedule(n_start, growth, max_n, alpha, final_share)
        if futility is not None and not 0 < futility < 1:
            raise ValueError(f"futility must lie in (0, 1) or be None; got futility={futility!r}.")
        sigma = float(self.sigma)
        root = self._root_seed(random_state)
        m, K = len(X), len(self.classes_)
        top = np.argmax(self._counts(X, n0, self._stream(root, _SELECT)), axis=1)
        counts = np.zeros((m, K), dtype=np.int64)
        drawn = np.zeros(m, dtype=np.int64)
        best_r = np.zeros(m)
        best_p = np.zeros(m)
        active = np.ones(m, dtype=bool)
        rows = np.arange(m)
        targets = None if grid is None else _sps_norm.cdf(grid / sigma)  # p needed per radius
        for t, (n_t, a_t) in enumerate(zip(checkpoints, levels, strict=True)):
            idx = rows[active]
            if len(idx) == 0:
                break
            seed = np.random.SeedSequence(root, spawn_key=(_ESTIMATE, 1000 + t))
            counts[idx] += self._counts(X[idx], int(n_t - drawn[idx][0]), seed)
            drawn[idx] = n_t
            k = counts[idx, top[idx]]
            lo = np.atleast_1d(stats.clopper_pearson_lower(k, n_t, a_t))
            r_t = np.atleast_1d(stats.certified_radius(k, n_t, a_t, sigma))
            better = r_t > best_r[idx]
            best_r[idx[better]] = r_t[better]
            best_p[idx] = np.maximum(best_p[idx], lo)
            if n_t >= max_n:
                break
            # the best radius max_n samples could give if p were at its upper bound: the k
            # successes already drawn stay, the remaining max_n - n_t come at rate `up`
            up = np.atleast_1d(
                stats.clopper_pearson_upper(k, n_t, a_t if futility is None else futility)
            )
            expected = k + up * (max_n - n_t)
            reach = np.array([stats._cp_lower_real(e, max_n, levels[-1]) for e in expected])
            r_reach = np.atleast_1d(stats.radius_from_p_lower(reach, sigma))
            if targets is None:
                done = (up <= 0.5) | (r_reach - best_r[idx] <= tol)
                if max_radius is not None:
                    done |= best_r[idx] >= max_radius
            else:
                # each grid radius is decided once certified, or once out of reach
                certified = _certified_at(best_r[idx], grid)
                done = np.all(certified | (reach[:, None] <= targets[None, :]), axis=1)
            active[idx[done]] = False
        prediction = self._labels(top, best_r <= 0)
        info = {
            "noise_sharing": int(self.noise_sharing),
            "sigma": sigma,
            "alpha": alpha,
            "n0": n0,
            "max_n": max_n,
            "checkpoints": checkpoints,
            "levels": levels,
            "futility": futility,
            "method": "adaptive",
        }
        if grid is not None:
            decided = _certified_at(best_r, grid)
            info["radius"] = radius
            info["decided"] = decided[:, 0] if np.ndim(radius) == 0 else decided
        return CertificationResult(
            prediction=prediction,
            radius=best_r,
            p_lower=best_p,
            counts=counts,
            abstain_label=self.abstain_label_,
            n_samples=drawn + n0,
            info=info,
        )

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Certified accuracy at ``score_radius`` (abstentions count as errors).

        This is what ``GridSearchCV(clf, {"sigma": [...]})`` maximizes by default.
        """
        res = self.certify(X)
        return float(
            certified_accuracy(np.asarray(y), res.prediction, res.radius, float(self.score_radius))
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _announce(est: SmoothedClassifier, X: np.ndarray, n: int, desc: str, verbose: int) -> None:
    """Estimate a long Monte Carlo phase before it starts; print/warn (see announce_cost)."""
    phase = desc.split(" ")[0]
    shrink = {
        "predict": "lower n_predict, or predict fewer inputs at a time",
        "predict_proba": "lower n_predict, or predict fewer inputs at a time",
        "selection": "lower n0",
        "estimation": "lower n (the radius ceiling falls with it), or certify a seeded random "
        "subset; an RRISESurrogate certifies in one forward pass",
        "targets": "lower n_targets and n_augment, spending the budget on more images with "
        "fewer samples each (n_targets=200, n_augment=4 over 30,000 images did better than "
        "1,000 over 6,000 on full MNIST and Fashion-MNIST: user guide, 'Large training "
        "sets'), or pass a subset as train_inputs",
        "calibration": "lower n_calibration (the radius ceiling falls with it) or n_refine, or "
        "calibrate on fewer inputs",
    }.get(phase, "lower the number of samples or of inputs")
    announce_cost(
        est.module_, X, len(X) * int(n), what=f"{type(est).__name__} {desc} "
        f"({len(X):,} inputs)", verbose=verbose, shrink=shrink, device=est.device,
    )  # fmt: skip
