"""Training losses of the surrogate, against float64 computations with scipy."""

import numpy as np
import pytest
import torch
from scipy import special, stats

from rrise_sklearn.nets import JensenShannonLoss, ProbitTailLoss


def _reference(logits, target, n, weight):
    z = logits.astype(np.float64)
    logp = z - special.logsumexp(z, axis=1, keepdims=True)
    ce = -(target * logp).sum(1)
    c = target.argmax(1)
    rows = np.arange(len(z))
    p_c = np.exp(logp[rows, c])
    cap = stats.norm.ppf(1 - 0.5 / n)
    z_hat = np.clip(-stats.norm.ppf(-np.expm1(logp[rows, c])), -cap, cap)
    z_t = np.clip(stats.norm.ppf(np.clip(target[rows, c], 0.5 / n, 1 - 0.5 / n)), -cap, cap)
    assert np.isfinite(z_hat).all() and (p_c > 0).all()
    return np.mean(ce + weight * (z_hat - z_t) ** 2)


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_probit_tail_loss_matches_a_float64_reference(scale):
    rng = np.random.default_rng(0)
    logits = (scale * rng.normal(size=(64, 10))).astype(np.float32)
    counts = rng.multinomial(1000, rng.dirichlet(0.3 * np.ones(10), size=64)[0], size=64)
    target = (counts / 1000).astype(np.float32)
    loss = ProbitTailLoss(n_samples=1000, weight=0.7)
    got = float(loss(torch.as_tensor(logits), torch.as_tensor(target)))
    want = _reference(logits, target.astype(np.float64), 1000, 0.7)
    assert got == pytest.approx(want, rel=1e-4)


def test_probit_tail_loss_sees_the_tail_and_keeps_finite_gradients():
    target = torch.tensor([[0.998, 0.002]])
    ce_only = ProbitTailLoss(n_samples=1000, weight=0.0)
    full = ProbitTailLoss(n_samples=1000)
    a, b = torch.log(torch.tensor([[0.998, 0.002]])), torch.log(torch.tensor([[0.9995, 0.0005]]))
    assert float(ce_only(b, target) - ce_only(a, target)) < 0.002  # CE barely sees it
    assert float(full(b, target) - full(a, target)) > 0.15  # (0.41 probit units)^2
    # a very confident prediction: finite loss and gradient, the probit capped at the reach
    logits = torch.tensor([[40.0, -40.0]], requires_grad=True)
    for t in ([[1.0, 0.0]], [[0.0, 1.0]]):  # at the cap, and far below it
        logits.grad = None
        value = full(logits, torch.tensor(t))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="needs n_samples"):
        ProbitTailLoss()(a, target)


def test_jensen_shannon_loss_is_zero_at_the_target_and_symmetric():
    t = torch.tensor([[0.7, 0.2, 0.1]])
    assert float(JensenShannonLoss()(torch.log(t), t)) < 1e-7
    q = torch.tensor([[0.2, 0.5, 0.3]])
    pq = float(JensenShannonLoss()(torch.log(q), t))
    qp = float(JensenShannonLoss()(torch.log(t), q))
    assert pq == pytest.approx(qp, rel=1e-5) and 0 < pq <= np.log(2)


def test_the_surrogate_gives_the_probit_loss_its_targets_sample_size(digits):
    from rrise_sklearn import RRISESurrogate, SmoothedClassifier
    from rrise_sklearn.nets import MLP

    X, y = digits
    clf = SmoothedClassifier(MLP, module__hidden=16, max_epochs=2, n=200, random_state=0)
    clf.fit(X[:300], y[:300])
    sur = RRISESurrogate(clf, criterion=ProbitTailLoss, n_targets=150, n_augment=0,
                         n_calibration=300, n_refine=None, n_members=2, max_epochs=2,
                         alpha_conf=0.1, random_state=0).fit(X[300:500])  # fmt: skip
    assert sur.criterion_.n_samples == 150 == sur.target_samples_
    assert sur.certify(X[500:520]).radius.shape == (20,)
    # an explicit value is kept
    sur2 = RRISESurrogate(clf, criterion=ProbitTailLoss, criterion__n_samples=77, n_targets=150,
                          n_augment=0, n_calibration=300, n_refine=None, n_members=1,
                          max_epochs=1, alpha_conf=0.1, random_state=0).fit(X[300:500])  # fmt: skip
    assert sur2.criterion_.n_samples == 77
