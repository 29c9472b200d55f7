"""Sound early stopping (anytime-valid schedule) and the sample-budget planner."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn import stats as rs


class Threshold1D(torch.nn.Module):
    """f(x) = 1 if x > 0 else 0 on 1-D inputs: p_1(x) = Phi(x / sigma) exactly."""

    def forward(self, x):
        z = x[:, :1]
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _tolerance(n_trials, alpha, level=1e-4):
    return sps.binom.ppf(1 - level, n_trials, alpha)


@pytest.mark.slow
def test_decision_mode_sound_under_peeking_at_the_threshold():
    """p_A exactly at the decision threshold: certifying radius r is a false certificate."""
    sigma, r, alpha, runs = 1.0, 0.5, 0.05, 3000
    clf = SmoothedClassifier(
        Threshold1D(),
        classes=[0, 1],
        sigma=sigma,
        n0=50,
        alpha=alpha,
        noise_sharing=1,
        random_state=0,
    ).initialize()
    X = np.full((runs, 1), r, dtype=np.float32)  # true radius exactly r
    res = clf.certify_adaptive(X, radius=r, max_n=4000, n_start=100, growth=2.0)
    plain = clf.certify_adaptive(X, radius=r, max_n=4000, final_share=0.0, random_state=1)
    assert int(np.sum(plain.radius > r)) <= _tolerance(runs, alpha)
    # giving up early (a loose futility level) never adds certificates
    quick = clf.certify_adaptive(X, radius=r, max_n=4000, futility=0.2, random_state=2)
    assert int(np.sum(quick.radius > r)) <= _tolerance(runs, alpha)
    assert quick.n_samples.mean() < res.n_samples.mean()
    false_cert = int(np.sum(res.radius > r))
    assert false_cert <= _tolerance(runs, alpha), false_cert
    checkpoints = res.info["checkpoints"]
    assert len(checkpoints) >= 6  # several looks really happened
    for r_ in (res, plain):  # the per-look levels spend at most alpha in all (union bound)
        assert r_.info["levels"].sum() <= alpha
        assert len(r_.info["levels"]) == len(r_.info["checkpoints"])
    assert res.info["levels"][-1] == pytest.approx(alpha / 2)
    assert (res.n_samples > 50 + 100).mean() > 0.5

    # negative control: re-checking the fixed-n bound at full alpha after every batch
    rng = np.random.default_rng(0)
    p = sps.norm.cdf(r / sigma)
    incr = np.diff([0, *checkpoints])
    k = np.cumsum(rng.binomial(incr, p, size=(runs, len(incr))), axis=1)
    lo = rs.clopper_pearson_lower(k, np.array(checkpoints), alpha)
    naive_false = int(np.sum((lo > p).any(axis=1)))
    assert naive_false > _tolerance(runs, alpha) + 20, naive_false


@pytest.mark.slow
def test_adaptive_certificates_wrong_at_most_alpha_on_linear_model(known_linear):
    sigma, alpha = 0.5, 0.1
    dist = np.random.default_rng(1).uniform(-1.5, 1.5, size=400)
    X = known_linear.points_at_distance(dist)
    g, exact_radius, _ = known_linear.exact(X, sigma)
    wrong = total = 0
    for seed in range(4):
        clf = known_linear.smoothed(
            sigma=sigma, n0=20, alpha=alpha, noise_sharing=1, random_state=seed
        )
        res = clf.certify_adaptive(X, max_n=3000, tol=0.01)
        bad = (res.radius > 0) & ((res.prediction != g) | (res.radius > exact_radius))
        wrong += int(bad.sum())
        total += len(X)
        assert (res.n_samples <= 20 + 3000).all()
    assert wrong <= _tolerance(total, alpha), (wrong, total)


def test_decision_mode_stops_early_for_clear_inputs(known_linear):
    clf = known_linear.smoothed(sigma=0.25, n0=20, alpha=0.001, random_state=0)
    far = known_linear.points_at_distance(np.full(20, 3.0))
    near = known_linear.points_at_distance(np.full(20, 0.15))  # p_A = 0.73 < 0.84 needed
    res = clf.certify_adaptive(np.vstack([far, near]), radius=0.25, max_n=100_000)
    assert res.info["decided"][:20].all()
    assert (res.n_samples[:20] <= 20 + 400).all()  # a few hundred samples suffice
    assert not res.info["decided"][20:].any()
    assert (res.n_samples[20:] < 20 + 100_000).all()  # hopeless ones stop before max_n
    # the default futility level (0.05) gives up on hopeless inputs sooner than the
    # most cautious one (each look's own level), with the same decisions (early
    # checkpoints, so that the first look does not already settle both)
    early = dict(radius=0.25, max_n=100_000, n_start=50, growth=1.5)
    quick = clf.certify_adaptive(np.vstack([far, near]), **early)
    cautious = clf.certify_adaptive(np.vstack([far, near]), futility=None, **early)
    np.testing.assert_array_equal(cautious.info["decided"], res.info["decided"])
    np.testing.assert_array_equal(quick.info["decided"], res.info["decided"])
    assert quick.n_samples[20:].mean() < cautious.n_samples[20:].mean()
    assert res.info["futility"] == 0.05 and cautious.info["futility"] is None


def test_estimation_mode_matches_fixed_n_closely(known_linear):
    clf = known_linear.smoothed(sigma=0.5, n0=20, alpha=0.001, random_state=0)
    X = known_linear.points_at_distance(np.linspace(-1, 1, 40))
    fixed = clf.certify(X, n=20_000)
    adapt = clf.certify_adaptive(X, max_n=20_000, tol=0.01)
    assert np.mean(adapt.n_samples) < 20_000
    np.testing.assert_allclose(adapt.radius, fixed.radius, atol=0.06)
    capped = clf.certify_adaptive(X, max_n=20_000, max_radius=0.3)
    assert capped.n_samples.mean() < adapt.n_samples.mean()


def test_adaptive_bad_arguments(known_linear):
    clf = known_linear.smoothed(sigma=0.5)
    X = np.zeros((2, 5), dtype=np.float32)
    for kw, match in [
        (dict(growth=1.0), "growth"),
        (dict(radius=-1.0), "radius"),
        (dict(max_n=0), "max_n"),
        (dict(alpha=2.0), "alpha"),
        (dict(futility=0.0), "futility"),
        (dict(futility=1.5), "futility"),
    ]:
        with pytest.raises(ValueError, match=match):
            clf.certify_adaptive(X, **kw)


def test_plan_samples_radius_and_loss():
    plan = rs.plan_samples(0.25, 0.001, radius=0.5, p_a=0.999)
    assert plan.n == rs.samples_for_radius(0.5, 0.25, 0.999, 0.001)
    assert plan.predicted_radius > 0.5
    plan = rs.plan_samples(0.25, 0.001, radius_loss=0.2, reference_n=10_000)
    z = sps.norm.isf(0.001)
    ratio = lambda n: (1 - 1.64 * z / math.sqrt(n)) / (1 - 1.64 * z / math.sqrt(10_000))  # noqa: E731
    assert ratio(plan.n) >= 0.8 - 1e-12
    assert ratio(plan.n - 1) < 0.8
    assert math.isinf(rs.plan_samples(0.25, 0.001, radius=2.0, p_a=0.9).n)
    with pytest.raises(ValueError, match="exactly one"):
        rs.plan_samples(0.25, 0.001)


def test_grid_decision_mode_decides_every_radius(known_linear):
    sigma = 0.25
    clf = known_linear.smoothed(sigma=sigma, n0=20, alpha=0.001, random_state=0)
    X = known_linear.points_at_distance(np.linspace(-1.0, 1.0, 30))
    grid = [0.0, 0.25, 0.5]
    res = clf.certify_adaptive(X, radius=grid, max_n=50_000)
    decided = res.info["decided"]
    assert decided.shape == (30, 3)
    np.testing.assert_array_equal(
        decided, (res.radius[:, None] >= np.array(grid)) & (res.radius[:, None] > 0)
    )
    fixed = clf.certify(X, n=50_000)
    assert res.n_samples.mean() < 0.5 * (20 + 50_000)
    # agreement with the fixed budget on the decisions (away from the exact boundary)
    _, dist, _ = known_linear.exact(X, sigma)
    clear = np.all(np.abs(dist[:, None] - np.array(grid)) > 0.1, axis=1)
    fixed_dec = (fixed.radius[:, None] >= np.array(grid)) & (fixed.radius[:, None] > 0)
    np.testing.assert_array_equal(decided[clear], fixed_dec[clear])


def test_betting_cs_comparison_script_backs_the_documented_claim():
    """benchmarks/compare_betting_cs.py: the mixture sequence is looser in every cell."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_betting_cs.py"
    for schedule, looks in [([], 24), (["--n-start", "100", "--growth", "2"], 11)]:
        out = subprocess.run(
            [sys.executable, str(script), *schedule], capture_output=True, text=True, check=True
        ).stdout
        worse, cells = map(int, re.search(r"one in (\d+) of (\d+) cells", out).groups())
        assert cells == 4 * looks  # four success rates at every look of the schedule
        assert worse == cells, out
