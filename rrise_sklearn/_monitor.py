"""MAPIE's online exchangeability martingale, fed with RRISE conformity scores.

Imported lazily by :meth:`RRISESurrogate.monitor` (importing MAPIE takes
seconds). A module-level class so that an estimator holding a monitor pickles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mapie.exchangeability_testing import OnlineMartingaleTest


class ScoreMartingale(OnlineMartingaleTest):
    """``OnlineMartingaleTest`` whose ``X`` is a column of precomputed conformity scores.

    MAPIE's test computes scores with a MAPIE estimator from ``(X, y)``. RRISE
    scores need fresh Monte Carlo counts of the smoothed classifier, which the
    surrogate draws itself; everything else (conformal p-values with random
    tie-breaking, the jumper martingale, the ``1 / test_level`` threshold)
    is MAPIE's.
    """

    def _compute_non_conformity_scores(self, X: Any, y: Any) -> np.ndarray:
        return np.asarray(X, dtype=float).reshape(-1)

    def feed(self, scores: np.ndarray) -> None:
        """Add scores to the stream, in order."""
        scores = np.asarray(scores, dtype=float).reshape(-1, 1)
        if len(scores):
            self.update(scores, np.zeros(len(scores)))
