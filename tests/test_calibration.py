"""Conformal thresholds: exact order statistic, MAPIE, and exact coverage of the rank rule."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from rrise_sklearn.calibration import (
    calibrated_lower,
    cap_margin_thresholds,
    conformal_rank,
    conformal_threshold,
    conformity_scores,
    mapie_threshold,
    min_calibration_size,
    probit,
    two_group_thresholds,
)


@pytest.mark.parametrize("m", [19, 99, 100, 250, 737])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_threshold_is_order_statistic_and_matches_mapie(m, alpha):
    if m < min_calibration_size(alpha):
        with pytest.raises(ValueError, match=f"needs at least {min_calibration_size(alpha)}"):
            conformal_threshold(np.zeros(m), alpha)
        return
    rng = np.random.default_rng(m)
    y_hat = rng.uniform(0.5, 1.0, size=m)
    y = y_hat - rng.exponential(0.05, size=m) + rng.normal(0, 0.01, size=m)
    scores = y_hat - y
    tau = conformal_threshold(scores, alpha)
    k = math.ceil((m + 1) * (1 - alpha))
    assert tau == np.sort(scores)[k - 1]
    if m == min_calibration_size(alpha):
        # at the smallest size the threshold is the largest score; MAPIE refuses this size
        assert tau == scores.max()
        with pytest.raises(ValueError, match="too low"):
            mapie_threshold(y_hat, y, alpha)
    else:
        assert mapie_threshold(y_hat, y, alpha) == pytest.approx(tau, abs=1e-12)


@pytest.mark.parametrize("m", [150, 737])
@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_headroom_threshold_matches_mapie_gamma_score(m, alpha):
    """The headroom score's threshold = order statistic = MAPIE's GammaConformityScore bound."""
    rng = np.random.default_rng(m)
    ceiling = 5.0
    y_hat = rng.uniform(-1.0, 3.8, size=m)
    y = y_hat - rng.normal(0.0, 0.3, size=m) * (ceiling - y_hat) / 3
    scores = conformity_scores(y_hat, y, "headroom", ceiling)
    np.testing.assert_allclose(scores, (y_hat - y) / (ceiling - y_hat))
    tau = conformal_threshold(scores, alpha)
    assert tau == np.sort(scores)[math.ceil((m + 1) * (1 - alpha)) - 1]
    assert mapie_threshold(y_hat, y, alpha, ceiling=ceiling) == pytest.approx(tau, abs=1e-12)


@pytest.mark.parametrize("kind", ["radius", "probability", "headroom"])
def test_calibrated_lower_inverts_the_score(kind):
    """score(y_hat, y) <= tau exactly when y >= calibrated_lower(y_hat, tau)."""
    rng = np.random.default_rng(3)
    y_hat = rng.uniform(0.0, 3.5, size=2000)
    y = y_hat + rng.normal(0.0, 0.5, size=2000)
    for tau in (-0.1, 0.0, 0.07, 0.3):
        ok = conformity_scores(y_hat, y, kind, 4.0) <= tau
        lower = calibrated_lower(y_hat, tau, kind, 4.0)
        far = np.abs(y - lower) > 1e-9  # away from floating-point ties
        np.testing.assert_array_equal(ok[far], (y >= lower)[far])
    with pytest.raises(ValueError, match="ceiling"):
        conformity_scores(y_hat, y, "headroom", 3.0)
    with pytest.raises(ValueError, match="kind"):
        conformity_scores(y_hat, y, "odd")


def test_ties_and_order_invariance():
    s = np.array([0.1] * 50 + [0.2] * 50 + [0.3] * 10)
    tau = conformal_threshold(s, 0.1)  # rank ceil(111 * 0.9) = 100 of 110
    assert tau == conformal_threshold(s[::-1], 0.1) == 0.2
    rng = np.random.default_rng(0)
    y_hat = rng.uniform(size=110)
    assert mapie_threshold(y_hat, y_hat - s, 0.1) == pytest.approx(tau)


@pytest.mark.parametrize("m", [99, 200, 1000])
@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_marginal_rank_has_exact_coverage(m, alpha):
    # For continuous scores the test score is below s_(k) with probability k / (m + 1).
    if m < min_calibration_size(alpha):
        return
    k = conformal_rank(m, alpha)
    assert k / (m + 1) >= 1 - alpha
    assert (k - 1) / (m + 1) < 1 - alpha  # the smallest such rank: not over-conservative


@pytest.mark.parametrize("m", [299, 500, 2000])
@pytest.mark.parametrize(("alpha", "delta"), [(0.01, 0.05), (0.1, 0.1)])
def test_pac_rank_is_training_conditional(m, alpha, delta):
    # The coverage F(s_(k)) of the threshold is U_(k) ~ Beta(k, m - k + 1) (exact).
    if m < min_calibration_size(alpha, delta):
        with pytest.raises(ValueError, match="needs at least"):
            conformal_rank(m, alpha, delta)
        return
    k = conformal_rank(m, alpha, delta)
    assert sps.beta.sf(1 - alpha, k, m - k + 1) >= 1 - delta - 1e-12
    assert k == 1 or sps.beta.sf(1 - alpha, k - 1, m - k + 2) < 1 - delta
    assert k >= conformal_rank(m, alpha)  # stricter than the marginal rank


def test_min_sizes_and_errors():
    assert min_calibration_size(0.01) == 99
    assert min_calibration_size(0.1) == 9
    conformal_rank(99, 0.01)
    with pytest.raises(ValueError, match="has 98 points; alpha_conf=0.01 needs at least 99"):
        conformal_rank(98, 0.01)
    with pytest.raises(ValueError, match="alpha_conf"):
        conformal_rank(100, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        conformal_threshold([np.nan] * 200, 0.1)


def test_probit_precise_near_one():
    q = np.array([1e-3, 1e-9, 1e-15])
    np.testing.assert_allclose(probit(1 - q, q), sps.norm.isf(q), rtol=1e-12)
    assert probit(0.0) == -38.0


@pytest.mark.parametrize(
    "groups", [[(500, 49, 45)], [(40, 19, 19)], [(300, 99, 90), (200, 30, 28), (7, 5, 6)]]
)
def test_exceedance_law_matches_a_simulation_of_exchangeable_scores(groups):
    """Oracle: draw continuous exchangeable scores, take the rank-th calibration score per
    group, count new scores above it; the exact law must match the simulated one."""
    from rrise_sklearn.calibration import exceedance_distribution

    m_new, m_cal, rank = (np.array(g) for g in zip(*groups, strict=True))
    pmf = exceedance_distribution(m_new, m_cal, rank)
    assert np.isclose(pmf.sum(), 1.0) and len(pmf) == m_new.sum() + 1
    rng = np.random.default_rng(0)
    reps = 20_000
    total = np.zeros(reps, dtype=np.int64)
    for mn, mc, k in groups:
        cal = np.sort(rng.random((reps, mc)), axis=1)
        tau = cal[:, k - 1] if k <= mc else np.full(reps, np.inf)
        total += (rng.random((reps, mn)) > tau[:, None]).sum(axis=1)
    mean = np.arange(len(pmf)) @ pmf
    assert abs(total.mean() - mean) < 4 * total.std() / np.sqrt(reps)
    for t in np.quantile(total, [0.5, 0.9, 0.99]).astype(int):
        p = pmf[t:].sum()
        assert abs(np.mean(total >= t) - p) < 4 * np.sqrt(p * (1 - p) / reps) + 1e-3
    # the binomial law a one-shot test used to assume is far from it
    alpha = 1 - rank[0] / (m_cal[0] + 1)
    t99 = int(np.quantile(total, 0.99))
    if len(groups) == 1 and m_new[0] >= 100:
        assert sps.binom.sf(t99 - 1, m_new[0], alpha) < 0.2 * pmf[t99:].sum()


def _leave_one_out_miscoverage(scores, group, rule):
    """Exact miscoverage given the set of m + 1 inputs: each one in turn is the new input
    (a uniform draw from the set under exchangeability), the others calibrate."""
    miss = 0
    for i in range(len(scores)):
        keep = np.arange(len(scores)) != i
        miss += scores[i] > rule(scores[keep], group[keep])[group[i]]
    return miss / len(scores)


def _naive_rule(alpha):
    """Own thresholds when the *calibration* holds enough of each group (the new input not
    counted): the decision then depends on which input is the new one."""

    def rule(scores, group):
        n0 = min_calibration_size(alpha)
        if min(np.sum(group == 0), np.sum(group == 1)) >= n0:
            return np.array([conformal_threshold(scores[group == j], alpha) for j in (0, 1)])
        return np.full(2, conformal_threshold(scores, alpha))

    return rule


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_two_group_thresholds_cover_every_set_exactly(alpha):
    """Miscoverage computed exactly (leave one out) on sets whose smaller group sits at
    the boundary of the fallback, with that group's scores the highest, the lowest, or
    mixed: never above alpha. The rule that ignores the new input's group misses some of
    these sets at up to twice alpha (so the oracle can fail)."""
    n0 = min_calibration_size(alpha)
    rng = np.random.default_rng(0)
    rule = lambda s, g: two_group_thresholds(s, g, alpha)[0]  # noqa: E731
    worst = worst_naive = 0.0
    for size in (3 * n0, 10 * n0):
        for n_small in range(n0 - 2, n0 + 4):
            group = np.zeros(size, dtype=np.int64)
            group[n_small:] = 1
            base = np.sort(rng.random(size))
            for order in ("small highest", "small lowest", "mixed"):
                if order == "small highest":
                    scores = base[::-1].copy()
                elif order == "small lowest":
                    scores = base.copy()
                else:
                    scores = rng.permutation(base)
                worst = max(worst, _leave_one_out_miscoverage(scores, group, rule))
                naive = _leave_one_out_miscoverage(scores, group, _naive_rule(alpha))
                worst_naive = max(worst_naive, naive)
    assert worst <= alpha + 1e-12, worst
    assert worst_naive > 1.5 * alpha, worst_naive


def test_two_group_thresholds_choose_own_or_pooled():
    alpha = 0.1  # min_calibration_size 9: each group needs 10 with the new input
    scores = np.arange(40, dtype=float)
    group = np.zeros(40, dtype=np.int64)
    group[:9] = 1  # 9 of group 1: only a new input of group 1 makes 10
    thr, own, pooled = two_group_thresholds(scores, group, alpha)
    assert own.tolist() == [False, True] and pooled == conformal_threshold(scores, alpha)
    assert thr[0] == pooled and thr[1] == conformal_threshold(scores[:9], alpha) == 8.0
    group[:10] = 1
    thr, own, _ = two_group_thresholds(scores, group, alpha)
    assert own.all() and thr[0] == conformal_threshold(scores[10:], alpha)
    with pytest.raises(ValueError, match="differ in length"):
        two_group_thresholds(scores, group[:5], alpha)


def _literal_cap_margin(scores, below, alpha, margin, factor=3.0, count_misses=True):
    """The margin at the cap written out literally (an oracle for ``cap_margin_thresholds``):
    transformed scores with +-inf, sorted; ``count_misses=False`` drops the misses at the
    cap (every score at the cap becomes -inf), which is wrong on purpose."""
    at = np.sort(scores[~below])
    m_cap = len(at)
    tau_cap = conformal_threshold(at, alpha)
    q = at[math.ceil(m_cap * (1 - alpha) - 1e-9) - 1]
    miss = (scores > max(margin, q)) & count_misses
    t = np.where(below, scores, np.where(miss, np.inf, -np.inf))
    tau_b = np.sort(t)[conformal_rank(len(t), alpha) - 1]
    if factor is not None:
        tau_b = max(tau_b, conformal_threshold(scores[below], min(factor * alpha, 0.5)))
    return np.array([max(margin, tau_cap), tau_b])


def _cap_margin_sets(alpha, rng):
    """Sets of m + 1 (score, below) where each group is large enough for its own threshold:
    scores at the cap around the margin, mostly under it (the budget goes below the cap),
    above it (misses at the cap), as large as below the cap, tied at 0, with a margin of 0."""
    n0 = min_calibration_size(alpha)
    for size in (3 * n0, 8 * n0, 20 * n0):
        for share in (0.3, 0.6, 0.7, 0.85):
            n_cap = max(int(share * size), n0 + 2)
            below = np.arange(size) >= n_cap
            if below.sum() < n0 + 2:
                continue
            b = rng.exponential(1.0, size)
            for at_cap, margin in (
                (rng.normal(0.1, 0.05, size), 0.1),
                (rng.normal(-0.3, 0.1, size), 0.1),
                (rng.normal(0.3, 0.2, size), 0.1),
                (rng.exponential(1.0, size), 0.1),
                (np.zeros(size), 0.1),
                (rng.normal(-0.5, 0.3, size), 0.0),
            ):
                yield np.where(below, b, at_cap), below, margin


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_cap_margin_thresholds_match_the_literal_construction(alpha):
    rng = np.random.default_rng(1)
    for scores, below, margin in _cap_margin_sets(alpha, rng):
        for factor in (1.0, 3.0, 1e9):
            thr, own, _, ranks = cap_margin_thresholds(scores, below, alpha, margin, factor)
            assert own.all()
            want = _literal_cap_margin(scores, below, alpha, margin, factor)
            np.testing.assert_array_equal(thr, want)
            bl = np.sort(scores[below])  # the law's rank names the threshold below the cap
            assert thr[1] == (bl[ranks[1] - 1] if ranks[1] <= len(bl) else np.inf)
            assert ranks[0] == conformal_rank(int((~below).sum()), alpha)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_cap_margin_thresholds_cover_every_set_exactly(alpha):
    """Miscoverage computed exactly (each input of the set in turn is the new one): at most
    alpha overall and at the cap, at most 3 alpha below it, in every set. Not counting the
    misses at the cap breaks the overall bound by more than 1.5x on some set, and dropping
    the floor at 3 alpha breaks the bound below the cap (so both checks can fail)."""
    rng = np.random.default_rng(2)
    worst = np.zeros(3)  # overall, at the cap, below (in units of alpha, 3 alpha)
    worst_broken = worst_unfloored = 0.0
    for scores, below, margin in _cap_margin_sets(alpha, rng):
        miss = np.zeros(len(scores), dtype=bool)
        miss_broken = miss.copy()
        miss_unfloored = miss.copy()
        for i in range(len(scores)):
            keep = np.arange(len(scores)) != i
            g = int(below[i])
            thr, own, _, _ = cap_margin_thresholds(scores[keep], below[keep], alpha, margin)
            assert own.all()
            miss[i] = scores[i] > thr[g]
            broken = _literal_cap_margin(scores[keep], below[keep], alpha, margin,
                                         count_misses=False)  # fmt: skip
            miss_broken[i] = scores[i] > broken[g]
            unfloored = _literal_cap_margin(scores[keep], below[keep], alpha, margin, None)
            miss_unfloored[i] = scores[i] > unfloored[g]
        worst = np.maximum(worst, [miss.mean() / alpha, miss[~below].mean() / alpha,
                                   miss[below].mean() / (3 * alpha)])  # fmt: skip
        worst_broken = max(worst_broken, miss_broken.mean() / alpha)
        worst_unfloored = max(worst_unfloored, miss_unfloored[below].mean() / (3 * alpha))
    assert (worst <= 1 + 1e-12).all(), worst
    assert worst_broken > 1.5, worst_broken
    assert worst_unfloored > 1.0, worst_unfloored


def test_cap_margin_thresholds_fall_back_and_refuse_bad_margins():
    alpha = 0.1
    scores = np.arange(40, dtype=float)
    below = np.zeros(40, dtype=bool)
    below[:5] = True  # 5 below the cap: too few for a threshold of their own
    thr, own, pooled, ranks = cap_margin_thresholds(scores, below, alpha, 0.1)
    assert not own.any() and (thr == pooled).all() and (ranks == 0).all()
    for bad in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="margin must be a finite number"):
            cap_margin_thresholds(scores, below, alpha, bad)
    with pytest.raises(ValueError, match="below_factor must be >= 1"):
        cap_margin_thresholds(scores, below, alpha, 0.1, below_factor=0.5)
