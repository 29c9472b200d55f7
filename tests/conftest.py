"""Shared fixtures: small data sets and linear models with a known smoothed classifier."""

import numpy as np
import pytest
import torch
from scipy import stats as sps

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.nets import LinearModel

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class KnownLinear:
    """A fixed two-class linear model: class 1 iff w.x + b > 0.

    The smoothed classifier of this model is known exactly: at x the top class
    is sign(w.x + b), its probability is Phi(dist / sigma) and the exact
    certified radius is dist = |w.x + b| / ||w||.
    """

    def __init__(self, d=5, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=d)
        self.b = 0.3
        self.d = d

    def module(self):
        m = LinearModel(self.d, 2)
        with torch.no_grad():
            m.linear.weight.zero_()
            m.linear.weight[1] = torch.as_tensor(self.w, dtype=torch.float32)
            m.linear.bias.zero_()
            m.linear.bias[1] = self.b
        return m

    def points_at_distance(self, signed_dist, seed=0):
        """Inputs whose signed distance to the hyperplane is ``signed_dist``."""
        rng = np.random.default_rng(seed)
        signed_dist = np.asarray(signed_dist, dtype=np.float64)
        u = self.w / np.linalg.norm(self.w)
        base = rng.normal(size=(len(signed_dist), self.d))
        base -= np.outer(base @ u, u)  # orthogonal part, random
        x0 = -self.b * u / np.linalg.norm(self.w)  # a point on the hyperplane
        X = x0 + base + np.outer(signed_dist, u)
        return X.astype(np.float32)

    def exact(self, X, sigma):
        """(smoothed class, exact radius, p_A) computed in float64."""
        s = X.astype(np.float64) @ self.w + self.b
        dist = np.abs(s) / np.linalg.norm(self.w)
        return (s > 0).astype(int), dist, sps.norm.cdf(dist / sigma)

    def smoothed(self, **params):
        params.setdefault("classes", [0, 1])
        return SmoothedClassifier(self.module(), **params).initialize()


def small_mlp(d=8, k=4, seed=0):
    """A seeded 2-layer MLP for engine tests."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, k))


@pytest.fixture(scope="session")
def known_linear():
    return KnownLinear()


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y
