"""rrise-sklearn: certified L2 robustness by randomized smoothing, for scikit-learn.

Main entry points:

* :class:`SmoothedClassifier`: a skorch classifier trained with Gaussian noise,
  with Monte Carlo ``predict`` / ``predict_proba`` / ``certify``.
* :class:`RRISESurrogate`: certification in one forward pass, conformally
  calibrated.
* :func:`certify`: certify with either, or with a Pipeline ending in one
  (radii in the units of the last step's input).
* :func:`save` / :func:`load`: model files that cannot run code when loaded
  (JSON manifest, safetensors weights, numpy arrays).
* :mod:`rrise_sklearn.stats`, :mod:`rrise_sklearn.sampling`,
  :mod:`rrise_sklearn.metrics`: the statistics, the Monte Carlo engine and the
  metrics they rest on.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names load on first use (PEP 562), so that ``rrise --help`` and
# ``rrise --version`` answer without importing torch. Any one of them loads all
# of them, persistence included (it gives the estimators their deprecated
# ``save``/``load`` methods).
_LAZY = {
    "CertificationResult": "results",
    "MonitorReport": "monitoring",
    "RRISESurrogate": "surrogate",
    "SmoothedClassifier": "smoothing",
    "StaleCalibrationError": "conformal",
    "VerificationReport": "monitoring",
    "certify": "pipeline",
    "load": "persistence",
    "save": "persistence",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rrise_sklearn' has no attribute {name!r}")
    for attr, mod in _LAZY.items():
        globals()[attr] = getattr(importlib.import_module(f".{mod}", __name__), attr)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CertificationResult",
    "MonitorReport",
    "RRISESurrogate",
    "SmoothedClassifier",
    "StaleCalibrationError",
    "VerificationReport",
    "certify",
    "load",
    "save",
]
__version__ = "0.1.0.dev0"
