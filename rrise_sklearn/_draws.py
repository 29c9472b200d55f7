"""The surrogate's Monte Carlo draws: every noise stream derived from one seed, and their cache.

One place decides which seed each purpose (targets, calibration, each refinement stage and
round, verification, monitoring) draws from, so that no two purposes share noise, and where
their counts are cached (``RRISESurrogate(cache_dir=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .sampling import MonteCarloCounts, check_distinct_streams, inputs_digest, resolve_seed

# spawn keys of the surrogate's random streams
SPLIT, TARGETS, AUGMENT, CALIB, VERIFY, TRAIN, BASE, REFINE = 10, 11, 12, 13, 14, 15, 16, 17
VERIFY_REFINE, MONITOR = 18, 19


class SurrogateDraws:
    """The Monte Carlo draws of one surrogate of ``smoothed``.

    Parameters
    ----------
    smoothed : SmoothedClassifier
        Fitted; its ``sample_counts`` draws every count.
    root_seed : int
        The surrogate's seed; stream ``tag`` is ``SeedSequence(root_seed, spawn_key=(tag,))``.
    cache_dir : str or None
        Where counts are cached, one folder per purpose and set of inputs.
    """

    def __init__(self, smoothed: Any, root_seed: int, cache_dir: Any, verbose: int = 0) -> None:
        self.smoothed = smoothed
        self.root_seed = root_seed
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.n_classes = len(smoothed.classes_)

    def stream(self, tag: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.root_seed, spawn_key=(tag,))

    def seed_for(self, tag: int, random_state: Any = None) -> np.random.SeedSequence:
        """The noise seed of one purpose (calibration, refinement, verification, ...).

        The surrogate's stream for ``tag``, or the caller's ``random_state``
        tagged with it: one explicit seed passed to ``conformalize`` and
        ``verify`` never gives two purposes the same noise.
        """
        if random_state is None:
            return self.stream(tag)
        return np.random.SeedSequence(resolve_seed(random_state), spawn_key=(tag,))

    def cache(self, purpose: str | None, X: np.ndarray) -> str | None:
        """The cache folder of one Monte Carlo job: ``cache_dir/purpose/<inputs digest>``.

        Keyed by the inputs, so that recalibrating on other inputs never meets
        the chunks of an earlier calibration; the model, seed and sample size
        are checked by :func:`~rrise_sklearn.sampling.precompute_counts`.
        """
        if self.cache_dir is None or purpose is None:
            return None
        digest = inputs_digest(X)[:16]
        return os.path.join(os.fspath(self.cache_dir), purpose, f"{X.shape[0]}-{digest}")

    def counts(self, X: np.ndarray, n: int, seed: Any, counts: Any = None, name: str = "counts",
               purpose: str | None = None, desc: str | None = None) -> Any:  # fmt: skip
        """Monte Carlo counts of ``X`` (independent noise per input), or checked given ones.

        The surrogate's ``verbose`` drives the progress bar, labelled ``desc``."""
        if counts is None:
            return self.smoothed.sample_counts(
                X, n, random_state=seed, noise_sharing=1, cache_dir=self.cache(purpose, X),
                verbose=self.verbose, desc=desc or f"{purpose or name} n={n}",
            )  # fmt: skip
        counts = counts if isinstance(counts, MonteCarloCounts) else np.asarray(counts)
        if counts.shape != (len(X), self.n_classes) or np.any(counts.sum(1) != n):
            raise ValueError(
                f"{name} must have shape ({len(X)}, {self.n_classes}) with rows summing "
                f"to {n}; got shape {counts.shape}."
            )
        return counts

    def check_streams(self, random_state: Any, counts: Any, refine_counts: Any, refine: bool,
                      train_counts: Any) -> None:  # fmt: skip
        """No two Monte Carlo inputs of one calibration may share noise (nor the targets')."""
        cal = counts if counts is not None else resolve_seed(self.seed_for(CALIB, random_state))
        ref = None
        if refine:
            ref = (
                refine_counts
                if refine_counts is not None
                else resolve_seed(self.seed_for(REFINE, random_state))
            )
        check_distinct_streams(
            training_targets=train_counts, calibration_counts=cal, refine_counts=ref
        )

    def stage_draw(self, X: np.ndarray, top: np.ndarray, stages: list[int], random_state: Any,
                   refine_counts: Any) -> Callable[[np.ndarray, int, int], np.ndarray]:  # fmt: skip
        """``draw(inputs, stage, round)`` of :func:`~rrise_sklearn.conformal.staged_bounds`:
        fresh counts of the surrogate's class from a stream of each (stage, round), or the
        rows of the given ``refine_counts``."""
        given = None
        if refine_counts is not None:
            given = self.counts(
                X, stages[0], None, refine_counts, name=f"refine_counts (n_refine={stages[0]})"
            )
        base = self.seed_for(REFINE, random_state)

        def draw(sel: np.ndarray, j: int, rnd: int) -> np.ndarray:
            if given is not None:
                extra = given[sel]
            else:
                seed = np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, j, rnd))
                where = os.path.join("refine", f"stage{j + 2}-round{rnd}")
                extra = self.counts(X[sel], stages[j], seed, purpose=where,
                                    desc=f"calibration stage {j + 2} n={stages[j]} "
                                    f"(round {rnd + 1})")  # fmt: skip
            return extra[np.arange(len(sel)), top[sel]]

        return draw
