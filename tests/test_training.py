"""Training objectives: the defining behaviour of each on a small problem, and the plumbing."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn import training as T
from rrise_sklearn.nets import MLP, SmallCNN


class Constant(torch.nn.Module):
    """Logits that ignore the input: every noisy copy agrees."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_consistency_term_is_zero_when_all_copies_agree():
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    f = Constant([0.3, -1.0, 2.0])
    loss = T.consistency_loss(f, x, y, 0.5, m=4, lbd=10.0, eta=0.5)
    p = torch.softmax(f.logits, 0)
    ce = torch.nn.functional.cross_entropy(f(x), y)
    entropy = -(p * p.log()).sum()
    torch.testing.assert_close(loss, ce + 0.5 * entropy)  # no KL: the copies agree
    lin = torch.nn.Linear(4, 3)  # copies of a real network disagree: the term is positive
    with_kl = T.consistency_loss(lin, x, y, 0.5, m=4, lbd=1.0, eta=0.0)
    without = T.consistency_loss(lin, x, y, 0.5, m=4, lbd=0.0, eta=0.0)
    assert with_kl > without


def test_macer_hinge_counts_only_correctly_classified_inputs():
    z = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 0.0, 0.0]],
            [[1.5, 0.2, 0.0], [0.0, 2.0, 0.0], [8.0, 0.0, 0.0]],
        ]
    )  # (copies, inputs, classes)
    y = torch.tensor([0, 0, 0])  # input 1 is misclassified (class 1 wins)
    beta, gamma = 1.0, 8.0
    got = T.macer_hinge(z, y, beta=beta, gamma=gamma)
    avg = torch.softmax(beta * z, -1).mean(0)
    normal = torch.distributions.Normal(0.0, 1.0)
    gaps = normal.icdf(avg[:, 0]) - normal.icdf(avg[:, 1:].max(1).values)
    expected = (torch.relu(gamma - gaps[0]) + torch.relu(gamma - gaps[2])) / 3
    torch.testing.assert_close(got, expected)
    assert got > 0
    all_wrong = T.macer_hinge(z, torch.tensor([2, 2, 2]), beta=beta, gamma=gamma)
    assert float(all_wrong) == 0.0


def test_macer_defers_the_hinge_for_the_first_epochs():
    torch.manual_seed(1)
    f = torch.nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    kw = dict(k=4, beta=16.0, gamma=8.0, lbd=12.0)

    def loss(**extra):
        torch.manual_seed(0)  # the same noise copies for every call
        return T.macer_loss(f, x, y, 0.5, **{**kw, **extra})

    ce_only, full = loss(lbd=0.0), loss()
    assert full > ce_only  # the hinge is active on this batch
    torch.testing.assert_close(loss(deferred=3, epoch=2), ce_only)
    torch.testing.assert_close(loss(deferred=3, epoch=3), full)
    with pytest.raises(ValueError, match="training__deferred must be an integer >= 0"):
        T.check_params("macer", {"deferred": 1.5})


def test_smoothadv_stays_in_the_ball_and_raises_the_smoothed_loss():
    torch.manual_seed(1)
    f = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    noise = 0.25 * torch.randn(4, 20, 5)
    for eps, steps in ((0.5, 1), (0.5, 4), (2.0, 3)):
        xa = T.smoothadv_attack(f, x, y, noise, epsilon=eps, steps=steps)
        assert torch.all((xa - x).norm(dim=1) <= eps + 1e-5)
        before = T._soft_smoothed_ce(f, x, noise, y)
        after = T._soft_smoothed_ce(f, xa, noise, y)
        assert after > before
    assert torch.equal(T.smoothadv_attack(f, x, y, noise, epsilon=0.0, steps=2), x)


def test_smoothmix_points_lie_on_the_segment_it_defines():
    torch.manual_seed(2)
    f = torch.nn.Linear(6, 4)
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    noise = 0.5 * torch.randn(2, 10, 6)
    lam = torch.rand(10) / 2
    xa, xm = T.smoothmix_points(f, x, y, noise, steps=3, step_size=0.4, lam=lam)
    torch.testing.assert_close(xm - x, lam[:, None] * (xa - x))
    assert torch.all((xa - x).norm(dim=1) <= 3 * 0.4 + 1e-5)  # normalized steps
    assert torch.all((xa - x).norm(dim=1) > 0)


@pytest.mark.parametrize("objective", T.OBJECTIVES)
def test_every_objective_trains_on_flat_and_image_inputs(objective, digits):
    X, y = digits
    for net, Xs in ((MLP, X[:200]), (SmallCNN, X[:200].reshape(-1, 1, 8, 8))):
        clf = SmoothedClassifier(
            net, training=objective, max_epochs=1, n=50, random_state=0, batch_size=64
        ).fit(Xs, y[:200])
        assert np.isfinite(clf.history[-1, "train_loss"])
        assert clf.predict(Xs[:5]).shape == (5,)


def test_hyperparameters_are_grid_searchable_parameters(digits):
    X, y = digits
    clf = SmoothedClassifier(MLP, training="consistency", training__lbd=5.0, max_epochs=1)
    assert clone(clf).get_params()["training__lbd"] == 5.0
    assert clf.get_params_for("training") == {"lbd": 5.0}
    grid = GridSearchCV(
        SmoothedClassifier(MLP, training="consistency", max_epochs=1, n=30, random_state=0),
        {"training__lbd": [1.0, 20.0]},
        cv=2,
    ).fit(X[:120], y[:120])
    assert grid.best_params_["training__lbd"] in (1.0, 20.0)
    with pytest.raises(ValueError, match="training must be one of"):
        SmoothedClassifier(MLP, training="adversarial").fit(X[:50], y[:50])
    with pytest.raises(ValueError, match=r"takes the hyperparameters training__eta, training__lbd"):
        SmoothedClassifier(MLP, training="consistency", training__epsilon=1.0).fit(X[:50], y[:50])
    for bad in (-1, 0, 1.5):
        with pytest.raises(ValueError, match="training__m must be an integer >= 1"):
            SmoothedClassifier(MLP, training="smoothmix", training__m=bad).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="training__eta must be a number >= 0"):
        SmoothedClassifier(MLP, training="smoothmix", training__eta=-1.0).fit(X[:50], y[:50])
