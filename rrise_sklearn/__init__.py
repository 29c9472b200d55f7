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

from .conformal import StaleCalibrationError
from .monitoring import MonitorReport, VerificationReport
from .persistence import load, save
from .pipeline import certify
from .results import CertificationResult
from .smoothing import SmoothedClassifier
from .surrogate import RRISESurrogate

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
