"""Broken networks and hostile arguments: no certificate is ever issued for garbage."""

import copy

import numpy as np
import pytest
import torch

from rrise_sklearn import RRISESurrogate, SmoothedClassifier, StaleCalibrationError
from rrise_sklearn.nets import MLP
from rrise_sklearn.sampling import MAX_SIGMA, NonFiniteScoresError, monte_carlo_counts


class _InfBeyond(torch.nn.Module):
    """Finite logits, except +inf for the first class where the input's first value > t."""

    def __init__(self, t):
        super().__init__()
        self.t = t
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        out = self.lin(x)
        return torch.where((x[:, :1] > self.t), torch.full_like(out, float("inf")), out)


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    clf = SmoothedClassifier(MLP, module__hidden=16, max_epochs=2, n=300, random_state=0)
    clf.fit(X[:300], y[:300])
    return X, clf


def test_nan_weights_give_no_certificate(fitted):
    X, clf = fitted
    broken = copy.deepcopy(clf)
    with torch.no_grad():
        next(broken.module_.parameters()).fill_(float("nan"))
    for verb in (broken.certify, broken.predict, broken.predict_proba, broken.base_predict):
        with pytest.raises(NonFiniteScoresError, match="non-finite scores.*NaN or inf weights"):
            verb(X[:5])
    # the unbroken copy certifies (the check does not fire on finite networks)
    assert (clf.certify(X[:5]).radius >= 0).all()


def test_a_few_non_finite_scores_among_the_noisy_inputs_are_caught():
    """Only some noisy copies overflow: their argmax would count as class 0 votes."""
    net = _InfBeyond(t=2.5)
    X = np.zeros((3, 4), dtype=np.float32)
    # sigma 1: about 0.6 % of the noisy copies exceed 2.5 in their first coordinate
    with pytest.raises(NonFiniteScoresError, match=r"for \d+ of 3000 noisy inputs"):
        monte_carlo_counts(net, X, sigma=1.0, n=1000, n_classes=2, random_state=0)
    counts = monte_carlo_counts(net, X, sigma=0.1, n=1000, n_classes=2, random_state=0)
    assert counts.sum() == 3000  # none beyond 2.5 at sigma 0.1: counted as usual


def test_sigma_that_overflows_float32_is_refused(fitted):
    X, _ = fitted
    with pytest.raises(ValueError, match=r"sigma.*\(0, 1e\+30\]"):
        SmoothedClassifier(MLP, sigma=1e39, max_epochs=1).fit(X[:50], np.arange(50) % 10)
    with pytest.raises(ValueError, match="noisy inputs would overflow"):
        monte_carlo_counts(torch.nn.Linear(64, 10), X[:2], sigma=10 * MAX_SIGMA, n=10,
                           n_classes=10)  # fmt: skip


def test_a_broken_surrogate_is_not_calibrated(fitted):
    X, clf = fitted
    sur = RRISESurrogate(clf, n_targets=100, n_augment=0, n_calibration=300, n_refine=None,
                         n_members=1, max_epochs=1, alpha_conf=0.1, random_state=0)  # fmt: skip
    sur.fit(X[300:450])
    with torch.no_grad():
        next(sur.module_.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteScoresError):
        sur.conformalize(X[450:600])
    # the old calibration stays, and refuses the changed network
    with pytest.raises(StaleCalibrationError):
        sur.certify(X[:5])
