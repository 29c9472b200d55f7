"""Tests of rrise_sklearn.stats against independent oracles and exact computations."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from rrise_sklearn import stats as rs

ALPHAS = [0.001, 0.01, 0.05, 0.25]


def _cp_grid():
    cases = []
    for n in [1, 2, 3, 10, 57, 100, 1000, 10_000, 10_000_000]:
        ks = sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
        for k in ks:
            cases.append((k, n))
    return cases


@pytest.mark.parametrize("alpha", ALPHAS)
def test_clopper_pearson_matches_binomtest_exact_interval(alpha):
    # Oracle: scipy's two-sided exact interval at confidence 1 - 2 alpha has
    # one-sided tails of alpha each.
    for k, n in _cp_grid():
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        lo = rs.clopper_pearson_lower(k, n, alpha)
        hi = rs.clopper_pearson_upper(k, n, alpha)
        # binomtest solves for the bound numerically; it drifts by up to ~5e-6
        # (relative) for bounds below 1e-6 and by 0.5 % near 1e-10, where the closed-form
        # checks below pin ours down exactly.
        assert lo == pytest.approx(ci.low, rel=1e-5, abs=1e-12), (k, n)
        assert hi == pytest.approx(ci.high, rel=1e-5, abs=1e-12), (k, n)


def test_clopper_pearson_closed_forms_at_extremes():
    for n in [1, 5, 100, 10**6]:
        for alpha in ALPHAS:
            lo = rs.clopper_pearson_lower(n, n, alpha)
            assert lo == pytest.approx(alpha ** (1 / n), rel=1e-15)
            assert rs.clopper_pearson_lower(0, n, alpha) == 0.0
            assert rs.clopper_pearson_upper(n, n, alpha) == 1.0
            assert rs.clopper_pearson_upper(0, n, alpha) == pytest.approx(
                -math.expm1(math.log(alpha) / n), rel=1e-12
            )
            # k = 1: Beta(1, n) has cdf 1 - (1 - x)^n, so the bound is closed-form too
            assert rs.clopper_pearson_lower(1, n, alpha) == pytest.approx(
                -math.expm1(math.log1p(-alpha) / n), rel=1e-9
            )


def test_clopper_pearson_broadcasts():
    k = np.array([[0, 5, 10]])
    n = np.array([[10], [20]])
    out = rs.clopper_pearson_lower(k, n, 0.01)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert out[i, j] == rs.clopper_pearson_lower(k[0, j], n[i, 0], 0.01)
    # array alpha broadcasts too
    out = rs.clopper_pearson_lower(5, 10, np.array([0.01, 0.1]))
    assert out[0] < out[1]


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_exact_coverage_of_lower_bound_and_clt_counterexample(alpha):
    """P_k~Bin(n,p)(lower(k) <= p) >= 1 - alpha, computed exactly by summing the pmf."""
    ps = [0.001, 0.05, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999]
    ns = [1, 2, 7, 30, 100, 333, 1000]
    for n in ns:
        k = np.arange(n + 1)
        lo = rs.clopper_pearson_lower(k, n, alpha)
        hi = rs.clopper_pearson_upper(k, n, alpha)
        for p in ps:
            pmf = sps.binom.pmf(k, n, p)
            assert pmf[lo <= p].sum() >= 1 - alpha - 1e-12, (n, p)
            assert pmf[hi >= p].sum() >= 1 - alpha - 1e-12, (n, p)
    # the normal approximation is not a finite-sample bound (documented warning)
    n, p = 100, 0.999
    k = np.arange(n + 1)
    clt = rs.clt_lower(k, n, 0.001)
    coverage = sps.binom.pmf(k, n, p)[clt <= p].sum()
    assert coverage < 0.999
    assert coverage < 0.2  # about 0.095 per the reference analysis


def test_radius_precision_near_one_no_saturation():
    alpha, sigma = 0.001, 0.5
    radii = [rs.certified_radius(n, n, alpha, sigma) for n in [10**6, 10**7, 10**8]]
    assert radii[0] < radii[1] < radii[2]
    for n, r in zip([10**6, 10**7, 10**8], radii, strict=True):
        # independent route: log-space normal quantile of the exact complement
        q = -math.expm1(math.log(alpha) / n)
        assert r == pytest.approx(sigma * sps.norm.isf(q), rel=1e-12)
        assert r == pytest.approx(rs.max_certifiable_radius(n, alpha, sigma), rel=1e-12)
        # the p_lower route agrees to float64 precision of 1 - p
        p = rs.clopper_pearson_lower(n, n, alpha)
        assert rs.radius_from_p_lower(p, sigma) == pytest.approx(r, rel=1e-7)


def test_max_certifiable_radius_reference_values():
    # method.md: 1.50 / 2.46 / 3.20 / 3.81 sigma at n = 1e2..1e5, alpha = 0.001
    got = [rs.max_certifiable_radius(n, 0.001, 1.0) for n in (100, 1000, 10**4, 10**5)]
    assert np.round(got, 2).tolist() == [1.50, 2.46, 3.20, 3.81]


def test_top2_radius_reduces_to_single_bound_and_is_clipped():
    pa = np.linspace(0.51, 0.999, 20)
    np.testing.assert_allclose(rs.top2_radius(pa, 1 - pa, 0.3), rs.radius_from_p_lower(pa, 0.3))
    assert rs.top2_radius(0.4, 0.45, 1.0) == 0.0
    assert rs.top2_radius(0.6, 0.2, 1.0) == pytest.approx(
        0.5 * (sps.norm.ppf(0.6) - sps.norm.ppf(0.2))
    )


def test_predict_test_matches_binomtest_grid():
    for total in [1, 2, 5, 10, 31, 100, 400]:
        for n_a in range(total + 1):
            n_b = total - n_a
            pv = sps.binomtest(n_a, total, 0.5).pvalue
            assert rs.predict_pvalue(n_a, n_b) == pytest.approx(pv, rel=1e-9, abs=1e-300)
            for alpha in [0.001, 0.01, 0.05, 0.5]:
                assert bool(rs.predict_test(n_a, n_b, alpha)) == (pv <= alpha)
    assert not rs.predict_test(0, 0, 0.05)
    out = rs.predict_test(np.array([90, 55]), np.array([10, 45]), 0.001)
    assert out.tolist() == [True, False]


def test_anytime_levels_sum_to_alpha():
    lv = rs.anytime_levels(200_000, 0.01)
    assert np.all(np.diff(lv) < 0)
    assert lv.sum() < 0.01
    assert lv.sum() == pytest.approx(0.01 * (1 - 5 / 200_005), rel=1e-9)


def test_shore_and_expected_ratio():
    p = np.linspace(0.5, 0.99, 50)
    assert np.max(np.abs(rs.shore_ppf(p) - sps.norm.ppf(p))) < 0.011
    # documented underestimate in the far tail
    assert rs.shore_ppf(1 - 1e-6) < 0.93 * sps.norm.ppf(1 - 1e-6)
    z = sps.norm.isf(0.001)
    assert rs.expected_radius_ratio(1000, 0.001) == pytest.approx(1 - 1.64 * z / math.sqrt(1000))
    assert rs.expected_radius_ratio(1, 0.001) == 0.0


@pytest.mark.parametrize(
    ("radius", "sigma", "p_a", "alpha"),
    [
        (0.25, 0.25, 1.0, 0.001),
        (0.25, 0.25, 0.99, 0.001),
        (0.1, 0.5, 0.8, 0.01),
        (0.0, 0.5, 0.7, 0.05),
    ],
)
def test_samples_for_radius_is_smallest_by_brute_force(radius, sigma, p_a, alpha):
    n = int(rs.samples_for_radius(radius, sigma, p_a, alpha))

    def radius_at(m):
        return rs.radius_from_p_lower(rs._cp_lower_real(p_a * m, m, alpha), sigma)

    assert radius_at(n) > radius
    # every smaller budget falls short (linear scan, independent of the bisection)
    assert all(radius_at(m) <= radius for m in range(1, n))


def test_samples_for_radius_out_of_reach_is_inf():
    assert math.isinf(rs.samples_for_radius(1.0, 0.25, 0.9, 0.001))  # p_a <= Phi(4)


@pytest.mark.parametrize(
    ("func", "args", "match"),
    [
        (rs.clopper_pearson_lower, (1, 10, 0.0), "alpha"),
        (rs.clopper_pearson_lower, (1, 10, 1.0), "alpha"),
        (rs.clopper_pearson_upper, (11, 10, 0.1), "k must lie in"),
        (rs.clopper_pearson_lower, (-1, 10, 0.1), "k"),
        (rs.clopper_pearson_lower, (0, 0, 0.1), "n"),
        (rs.clopper_pearson_lower, (1.5, 10, 0.1), "whole numbers"),
        (rs.radius_from_p_lower, (0.9, 0.0), "sigma"),
        (rs.radius_from_p_lower, (1.2, 1.0), "p_lower"),
        (rs.max_certifiable_radius, (0, 0.01, 1.0), "n"),
        (rs.max_certifiable_radius, (10, 0.01, -1.0), "sigma"),
        (rs.predict_test, (5, 3, 2.0), "alpha"),
        (rs.predict_test, (-5, 3, 0.1), "n_a"),
        (rs.certified_radius, (5, 3, 0.1, 1.0), "k must lie in"),
        (rs.samples_for_radius, (-1.0, 1.0, 0.9, 0.01), "radius"),
    ],
)
def test_bad_input_raises_clear_error(func, args, match):
    with pytest.raises(ValueError, match=match):
        func(*args)


# ---------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------
alphas = st.sampled_from([1e-6, 1e-3, 0.01, 0.05, 0.2])


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 10**6), data=st.data(), alpha=alphas)
def test_bounds_monotone_in_k(n, data, alpha):
    k1 = data.draw(st.integers(0, n))
    k2 = data.draw(st.integers(k1, n))
    assert rs.clopper_pearson_lower(k1, n, alpha) <= rs.clopper_pearson_lower(k2, n, alpha)
    assert rs.clopper_pearson_upper(k1, n, alpha) <= rs.clopper_pearson_upper(k2, n, alpha)
    assert (
        rs.clopper_pearson_lower(k1, n, alpha) <= k1 / n <= rs.clopper_pearson_upper(k1, n, alpha)
    )


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 2000), m=st.integers(2, 50), alpha=alphas)
def test_lower_bound_increases_with_n_at_fixed_ratio(k, m, alpha):
    # n -> m n at the same proportion k / n tightens the bound
    n = k + m  # proportion k / n < 1
    lo1 = rs.clopper_pearson_lower(k, n, alpha)
    lo2 = rs.clopper_pearson_lower(m * k, m * n, alpha)
    assert lo2 >= lo1


@settings(max_examples=200, deadline=None)
@given(
    p1=st.floats(0, 1, allow_nan=False),
    p2=st.floats(0, 1, allow_nan=False),
    sigma=st.floats(1e-3, 10.0),
)
def test_radius_monotone_and_zero_at_or_below_half(p1, p2, sigma):
    lo, hi = min(p1, p2), max(p1, p2)
    assert rs.radius_from_p_lower(lo, sigma) <= rs.radius_from_p_lower(hi, sigma)
    if lo <= 0.5:
        assert rs.radius_from_p_lower(lo, sigma) == 0.0
    else:
        assert rs.radius_from_p_lower(lo, sigma) > 0.0


@settings(max_examples=200, deadline=None)
@given(p=st.floats(0.5 + 1e-9, 1 - 1e-9), sigma=st.floats(1e-3, 10.0))
def test_radius_agrees_with_norm_ppf_where_accurate(p, sigma):
    assert rs.radius_from_p_lower(p, sigma) == pytest.approx(
        sigma * sps.norm.ppf(p), rel=1e-6, abs=1e-9
    )
