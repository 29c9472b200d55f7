"""The result type shared by every certifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CertificationResult"]


@dataclass(frozen=True, eq=False)
class CertificationResult:
    """Certificates for a batch of inputs.

    Unpacks as ``prediction, radius = result``.

    Attributes
    ----------
    prediction : ndarray of shape (n_inputs,)
        Certified class per input (labels of ``classes_``), or the abstain
        label where the certifier abstains.
    radius : ndarray of shape (n_inputs,)
        Certified L2 radius in the units of the certifier's input space; 0
        where it abstains.
    p_lower : ndarray of shape (n_inputs,)
        The lower bound on the top-class probability used for the radius.
    counts : ndarray of shape (n_inputs, n_classes) or None
        Estimation counts (Monte Carlo certifiers); ``None`` for one-pass
        certifiers.
    abstain_label : object
        The label used for abstentions.
    n_samples : ndarray of shape (n_inputs,) or None
        Noisy samples spent per input (selection + estimation).
    info : dict
        Extra details (sigma, alpha, method, ...).
    input_radius : ndarray of shape (n_inputs,) or None
        The certified radius in the units of the *raw* inputs, set by
        :func:`rrise_sklearn.certify`: equal to ``radius`` for a bare
        certifier; ``radius / info["input_scale"]`` for a Pipeline whose steps
        before the certifier are per-feature affine (``StandardScaler``,
        ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, identity steps);
        ``None`` when the steps are not (e.g. ``Normalizer``, ``PCA``).

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.results import CertificationResult
    >>> res = CertificationResult(np.array([1, -1]), np.array([0.3, 0.0]), np.array([0.9, 0.4]))
    >>> prediction, radius = res
    >>> res.abstained.tolist()
    [False, True]
    """

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    counts: np.ndarray | None = None
    abstain_label: Any = -1
    n_samples: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    input_radius: np.ndarray | None = None

    def __iter__(self):
        return iter((self.prediction, self.radius))

    @property
    def abstained(self) -> np.ndarray:
        """Boolean mask of abstentions."""
        return self.radius <= 0

    def __repr__(self) -> str:
        n = len(self.radius)
        return (
            f"CertificationResult(n_inputs={n}, abstained={int(self.abstained.sum())}, "
            f"mean_radius={float(np.mean(self.radius)) if n else 0.0:.4g})"
        )
