"""RRISESurrogate: the calibrated guarantee on a model with known radii, and the contract."""

import copy
import dataclasses
from functools import partial

import joblib
import numpy as np
import pytest
import torch
from scipy import stats as sps
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import EpochTimer

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.calibration import (
    cap_margin_thresholds,
    conformal_threshold,
    probit,
    two_group_thresholds,
)
from rrise_sklearn.callbacks import EpochProgress
from rrise_sklearn.conformal import (
    Pooled,
    cross_check_with_mapie,
    mc_bound,
    prediction_cap,
    staged_bounds,
)
from rrise_sklearn.ensemble import fit_stacked
from rrise_sklearn.nets import MLP

# the settings these tests were written for (the defaults before the recipe became the default):
# one network, targets and calibration at the smoothed classifier's n, no second stage
SMALL = dict(n_members=1, n_targets=None, n_calibration=None, n_refine=None)


def _draw(known_linear, size, rng):
    dist = rng.uniform(-1.2, 1.2, size=size)
    return known_linear.points_at_distance(dist, seed=int(rng.integers(2**31)))


@pytest.fixture(scope="module")
def linear_setup(known_linear):
    kl = known_linear
    sigma, alpha_mc = 0.5, 0.001
    smoothed = kl.smoothed(sigma=sigma, n=2000, alpha=alpha_mc, random_state=0)
    rng = np.random.default_rng(0)
    X = _draw(kl, 400, rng)
    sur = RRISESurrogate(
        FrozenEstimator(smoothed),
        **SMALL,
        alpha_conf=0.1,
        n_augment=1,
        max_epochs=30,
        lr=1e-2,
        random_state=0,
    ).fit(X)
    return kl, sigma, sur


def _wrong_rate_trials(kl, sigma, sur, alpha_conf, trials, rng, **params):
    """One fresh calibration set and one fresh test point per trial: independent trials."""
    m = 19
    wrong = certified = 0
    sur = copy.deepcopy(sur).set_params(alpha_conf=alpha_conf, **params)
    for t in range(trials):
        sur.conformalize(_draw(kl, m, rng), random_state=t)
        x = _draw(kl, 1, rng)
        res = sur.certify(x)
        g, dist, _ = kl.exact(x, sigma)
        certified += int(res.radius[0] > 0)
        wrong += int(res.radius[0] > 0 and (res.prediction[0] != g[0] or res.radius[0] > dist[0]))
    return wrong, certified


@pytest.mark.slow
@pytest.mark.parametrize("params", [{}, {"n_refine": 8000}], ids=["one-stage", "refined"])
def test_wrong_certificate_rate_within_alpha_conf_plus_alpha_mc(linear_setup, params):
    kl, sigma, sur = linear_setup
    trials, alpha_conf = 300, 0.05
    bound = alpha_conf + sur.alpha_mc_
    tol = sps.binom.ppf(1 - 1e-4, trials, bound)
    wrong, certified = _wrong_rate_trials(
        kl, sigma, sur, alpha_conf, trials, np.random.default_rng(1), **params
    )
    assert wrong <= tol, (wrong, tol)
    assert certified > trials / 3  # the certificates are not vacuous
    # negative control: the same harness catches a certifier whose threshold is set for
    # 8x the miscoverage it claims (so the test can fail)
    wrong_bad, _ = _wrong_rate_trials(
        kl, sigma, sur, 0.4, trials, np.random.default_rng(1), **params
    )
    assert wrong_bad > tol, (wrong_bad, tol)


@pytest.mark.slow
def test_default_configuration_keeps_the_guarantee(linear_setup):
    """The defaults' shape: an ensemble of five trained on the smoothed classifier's own
    training inputs (kept by its fit), every given input calibrating, refined bounds.

    Here those training inputs come from another distribution (only far from the
    hyperplane, as a base network's well-fitted training inputs might be): the
    surrogate is then worse near the boundary, but the guarantee only needs the
    calibration inputs to be exchangeable with the test inputs. Sample sizes are the
    test's (n_targets and n_calibration at the smoothed classifier's n = 2000).
    """
    kl, sigma, sur = linear_setup
    rng = np.random.default_rng(31)
    far = rng.choice([-1.0, 1.0], size=150) * rng.uniform(0.6, 1.2, size=150)
    smoothed = copy.deepcopy(sur.smoothed_)
    smoothed.training_inputs_ = kl.points_at_distance(far, seed=3)  # as fit keeps them
    recipe = RRISESurrogate(
        smoothed, n_targets=None, n_calibration=None, n_refine=8000, alpha_conf=0.1,
        n_augment=1, max_epochs=10, lr=1e-2, random_state=0,
    ).fit(_draw(kl, 100, rng))  # fmt: skip
    assert len(recipe.module_.members) == 5
    np.testing.assert_array_equal(recipe.train_inputs_[:150], smoothed.training_inputs_)
    assert recipe.calibration_.n_calibration == 100  # all of X calibrates
    trials, alpha_conf = 300, 0.05
    tol = sps.binom.ppf(1 - 1e-4, trials, alpha_conf + recipe.alpha_mc_)
    wrong, certified = _wrong_rate_trials(
        kl, sigma, recipe, alpha_conf, trials, np.random.default_rng(32)
    )
    assert wrong <= tol, (wrong, tol)
    assert certified > trials / 3
    # negative control on this surrogate: a threshold set for 8x the claimed miscoverage
    wrong_bad, _ = _wrong_rate_trials(kl, sigma, recipe, 0.4, trials, np.random.default_rng(32))
    assert wrong_bad > tol, (wrong_bad, tol)


def test_threshold_equals_order_statistic_and_mapie(linear_setup):
    _, _, sur = linear_setup
    tau = conformal_threshold(sur.calibration_scores_, sur.alpha_conf)
    # the default grouping; no input reaches the cap here: both groups take the pooled threshold
    assert sur.calibration_.grouping == "cap_margin"
    assert sur.calibration_.own.tolist() == [False, False]
    assert sur.calibration_.group_sizes.tolist() == [0, 100]
    assert sur.calibration_.pooled_threshold == tau
    np.testing.assert_array_equal(np.unique(sur.threshold_), [tau])
    assert sur.calibration_.n_calibration == 100


def test_certify_is_one_pass_and_consistent(linear_setup):
    kl, sigma, sur = linear_setup
    X = _draw(kl, 50, np.random.default_rng(5))
    res = sur.certify(X)
    prediction, radius = res
    assert res.counts is None
    assert ((prediction == -1) == (radius == 0)).all()
    z = (radius / sigma)[radius > 0]
    np.testing.assert_allclose(sps.norm.cdf(z), res.p_lower[radius > 0])
    np.testing.assert_allclose(sur.predict_proba(X).sum(1), 1.0)
    assert set(sur.predict(X)) <= {0, 1}
    amort = sur.amortization_
    for key in [
        "targets",
        "training",
        "calibration",
        "mc_per_query",
        "surrogate_per_query",
        "break_even_queries",
    ]:
        assert amort[key] >= 0
    fixed = amort["targets"] + amort["training"] + amort["calibration"]
    assert amort["break_even_queries"] == pytest.approx(
        fixed / (amort["mc_per_query"] - amort["surrogate_per_query"])
    )


def test_radius_ceiling_bounds_every_certificate_and_is_reached_at_the_cap(linear_setup):
    from rrise_sklearn.metrics import radius_ceiling

    kl, sigma, sur = linear_setup
    ceiling = radius_ceiling(sur)
    cal = sur.calibration_
    assert ceiling == pytest.approx(
        sigma * max(cal.calibrated_z(np.array([c]), np.array([cal.prediction_cap]))[0]
                    for c in range(2))
    )  # fmt: skip
    far = kl.points_at_distance(np.r_[np.full(20, 8.0), np.full(20, -8.0)], seed=1)
    X = np.concatenate([_draw(kl, 200, np.random.default_rng(6)), far])
    res = sur.certify(X)
    assert res.radius.max() <= ceiling + 1e-9
    assert res.radius[-40:].max() == pytest.approx(ceiling)  # far from the plane: at the cap


def test_mondrian_and_pac(linear_setup):
    kl, _, base = linear_setup
    X = _draw(kl, 600, np.random.default_rng(7))
    common = dict(alpha_conf=0.1, n_augment=0, max_epochs=5, lr=1e-2, random_state=0, **SMALL)
    smoothed = base.smoothed
    with pytest.warns(FutureWarning, match="mondrian=True is deprecated: pass mondrian='class'"):
        mond = RRISESurrogate(smoothed, mondrian=True, **common).fit(X)
    assert mond.threshold_.shape == (2,)
    for c in range(2):
        sel = mond.calibration_.classes == c
        assert mond.threshold_[c] == conformal_threshold(mond.calibration_scores_[sel], 0.1)
    pac = RRISESurrogate(smoothed, pac_delta=0.1, **common).fit(X)
    marg = RRISESurrogate(smoothed, **common).fit(X)
    np.testing.assert_array_equal(pac.calibration_scores_, marg.calibration_scores_)
    assert (
        pac.calibration_.grouping == "pooled"
    )  # "auto": the cap split needs the marginal threshold
    assert np.all(pac.threshold_ >= marg.threshold_)
    # the removed options name their replacement
    for name, value, fix in [("loss", "js", "criterion=rrise_sklearn.nets.JensenShannonLoss"),
                             ("calibrate", False, "predict_proba"),
                             ("refine_size", 0.1, "staged refinement"),
                             ("augment_scale", 1.0, "smoothing sigma")]:  # fmt: skip
        with pytest.raises(TypeError, match=f"{name} was removed.*{fix}"):
            RRISESurrogate(smoothed, **{name: value}, **common)


def _cp_lower_z(k, n, alpha):
    """Independent oracle: one-sided Clopper-Pearson lower bound (beta quantile), PhiInv scale."""
    k = np.asarray(k, dtype=float)
    lo = np.where(k > 0, sps.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    return sps.norm.ppf(lo)


def _full_refinement(sur, top, h, q, tables, alpha):
    """Oracle: every input's score with every stage (max of the stages' pooled CP bounds,
    floored at probit 0 as the calibration's scores are)."""
    idx = np.arange(len(top))
    cum_n = np.cumsum([t.sum(1)[0] for t in tables])
    cap = sps.norm.ppf(alpha ** (1 / cum_n[0]))
    y_hat = np.minimum(probit(h, q), cap)
    k = np.cumsum([t[idx, top] for t in tables], axis=0)
    bounds = np.max([_cp_lower_z(k[j], cum_n[j], alpha) for j in range(len(tables))], axis=0)
    first = _cp_lower_z(k[0], cum_n[0], alpha)
    return y_hat, cap, y_hat - np.maximum(first, 0.0), y_hat - np.maximum(bounds, 0.0)


@pytest.mark.parametrize("mondrian", [False, True])
def test_refined_threshold_equals_that_of_refining_every_input(linear_setup, mondrian):
    """Two stages: only some inputs are refined, yet the threshold is exactly the one of giving
    every input the second stage (Clopper-Pearson bounds at alpha_mc / 2 from scipy), every
    score at or above it comes from a refined input, and refined bounds are the larger of the
    two stages' bounds."""
    kl, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(n_calibration=2000, n_refine=6000, mondrian=mondrian)
    X_cal = _draw(kl, 200, np.random.default_rng(11))
    c1 = sur.smoothed_.sample_counts(X_cal, 2000, random_state=1, noise_sharing=1)
    c2 = sur.smoothed_.sample_counts(X_cal, 6000, random_state=2, noise_sharing=1)
    sur.conformalize(X_cal, counts=c1, refine_counts=c2)

    top, h, q = sur._top(sur._X(X_cal))
    a = sur.alpha_mc_ / 2
    y_hat, cap, stage1, full = _full_refinement(sur, top, h, q, [c1, c2], a)
    assert np.isclose(sur.prediction_cap_, cap)
    idx = np.arange(len(X_cal))
    groups = [idx] if not mondrian else [idx[top == c] for c in (0, 1)]
    refined = np.zeros(len(idx), dtype=bool)
    refined[sur.calibration_.refined] = True
    assert 0 < refined.sum() < len(idx)  # the point: not every input needed the second stage
    want = np.where(refined, np.minimum(stage1, full), stage1)
    np.testing.assert_allclose(sur.calibration_scores_, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sur.calibration_.first_stage_scores, stage1, rtol=0, atol=1e-9)
    for c, g in enumerate(groups):
        tau = sur.threshold_[c] if mondrian else sur.threshold_
        assert tau == conformal_threshold(sur.calibration_scores_[g], sur.alpha_conf)
        assert np.isclose(tau, conformal_threshold(full[g], sur.alpha_conf), rtol=0, atol=1e-9)
        assert refined[g][sur.calibration_scores_[g] >= tau].all()
    assert np.any(want[refined] < stage1[refined])  # the second stage tightened something
    # drawing the second stage itself also works
    sur.set_params(mondrian=False).conformalize(X_cal, random_state=5)
    assert len(sur.calibration_.refined) >= 1
    with pytest.raises(ValueError, match="refine_counts"):
        sur.conformalize(X_cal, counts=c1, refine_counts=c2[:, :1])


def test_cap_split_thresholds_equal_those_of_refining_every_input(linear_setup):
    """mondrian="cap" with two stages: each group's threshold is the oracle's (every input
    refined, scipy's beta quantiles, then two_group_thresholds), and certificates at the cap
    reach sigma * (cap - the cap group's threshold)."""
    kl, sigma, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(
        n_calibration=100, n_refine=1000, mondrian="cap", alpha_conf=0.1
    )
    X_cal = _draw(kl, 300, np.random.default_rng(13))
    c1 = sur.smoothed_.sample_counts(X_cal, 100, random_state=3, noise_sharing=1)
    c2 = sur.smoothed_.sample_counts(X_cal, 1000, random_state=4, noise_sharing=1)
    sur.conformalize(X_cal, counts=c1, refine_counts=c2)
    top, h, q = sur._top(sur._X(X_cal))
    _, cap, _, full = _full_refinement(sur, top, h, q, [c1, c2], sur.alpha_mc_ / 2)
    assert np.isclose(sur.prediction_cap_, cap)
    below = sur._prediction(h, q, sur.prediction_cap_) < sur.prediction_cap_
    thr, own, pooled = two_group_thresholds(full, below, 0.1)
    assert own.all() and 20 <= (~below).sum() <= 280
    np.testing.assert_array_equal(sur.calibration_.own, own)
    assert sur.calibration_.group_sizes.tolist() == [(~below).sum(), below.sum()]
    for j in (0, 1):
        if thr[j] > 1e-9:
            assert np.isclose(sur.threshold_[j], thr[j], rtol=0, atol=1e-9)
        else:  # scores <= 0 at the cap are not refined: the threshold stops at 0
            assert thr[j] - 1e-9 <= sur.threshold_[j] <= 1e-9, (sur.threshold_, thr)
    assert (
        sur.calibration_.pooled_threshold >= pooled - 1e-9
    )  # staged for the deployed thresholds only
    X = _draw(kl, 400, np.random.default_rng(14))
    top, h, q = sur._top(X)
    at_cap = sur._prediction(h, q, sur.prediction_cap_) >= sur.prediction_cap_
    res = sur.certify(X)
    assert at_cap.any() and (~at_cap).any()
    np.testing.assert_allclose(res.radius[at_cap], sigma * (cap - sur.threshold_[0]), rtol=1e-9)
    z = np.minimum(probit(h, q), cap)[~at_cap] - sur.threshold_[1]
    np.testing.assert_allclose(res.radius[~at_cap], sigma * np.maximum(z, 0), rtol=1e-9)
    # a calibration with too few inputs at the cap falls back to the pooled threshold
    sur.conformalize(X_cal[below][:150], counts=c1[below][:150], refine_counts=c2[below][:150])
    assert (
        not sur.calibration_.own.any()
        and (sur.threshold_ == sur.calibration_.pooled_threshold).all()
    )
    with pytest.raises(ValueError, match="mondrian='cap' splits a marginal"):
        RRISESurrogate(sur.smoothed, mondrian="cap", pac_delta=0.1, **SMALL).fit(X_cal)
    with pytest.raises(ValueError, match="mondrian must be"):
        RRISESurrogate(sur.smoothed, mondrian="groups", **SMALL).fit(X_cal)


def test_cap_margin_thresholds_equal_those_of_refining_every_input(linear_setup):
    """mondrian="cap_margin" with two stages: the deployed thresholds are the oracle's (every
    input refined, scipy's beta quantiles, then cap_margin_thresholds) though only some inputs
    had the second stage; the cap deducts at least cap_margin, certificates at the cap reach
    sigma * (cap - that deduction), and the group below the cap pays less than the cap
    split's own threshold when the cap leaves its budget unused."""
    kl, sigma, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(
        n_calibration=100, n_refine=1000, mondrian="cap_margin", cap_margin=0.05, alpha_conf=0.1
    )
    X_cal = _draw(kl, 300, np.random.default_rng(13))
    c1 = sur.smoothed_.sample_counts(X_cal, 100, random_state=3, noise_sharing=1)
    c2 = sur.smoothed_.sample_counts(X_cal, 1000, random_state=4, noise_sharing=1)
    sur.conformalize(X_cal, counts=c1, refine_counts=c2)
    cal = sur.calibration_
    top, h, q = sur._top(sur._X(X_cal))
    _, cap, _, full = _full_refinement(sur, top, h, q, [c1, c2], sur.alpha_mc_ / 2)
    below = sur._prediction(h, q, cap) < cap
    thr, own, pooled, ranks = cap_margin_thresholds(full, below, 0.1, 0.05)
    assert own.all() and cal.grouping == "cap_margin" and cal.cap_margin == 0.05
    np.testing.assert_allclose(cal.thresholds, thr, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(cal.threshold_ranks, ranks)
    assert 0 < len(cal.refined) < len(X_cal)  # staged: not every input had the second stage
    assert cal.thresholds[0] >= 0.05
    split = two_group_thresholds(full, below, 0.1)[0]
    assert cal.thresholds[1] <= split[1] + 1e-12
    X = _draw(kl, 400, np.random.default_rng(14))
    top, h, q = sur._top(X)
    at_cap = sur._prediction(h, q, cap) >= cap
    res = sur.certify(X)
    assert at_cap.any() and (~at_cap).any()
    np.testing.assert_allclose(res.radius[at_cap], sigma * (cap - cal.thresholds[0]), rtol=1e-9)
    # the dataset-level laws: one per group (not convolved) and a third of the level each
    info = res.info
    assert info["conformal_split"] == 3 and len(info["conformal_groups"]) == 2
    assert [int(g["rank"][0]) for g in info["conformal_groups"]] == ranks.tolist()
    with pytest.raises(ValueError, match="cap_margin must be a finite number"):
        RRISESurrogate(sur.smoothed, mondrian="cap_margin", cap_margin=-1, **SMALL).fit(X_cal)
    with pytest.raises(ValueError, match="mondrian='cap_margin' splits a marginal"):
        RRISESurrogate(sur.smoothed, mondrian="cap_margin", pac_delta=0.1, **SMALL).fit(X_cal)


def test_later_stages_are_drawn_only_where_the_threshold_needs_them(linear_setup):
    """Three stages (conformal.staged_bounds, the draws served from precomputed tables): the
    threshold equals the oracle's with every stage for every input, the stage levels are
    alpha_mc / 3, and every score at or above the threshold has had all three stages."""
    kl, _, sur = linear_setup
    X_cal = _draw(kl, 150, np.random.default_rng(12))
    stages = [1000, 3000, 20000]
    tables = [
        sur.smoothed_.sample_counts(X_cal, n, random_state=20 + j, noise_sharing=1)
        for j, n in enumerate(stages)
    ]
    top, h, q = sur._top(sur._X(X_cal))
    alpha = sur.alpha_mc_ / 3
    _, cap, stage1, full = _full_refinement(sur, top, h, q, tables, alpha)
    assert np.isclose(prediction_cap(1000, alpha), cap)
    y_hat = sur._prediction(h, q, prediction_cap(1000, alpha))
    served = []

    def draw(sel, j, rnd):
        served.append((j + 1, len(sel)))
        return tables[j + 1][sel, top[sel]]

    grouping = Pooled()
    bounds, levels = staged_bounds(
        tables[0][np.arange(150), top], 1000, stages[1:], alpha, y_hat,
        promote=lambda s: grouping.promote(s, top, None, sur.alpha_conf), draw=draw, floor=True,
    )  # fmt: skip
    scores = y_hat - np.maximum(bounds, 0.0)
    tau = conformal_threshold(scores, sur.alpha_conf)
    assert np.isclose(tau, conformal_threshold(full, sur.alpha_conf), rtol=0, atol=1e-9)
    first = mc_bound(tables[0][np.arange(150), top], 1000, alpha)
    np.testing.assert_allclose(y_hat - np.maximum(first, 0.0), stage1, atol=1e-9)
    assert (levels[scores >= tau] == 2).all()
    drawn = {j: sum(n for jj, n in served if jj == j) for j in (1, 2)}
    assert drawn == {1: int((levels >= 1).sum()), 2: int((levels >= 2).sum())}
    assert 0 < drawn[2] < drawn[1] < 150  # later stages for fewer inputs
    # the estimator draws its stages the same way, from streams of its own
    est = copy.deepcopy(sur).set_params(n_calibration=1000, n_refine=stages[1:], mondrian=False)
    est.conformalize(X_cal)
    cal = est.calibration_
    assert cal.first_stage_alpha == alpha and cal.stages == (3000, 20000)
    assert (cal.refine_levels[cal.scores >= cal.threshold] == 2).all()
    assert 0 < (cal.refine_levels == 2).sum() < (cal.refine_levels >= 1).sum() < 150
    with pytest.raises(ValueError, match="exactly one refinement stage"):
        est.conformalize(X_cal, counts=tables[0], refine_counts=tables[1])


def test_reuse_precomputed_targets(linear_setup):
    kl, _, sur = linear_setup
    X_cal = _draw(kl, 100, np.random.default_rng(8))
    again = RRISESurrogate(
        sur.smoothed, **SMALL, alpha_conf=0.1, max_epochs=30, lr=1e-2, random_state=0
    )
    again.fit(X_cal, train_inputs=sur.train_inputs_, train_counts=sur.train_counts_)
    assert again.amortization_["targets"] == 0.0
    assert again.calibration_.n_calibration == 100
    with pytest.raises(ValueError, match="expected"):
        again.fit(X_cal, train_inputs=sur.train_inputs_, train_counts=sur.train_counts_[:5])


def test_verify_flags_a_broken_threshold(linear_setup):
    kl, _, sur = linear_setup
    X = _draw(kl, 200, np.random.default_rng(9))
    report = sur.verify(X)
    assert report.n_inputs == 200
    assert 0 <= report.n_contradicted <= report.n_certified
    assert report.rate == report.n_exceed / 200
    bad_sur = copy.deepcopy(sur)
    cal = sur.calibration_
    bad_sur.calibration_ = dataclasses.replace(  # a far too optimistic calibration
        cal,
        thresholds=cal.thresholds - 5.0,
        # the cap split's verify tests the pooled one
        pooled_threshold=None if cal.pooled_threshold is None else cal.pooled_threshold - 5.0,
    )
    bad = bad_sur.verify(X)
    assert bad.alarm and bad.n_exceed > report.n_exceed and bad.p_value < 1e-6
    # another n than the calibration's changes the scores' law: refused
    with pytest.raises(ValueError, match="differs from the calibration's n_calibration"):
        sur.verify(X, n=300)
    with pytest.raises(ValueError, match="level"):
        sur.verify(X, level=1.5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "params",
    [{}, {"mondrian": "class"}, {"mondrian": "cap", "n_calibration": 100}],
    ids=["one-threshold", "mondrian", "cap-split"],
)
def test_verify_false_alarm_rate_without_drift_is_within_level(linear_setup, params):
    """No drift (calibration and verification inputs from one distribution): the alarm
    rate stays within ``level``. The binomial test verify used before, recomputed from the
    same reports, alarms far more often (the harness can fail). With the cap split (most
    of these calibrations take their own thresholds) the test counts scores above the
    pooled threshold."""
    kl, sigma, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(**{"alpha_conf": 0.1, "n_calibration": 500, **params})
    rng = np.random.default_rng(5)
    reps, level, m_ver = 200, 0.05, 300
    m_cal = 99 if params.get("mondrian") == "cap" else 49
    alarms = binomial_alarms = 0
    for t in range(reps):
        sur.conformalize(_draw(kl, m_cal, rng), random_state=t)
        rep = sur.verify(_draw(kl, m_ver, rng), level=level, random_state=10_000 + t)
        alarms += rep.alarm
        binomial_alarms += sps.binom.sf(rep.n_exceed - 1, m_ver, 0.1) <= level
    tol = sps.binom.ppf(1 - 1e-4, reps, level)
    assert alarms <= tol, (alarms, tol)
    if not params:
        assert binomial_alarms > tol, (binomial_alarms, tol)


def test_errors(linear_setup):
    kl, _, sur = linear_setup
    with pytest.raises(ValueError, match="has 5 points; alpha_conf=0.1 needs at least 9"):
        sur.conformalize(_draw(kl, 5, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="features"):
        sur.certify(np.zeros((3, 7)))
    with pytest.raises(NotFittedError):
        RRISESurrogate(sur.smoothed, **SMALL).certify(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="loss was removed"):
        RRISESurrogate(sur.smoothed, loss="probit", **SMALL)
    with pytest.raises(ValueError, match="conformity_score"):
        # no longer a parameter (skorch names unknown arguments at initialize)
        RRISESurrogate(
            sur.smoothed, conformity_score="radius", n_augment=0, max_epochs=1, **SMALL
        ).fit(_draw(kl, 200, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="train_inputs must be"):
        RRISESurrogate(sur.smoothed, **SMALL).fit(np.zeros((200, 5)), train_inputs="half")
    with pytest.raises(ValueError, match="pass y"):
        RRISESurrogate(SmoothedClassifier(MLP), **SMALL).fit(np.zeros((20, 5)))
    for bad in (0, [], [1000, 0], (1000, 2.5), "1000", True):
        with pytest.raises(ValueError, match="n_refine"):
            RRISESurrogate(
                sur.smoothed, n_members=1, n_targets=None, n_calibration=None, n_refine=bad
            ).fit(np.zeros((200, 5)))
    with pytest.raises(ValueError, match="refine_counts needs exactly one refinement stage"):
        copy.deepcopy(sur).conformalize(
            _draw(kl, 50, np.random.default_rng(0)), refine_counts=np.zeros((50, 2))
        )


def test_joblib_round_trip_and_grid_search(linear_setup, tmp_path):
    kl, _, sur = linear_setup
    X = _draw(kl, 40, np.random.default_rng(10))
    path = tmp_path / "sur.joblib"
    joblib.dump(sur, path)
    loaded = joblib.load(path)
    a, b = sur.certify(X), loaded.certify(X)
    np.testing.assert_array_equal(a.radius, b.radius)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    # a pickle of an earlier version (before score_scale and cap_margin): those parameters get
    # their defaults on loading, the calibration certifies as it did
    old = sur.__getstate__()
    del old["cap_margin"], old["score_scale"]
    older = RRISESurrogate.__new__(RRISESurrogate)
    older.__setstate__(old)
    assert older.get_params()["cap_margin"] == 0.1 and older.get_params()["score_scale"] is None
    np.testing.assert_array_equal(older.certify(X).radius, a.radius)
    assert "RRISESurrogate" in repr(older)

    Xg = _draw(kl, 400, np.random.default_rng(11))
    g, _, _ = kl.exact(Xg, 0.5)
    grid = GridSearchCV(
        RRISESurrogate(
            sur.smoothed, **SMALL, alpha_conf=0.1, n_augment=0, max_epochs=3, random_state=0
        ),
        {"lr": [1e-3, 1e-2]},
        cv=2,
    ).fit(Xg, g)
    assert grid.best_params_["lr"] in (1e-3, 1e-2)
    assert grid.best_estimator_.smoothed_ is sur.smoothed.estimator  # still the frozen one


@pytest.mark.slow
def test_unfitted_smoothed_is_fitted_on_its_own_split(digits):
    X, y = digits
    smoothed = SmoothedClassifier(MLP, module__hidden=32, max_epochs=5, n=200, random_state=0)
    sur = RRISESurrogate(
        smoothed, **SMALL, alpha_conf=0.05, n_augment=0, max_epochs=3, random_state=0
    ).fit(X[:600], y[:600])
    assert sur.smoothed_ is not smoothed
    assert not hasattr(smoothed, "module_")  # the parameter is left untouched
    # 600 / 2 fit the smoothed classifier; the surrogate trains on those same inputs
    # (n_augment=0) and all of the other 300 calibrate, none of them shared
    assert sur.calibration_.n_calibration == 300
    np.testing.assert_array_equal(sur.train_inputs_, sur.smoothed_.training_inputs_)
    assert len(sur.train_inputs_) == 300
    assert 0 <= sur.score(X[600:700], y[600:700]) <= 1


def test_explicit_training_inputs_leave_all_of_x_for_calibration(linear_setup):
    kl, _, sur = linear_setup
    rng = np.random.default_rng(5)
    X_train, X_cal = _draw(kl, 50, rng), _draw(kl, 120, rng)
    own = RRISESurrogate(
        sur.smoothed,
        n_members=1,
        n_calibration=None,
        n_refine=None,
        alpha_conf=0.1,
        n_augment=2,
        n_targets=300,
        max_epochs=2,
        random_state=0,
    ).fit(X_cal, train_inputs=X_train)
    assert own.calibration_.n_calibration == 120
    assert own.train_inputs_.shape == (150, X_train.shape[1])  # each input + 2 noisy copies
    np.testing.assert_array_equal(own.train_inputs_[:50], X_train)
    assert (own.train_counts_.sum(axis=1) == 300).all()
    # precomputed calibration counts of X are accepted with train_inputs, refused without
    counts = sur.smoothed_.sample_counts(X_cal, 500, random_state=3, noise_sharing=1)
    again = RRISESurrogate(
        sur.smoothed, n_members=1, n_refine=None, alpha_conf=0.1, n_augment=0, n_targets=300,
        n_calibration=500,
        max_epochs=1, random_state=0,
    ).fit(X_cal, train_inputs=X_train, calibration_counts=counts)  # fmt: skip
    assert again.calibration_.n_calibration == 120
    with pytest.raises(ValueError, match="calibration_counts needs all of X to calibrate"):
        RRISESurrogate(
            sur.smoothed, n_members=1, n_calibration=None, n_refine=None, n_targets=300
        ).fit(X_cal, calibration_counts=counts)


def test_surrogate_with_its_own_module_class(linear_setup):
    kl, _, sur = linear_setup
    X = _draw(kl, 300, np.random.default_rng(12))
    own = RRISESurrogate(
        sur.smoothed,
        MLP,
        **SMALL,
        module__hidden=8,
        alpha_conf=0.1,
        n_augment=0,
        max_epochs=3,
        random_state=0,
    ).fit(X)
    assert own.module_.net[0].in_features == 5 and own.module_.net[0].out_features == 8
    assert own.module_.net[-1].out_features == 2
    assert own.certify(X[:10]).radius.shape == (10,)


def test_ensemble_of_members_is_one_calibrated_network(linear_setup, tmp_path):
    from rrise_sklearn.surrogate import MeanLogProbEnsemble

    kl, _, sur = linear_setup
    rng = np.random.default_rng(21)
    X_train, X_cal, X_test = _draw(kl, 60, rng), _draw(kl, 120, rng), _draw(kl, 30, rng)
    kw = dict(alpha_conf=0.1, n_augment=1, n_targets=300, max_epochs=3, lr=1e-2, random_state=0)
    kw.update(n_calibration=None, n_refine=None)
    single = RRISESurrogate(sur.smoothed, n_members=1, **kw).fit(X_cal, train_inputs=X_train)
    ens = RRISESurrogate(sur.smoothed, n_members=3, **kw).fit(X_cal, train_inputs=X_train)
    assert isinstance(ens.module_, MeanLogProbEnsemble) and len(ens.module_.members) == 3
    # member 0 is the single-network fit; the others differ (their own training seeds)
    m0, m1 = (list(m.parameters()) for m in ens.module_.members[:2])
    for a, b in zip(m0, single.module_.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(m0, m1, strict=True))
    # probabilities: the normalized geometric mean of the members'
    with torch.inference_mode():
        Xt = torch.as_tensor(X_test)
        logp = torch.stack([torch.log_softmax(m(Xt), 1) for m in ens.module_.members]).mean(0)
    expected = torch.softmax(logp.double(), 1).numpy()
    np.testing.assert_allclose(ens.predict_proba(X_test), expected, rtol=1e-5, atol=1e-7)
    # calibrated as one fixed function: threshold = order statistic of its own scores
    np.testing.assert_array_equal(
        np.unique(ens.threshold_), [conformal_threshold(ens.calibration_scores_, 0.1)]
    )
    path = tmp_path / "ens.joblib"
    joblib.dump(ens, path)
    again = joblib.load(path)
    np.testing.assert_array_equal(again.certify(X_test).radius, ens.certify(X_test).radius)
    with pytest.raises(ValueError, match="n_members"):
        RRISESurrogate(
            sur.smoothed, n_targets=None, n_calibration=None, n_refine=None, n_members=0
        ).fit(X_cal, train_inputs=X_train)


def test_calibration_refuses_counts_that_share_noise(linear_setup):
    kl, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(n_refine=4000)
    smoothed = sur.smoothed_
    X = _draw(kl, 60, np.random.default_rng(12))
    n_cal = sur.n_calibration or smoothed.n
    same_a = smoothed.sample_counts(X, n_cal, random_state=3, noise_sharing=1)
    same_b = smoothed.sample_counts(X, 4000, random_state=3, noise_sharing=1)
    with pytest.raises(ValueError, match="same noise stream"):
        sur.conformalize(X, counts=same_a, refine_counts=same_b)
    # a slice keeps its stream: still refused
    with pytest.raises(ValueError, match="same noise stream"):
        sur.conformalize(X[:50], counts=same_a[:50], refine_counts=same_b[:50])
    # the estimator's own calibration stream reused as refine_counts is refused too
    own = smoothed.sample_counts(X, 4000, random_state=sur._draws.stream(13), noise_sharing=1)
    with pytest.raises(ValueError, match="same noise stream"):
        sur.conformalize(X, refine_counts=own)
    # the training targets' noise is not reused for calibration
    with pytest.raises(ValueError, match="same noise stream"):
        sur.conformalize(X, counts=smoothed.sample_counts(
            X, n_cal, random_state=sur.train_counts_.noise_key, noise_sharing=1))  # fmt: skip
    # two natural calls are independent streams: accepted
    a = smoothed.sample_counts(X, n_cal, noise_sharing=1)
    b = smoothed.sample_counts(X, 4000, noise_sharing=1)
    sur.conformalize(X, counts=a, refine_counts=b)
    assert len(sur.calibration_.refined) >= 1  # where the threshold needs the second stage


@pytest.mark.slow
@pytest.mark.parametrize(
    "cap_split", [False, "cap", "cap_margin"], ids=["one-threshold", "cap-split", "cap-margin"]
)
def test_dataset_level_bound_on_rrise_certificates_holds(linear_setup, cap_split):
    """RRISE certificates share one threshold, so their errors are dependent. The
    conformal-aware bound chosen from the result holds w.p. >= 1 - rho over fresh
    calibration and test sets, judged against a stricter truth than "right": a certificate
    counts only if its input's fresh Monte Carlo score is within the threshold and its
    Monte Carlo bound holds (the proof's events; a wrong certificate fails one of them,
    and they occur at about the nominal rate, so this harness can fail). The binomial bound
    at alpha_conf + alpha_mc, computed by hand on the same certificates, fails it far more
    often (and the function refuses it). With the cap split (n_calibration = 100, 99
    calibration inputs: both branches occur) the bound holds too."""
    from rrise_sklearn import stats as rs
    from rrise_sklearn.metrics import certified_accuracy_lower_bound

    kl, sigma, sur = linear_setup
    n_cal, m_cal = (100, 99) if cap_split else (500, 9)  # one threshold: tau = max of 9
    sur = copy.deepcopy(sur).set_params(
        alpha_conf=0.1, n_calibration=n_cal, mondrian=cap_split, cap_margin=0.05
    )
    rng = np.random.default_rng(21)
    rho, reps, m_test = 0.05, 200, 500
    misses = binomial_misses = 0
    branches, slack = set(), []
    for t in range(reps):
        sur.conformalize(_draw(kl, m_cal, rng), random_state=t)
        if cap_split:
            branches.add(tuple(sur.calibration_.own))
        X = _draw(kl, m_test, rng)
        g, dist, p = kl.exact(X, sigma)
        res = sur.certify(X)
        ok = (res.prediction == g) & (res.radius > 0)
        assert not np.any(ok & (res.radius > dist) & (res.radius > 0) & ~ok)
        top, y_hat, y_mc, k = sur._calibration_evidence(X, n_cal, 99, 10_000 + t)
        exceed = (y_hat - y_mc) > sur.calibration_.threshold_for(top, y_hat)
        fail = rs.clopper_pearson_lower(k, n_cal, sur.alpha_mc_) > np.where(top == g, p, 1 - p)
        strict = np.mean(ok & ~exceed & ~fail)
        assert strict <= np.mean(ok & (res.radius <= dist))  # stricter than "right"
        bound = certified_accuracy_lower_bound(g, res, rho=rho)
        misses += bound > strict
        slack.append(strict - bound)
        level = sur.alpha_conf + sur.alpha_mc_
        binomial_misses += np.mean(ok) - sps.binom.ppf(1 - rho, m_test, level) / m_test > strict
    tol = sps.binom.ppf(1 - 1e-4, reps, rho)
    assert misses <= tol, (misses, tol)
    print(
        f"conformal bound missed {misses}/{reps} (mean slack {np.mean(slack):.3f}), "
        f"binomial {binomial_misses}/{reps}"
    )
    if cap_split:
        assert (True, True) in branches and len(branches) > 1, branches
        assert np.mean(slack) < 0.2  # informative (a Markov bound here would be 0)
        return
    assert binomial_misses > tol, (binomial_misses, tol)
    with pytest.raises(ValueError, match="share one calibrated threshold"):
        certified_accuracy_lower_bound(g, res, independent=True)


def _exact_counts(kl, sigma, X, n, rng):
    """Monte Carlo counts of the linear model drawn from their exact binomial law."""
    _, _, p = kl.exact(X, sigma)
    p1 = np.where(X.astype(np.float64) @ kl.w + kl.b > 0, p, 1 - p)  # P(class 1)
    k1 = rng.binomial(n, p1)
    return np.stack([n - k1, k1], axis=1)


def _event_trials(kl, sigma, sur, alpha_conf, trials, rng, m=99, seen=None):
    """Independent trials of the proof's events with exact-law Monte Carlo counts.

    Each trial: a fresh calibration set (counts from the exact binomial law, through
    ``conformalize(counts=...)``), one fresh test input; counts E = {the test input's
    fresh score exceeds tau} or {its Monte Carlo bound exceeds the true p}, and wrong
    certificates. P(E) <= alpha_conf + alpha_mc, with equality in the conformal part
    when (m + 1) alpha_conf is an integer, and a wrong certificate implies E.
    """
    from rrise_sklearn import stats as rs

    sur = copy.deepcopy(sur).set_params(alpha_conf=alpha_conf)
    n = sur.n_calibration
    events = wrong = 0
    for _ in range(trials):
        X_cal = _draw(kl, m, rng)
        sur.conformalize(X_cal, counts=_exact_counts(kl, sigma, X_cal, n, rng))
        if seen is not None:
            seen(sur)  # a look at each calibration
        x = _draw(kl, 1, rng)
        g, dist, p = kl.exact(x, sigma)
        res = sur.certify(x)
        wrong += int(res.radius[0] > 0 and (res.prediction[0] != g[0] or res.radius[0] > dist[0]))
        top, h, q = sur._top(x)
        k = _exact_counts(kl, sigma, x, n, rng)[0, top]
        p_top = p if top[0] == g[0] else 1 - p
        y_hat = sur._prediction(h, q, sur.prediction_cap_)
        score = y_hat - np.maximum(mc_bound(k, n, sur.alpha_mc_), 0.0)  # the floored score
        fail = rs.clopper_pearson_lower(k, n, sur.alpha_mc_) > p_top
        events += int(score[0] > sur.calibration_.threshold_for(top, y_hat)[0] or fail[0])
    return events, wrong


@pytest.mark.slow
def test_guarantee_harness_catches_a_procedure_at_1_3x_the_bound(linear_setup):
    """The guarantee checked with enough trials to catch a certifier whose error rate is
    1.3x the stated bound with probability >= 1/2 (computed exactly below); the negative
    control is a threshold set for alpha_conf = 0.07 while claiming 0.05 (1.37x)."""
    kl, sigma, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(n_calibration=300)
    trials, alpha_conf = 3500, 0.05
    bound = alpha_conf + sur.alpha_mc_
    tol = sps.binom.ppf(1 - 1e-4, trials, bound)
    assert sps.binom.sf(tol, trials, 1.3 * bound) >= 0.5  # the harness's power at 1.3x
    events, wrong = _event_trials(kl, sigma, sur, alpha_conf, trials, np.random.default_rng(7))
    assert wrong <= events <= tol, (wrong, events, tol)
    assert events >= sps.binom.ppf(1e-4, trials, alpha_conf)  # E is not vacuous: near 0.05
    bad, _ = _event_trials(kl, sigma, sur, 0.07, trials, np.random.default_rng(7))
    assert bad > tol, (bad, tol)
    print(f"E {events}/{trials}, wrong {wrong}, tol {tol:.0f}, 1.37x control {bad}")


@pytest.mark.slow
@pytest.mark.parametrize("mondrian", ["cap", "cap_margin"])
def test_cap_split_keeps_the_guarantee(linear_setup, mondrian):
    """mondrian="cap": inputs predicted at the cap and the others get their own thresholds
    (or, when a group is too small, both the pooled one). With n_calibration = 100 the cap
    sits at z = 1.5, where about a sixth of these inputs are predicted: with 139
    calibration inputs most trials take the own thresholds and some fall back. The proof's
    events (fresh score above the input's own threshold, or a failed Monte Carlo bound)
    stay within alpha_conf + alpha_mc and are not vacuous; a threshold set for twice the
    claimed miscoverage fails the same harness. mondrian="cap_margin" (the groups sharing
    one budget, a margin of 0.05 at the cap) passes the same harness."""
    kl, sigma, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(n_calibration=100, mondrian=mondrian, cap_margin=0.05)
    trials, alpha_conf = 1500, 0.05
    tol = sps.binom.ppf(1 - 1e-4, trials, alpha_conf + sur.alpha_mc_)
    own = []
    events, wrong = _event_trials(
        kl, sigma, sur, alpha_conf, trials, np.random.default_rng(41), m=139,
        seen=lambda est: own.append(est.calibration_.own.copy()),
    )  # fmt: skip
    own = np.array(own)
    assert wrong <= events <= tol, (wrong, events, tol)
    assert events >= sps.binom.ppf(1e-4, trials, alpha_conf)  # near 0.05, not vacuous
    assert 0.5 < own.all(axis=1).mean() < 1  # both branches taken
    bad, _ = _event_trials(kl, sigma, sur, 0.1, trials, np.random.default_rng(41), m=139)
    assert bad > tol, (bad, tol)
    print(f"E {events}/{trials}, wrong {wrong}, tol {tol:.0f}, own {own.all(axis=1).mean():.2f}")


@pytest.mark.parametrize("m", [499, 899, 999])
def test_mapie_cross_check_never_fails_a_correct_calibration(linear_setup, m):
    """At these sizes MAPIE 1.6 picks one order statistic more conservative than the exact
    one at alpha_conf = 0.05; the calibration must go through with our exact threshold."""
    from rrise_sklearn.calibration import mapie_threshold

    _, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(alpha_conf=0.05)
    rng = np.random.default_rng(m)
    y_hat = rng.uniform(0.5, 2.5, size=m)
    y_mc = y_hat - rng.exponential(0.2, size=m)
    scores = np.sort(y_hat - y_mc)
    tau = conformal_threshold(scores, 0.05)
    cross_check_with_mapie(y_hat, y_mc, tau, 0.05)  # does not raise
    tau_mapie = mapie_threshold(y_hat, y_mc, 0.05)
    assert tau_mapie >= tau - 1e-12  # MAPIE is never less conservative
    with pytest.raises(RuntimeError, match="mismatch"):
        cross_check_with_mapie(y_hat, y_mc, float(scores[10]), 0.05)  # a wrong one is caught


def test_one_explicit_seed_never_gives_two_purposes_the_same_noise(linear_setup):
    """conformalize(random_state=5) and verify(random_state=5) draw Monte Carlo runs for
    calibration, each refinement round, verification and its refinement: all from distinct
    streams. (They used to share the stage-1 stream, and the refinement stream.)"""
    kl, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(n_refine=3000)
    keys = []
    original = sur.smoothed_.sample_counts

    def recording(*args, **kwargs):
        counts = original(*args, **kwargs)
        keys.append(counts.noise_key)
        return counts

    sur.smoothed_.sample_counts = recording
    rng = np.random.default_rng(17)
    sur.conformalize(_draw(kl, 60, rng), random_state=5)
    sur.verify(_draw(kl, 60, rng), random_state=5)
    assert len(keys) >= 4 and len(set(keys)) == len(keys), keys


def test_fused_ensemble_pass_equals_the_member_loop_and_follows_weight_updates():
    """Small batches of MLP members take one batched product per layer; same outputs."""
    from rrise_sklearn.nets import MLP
    from rrise_sklearn.surrogate import MeanLogProbEnsemble

    torch.manual_seed(0)
    ens = MeanLogProbEnsemble([MLP(12, 4, hidden=8, dropout=0.1) for _ in range(3)]).eval()
    x = torch.randn(7, 12)

    def both():
        with torch.inference_mode():
            fused = ens(x)
        assert ens._stacked is not None
        loop = torch.stack([torch.log_softmax(m(x), 1) for m in ens.members]).mean(0)
        return fused, loop.detach()

    fused, loop = both()
    torch.testing.assert_close(fused, loop)
    with torch.no_grad():  # an optimizer step changes weights in place: the cache must follow
        ens.members[1].net[0].weight.add_(1.0)
    fused2, loop2 = both()
    torch.testing.assert_close(fused2, loop2)
    assert not torch.allclose(fused2, fused)
    # a weight replaced by a new tensor, a layer replaced, a member replaced: all followed
    ens.members[0].net[0].weight = torch.nn.Parameter(torch.randn(8, 12))
    fused3, loop3 = both()
    torch.testing.assert_close(fused3, loop3)
    assert not torch.allclose(fused3, fused2)
    ens.members[2].net[-1] = torch.nn.Linear(8, 4)
    fused4, loop4 = both()
    torch.testing.assert_close(fused4, loop4)
    assert not torch.allclose(fused4, fused3)
    ens.members[1] = MLP(12, 4, hidden=8).eval()
    fused5, loop5 = both()
    torch.testing.assert_close(fused5, loop5)
    assert not torch.allclose(fused5, fused4)
    ens.members[1].net[0].bias = None  # no longer fusable: the loop
    with torch.inference_mode():
        torch.testing.assert_close(
            ens(x), torch.stack([torch.log_softmax(m(x), 1) for m in ens.members]).mean(0)
        )
    ens.train()  # training takes the loop (gradients reach every member)
    out = ens(x)
    out.sum().backward()
    assert all(m.net[0].weight.grad is not None for m in ens.members)


@pytest.mark.slow
@pytest.mark.parametrize("params", [{}, {"n_refine": 3000}], ids=["one-stage", "refined"])
def test_monitor_false_alarm_rate_stays_within_level_over_many_looks(linear_setup, params):
    """No drift, 10 looks per stream: monitor's alarm rate (any look) stays within level;
    running the one-shot verify at every look alarms far more often (the check can fail).
    With a refined calibration the monitor compares with its first-stage scores."""
    kl, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(alpha_conf=0.1, n_calibration=300, **params)
    rng = np.random.default_rng(21)
    reps, looks, batch, level = 100, 10, 30, 0.1
    alarms = verify_alarms = 0
    for t in range(reps):
        sur.conformalize(_draw(kl, 49, rng), random_state=t)
        monitored = verified = False
        for j in range(looks):
            X = _draw(kl, batch, rng)
            rep = sur.monitor(X, level=level)
            assert rep.n_seen == (j + 1) * batch and rep.threshold == 1 / level
            monitored |= rep.alarm
            verified |= sur.verify(X, level=level, random_state=10_000 * t + j).alarm
        alarms += monitored
        verify_alarms += verified
    tol = sps.binom.ppf(1 - 1e-4, reps, level)
    assert alarms <= tol, (alarms, tol)
    if not params:  # the harness can fail (verify is conservative after a refinement)
        assert verify_alarms > tol, (verify_alarms, tol)


def test_monitor_raises_the_alarm_on_drift_and_restarts_after_recalibration(linear_setup):
    kl, _, sur = linear_setup
    sur = copy.deepcopy(sur).set_params(alpha_conf=0.1, n_calibration=300)
    rng = np.random.default_rng(3)
    sur.conformalize(_draw(kl, 99, rng), random_state=1)
    first = sur.monitor(_draw(kl, 20, rng), level=0.05)
    assert not first.alarm and first.n_seen == 20
    with pytest.raises(ValueError, match="running monitor uses level=0.05"):
        sur.monitor(_draw(kl, 5, rng), level=0.01)
    # drift: every new input lies 0.9-1.2 from the decision boundary (the calibration's
    # spread over +-1.2), mostly at the prediction cap: the scores' distribution changes
    # and the martingale grows. (Inputs right at the boundary would not show: their
    # floored scores are their small predictions, like the calibration's.)
    far = [
        kl.points_at_distance(rng.uniform(0.9, 1.2, 30) * rng.choice([-1, 1], 30), seed=i)
        for i in range(15)
    ]
    reports = [sur.monitor(x, level=0.05) for x in far]
    assert reports[-1].alarm, [round(r.martingale, 2) for r in reports]
    assert reports[-1].max_martingale >= 20
    sur.conformalize(_draw(kl, 99, rng), random_state=2)  # recalibration restarts the stream
    assert sur.monitor(_draw(kl, 10, rng), level=0.05).n_seen == 10
    # a refined calibration: the monitor is seeded with the first-stage scores, whose
    # largest ones the refinement lowered in calibration_scores_
    refined = copy.deepcopy(sur).set_params(n_refine=3000)
    refined.conformalize(_draw(kl, 99, rng), random_state=3)
    lowered = refined.calibration_scores_ < refined.calibration_.first_stage_scores
    assert lowered.any() and set(np.flatnonzero(lowered)) <= set(refined.calibration_.refined)
    assert refined.calibration_.first_stage_alpha == refined.alpha_mc_ / 2
    assert refined.monitor(_draw(kl, 10, rng), level=0.05).n_seen == 10


def test_calibration_inputs_repeating_training_inputs_warn_or_fail(linear_setup):
    """A few repeats (natural duplicates) warn with their count; mostly repeats is an error."""
    kl, _, sur = linear_setup
    rng = np.random.default_rng(41)
    X_train, X_cal = _draw(kl, 60, rng), _draw(kl, 100, rng)
    kw = dict(alpha_conf=0.1, n_augment=0, max_epochs=1, random_state=0, **SMALL)
    with pytest.warns(UserWarning, match="2 of the 100 calibration inputs are identical"):
        RRISESurrogate(sur.smoothed, **kw).fit(
            np.concatenate([X_cal[:98], X_train[:2]]), train_inputs=X_train
        )
    with pytest.raises(ValueError, match="60 of the 100 calibration inputs are identical"):
        RRISESurrogate(sur.smoothed, **kw).fit(
            np.concatenate([X_cal[:40], X_train]), train_inputs=X_train
        )


@pytest.mark.filterwarnings("error")
def test_members_trained_together_get_the_updates_they_would_alone(linear_setup, capsys):
    """The batched training of an MLP ensemble: each member's final weights equal those of
    a plain torch loop that trains that member alone (same initialization, same per-epoch
    orders from its seed, its own Adam); settings it cannot reproduce take skorch's loop."""
    kl, _, sur = linear_setup
    smoothed = SmoothedClassifier(
        MLP, sigma=0.5, module__hidden=8, max_epochs=1, lr=1e-2, random_state=0
    ).fit(_draw(kl, 200, np.random.default_rng(1)), np.arange(200) % 2)
    X = _draw(kl, 150, np.random.default_rng(2)).astype(np.float32)
    T = np.random.default_rng(3).dirichlet([1.0, 1.0], size=150).astype(np.float32)
    kw = dict(n_members=3, max_epochs=2, batch_size=64, lr=1e-2, random_state=0)
    est = RRISESurrogate(smoothed, **kw)
    est._prepare(np.zeros((1, X.shape[1]), np.float32))
    seeds = np.array([11, 12, 13], dtype=np.uint32)
    members = fit_stacked(est, X, T, seeds, {})
    assert members is not None and len(members) == 3
    with_bar = RRISESurrogate(smoothed, **kw, callbacks=[("bar", EpochProgress("surrogate"))])
    with_bar._prepare(np.zeros((1, X.shape[1]), np.float32))
    same = fit_stacked(with_bar, X, T, seeds, {})  # a progress bar keeps the batched path
    loud = RRISESurrogate(smoothed, **kw, verbose=1)
    loud._prepare(np.zeros((1, X.shape[1]), np.float32))
    capsys.readouterr()
    logged = fit_stacked(loud, X, T, seeds, {})  # verbose keeps it too, with an epoch log
    log = capsys.readouterr().out.splitlines()
    assert log[0] == "training 3 members as one batched network (150 rows, batch 64)"
    assert [line.split()[0] for line in log[3:]] == ["1", "2"]  # one line per epoch
    assert all(float(line.split()[1]) > 0 for line in log[3:])  # the mean training loss
    for a, b, c in zip(members, same, logged, strict=True):
        for p, q, r in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
            torch.testing.assert_close(p, r, rtol=0, atol=0)
    for j, seed in enumerate(seeds):
        net = copy.deepcopy(smoothed.module_)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(int(seed))
        for _ in range(2):
            order = torch.randperm(150, generator=gen)
            for i in range(0, 150, 64):
                idx = order[i : i + 64]
                loss = torch.nn.functional.cross_entropy(
                    net(torch.as_tensor(X[idx])), torch.as_tensor(T[idx])
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        for a, b in zip(net.parameters(), members[j].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(members[0].net[0].weight, members[1].net[0].weight)
    for change in (
        {"optimizer": torch.optim.LBFGS},
        {"module": MLP, "module__dropout": 0.2},
        {"callbacks": [("progress", EpochProgress("surrogate")), ("timer", EpochTimer())]},
    ):
        other = RRISESurrogate(smoothed, **kw, **change)
        other._prepare(np.zeros((1, X.shape[1]), np.float32))
        assert fit_stacked(other, X, T, seeds, {}) is None


def test_certify_refuses_after_the_network_changed_since_calibration(linear_setup, tmp_path):
    """A threshold calibrated for one network says nothing about another: after partial_fit,
    a manual weight change, a replaced layer or module, certify/verify/monitor refuse until
    conformalize runs again; save/load and pickling keep a calibrated surrogate usable."""
    from rrise_sklearn import StaleCalibrationError, load, save

    kl, _, sur = linear_setup
    X = _draw(kl, 30, np.random.default_rng(40))
    want = sur.certify(X).radius

    # partial_fit drops the calibration
    trained = copy.deepcopy(sur)
    trained.partial_fit(X, np.full((30, 2), 0.5, dtype=np.float32))
    with pytest.raises(NotFittedError, match=r"not calibrated: call conformalize\(X_cal\)"):
        trained.certify(X)
    assert not hasattr(trained, "threshold_")
    trained.conformalize(_draw(kl, 100, np.random.default_rng(41)))
    assert trained.certify(X).radius.shape == (30,)

    def changed(edit):
        s = copy.deepcopy(sur)
        s.certify(X)  # the fast check is armed
        with torch.no_grad():
            edit(s)
        return s

    first = next(iter(sur.module_.parameters()))
    edits = {
        "in place": lambda s: next(iter(s.module_.parameters())).add_(1e-3),
        ".data assignment": lambda s: setattr(
            next(iter(s.module_.parameters())), "data", first.detach().clone() + 1e-3
        ),
        "load_state_dict": lambda s: s.module_.load_state_dict(
            {k: v + 1e-3 for k, v in s.module_.state_dict().items()}
        ),
        "another module": lambda s: setattr(s, "module_", copy.deepcopy(s.module_).apply(
            lambda m: [p.add_(1e-3) for p in m.parameters(recurse=False)])),
    }  # fmt: skip
    for edit in edits.values():
        s = changed(edit)
        for verb in (s.certify, s.verify, partial(s.monitor, level=0.05)):
            with pytest.raises(StaleCalibrationError, match="network changed since calibration"):
                verb(X)
    # negative control: an identical copy of the weights is the same network
    same = copy.deepcopy(sur)
    same.module_ = copy.deepcopy(sur.module_)
    np.testing.assert_array_equal(same.certify(X).radius, want)
    # a changed sigma is refused too (a subclass of ValueError, as before)
    s = copy.deepcopy(sur)
    s.smoothed_.sigma = 0.7
    with pytest.raises(ValueError, match="sigma=0.5 then, 0.7 now"):
        s.certify(X)
    # persistence and pickling keep the calibration tied to the same weights
    path = save(sur, tmp_path / "sur.zip")
    back = load(path, module=kl.module())
    np.testing.assert_array_equal(back.certify(X).radius, want)
    again = joblib.load(joblib.dump(sur, tmp_path / "sur.joblib")[0])
    np.testing.assert_array_equal(again.certify(X).radius, want)


def test_the_calibration_is_one_read_only_object(linear_setup):
    kl, _, sur = linear_setup
    cal = sur.calibration_
    assert sur.threshold_ is cal.threshold or sur.threshold_ == cal.threshold
    assert sur.calibration_scores_ is cal.scores and sur.prediction_cap_ == cal.prediction_cap
    with pytest.raises(AttributeError):
        sur.threshold_ = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.prediction_cap = 9.0
    with pytest.raises(ValueError, match="read-only"):
        cal.scores[0] = -1.0
    # the loose attributes of earlier versions still read, with a warning
    with pytest.warns(FutureWarning, match="calibration_.n_calibration"):
        assert sur.n_calibration_ == cal.n_calibration
    # set_params after calibration changes the next calibration, not this one
    s = copy.deepcopy(sur).set_params(mondrian="class", alpha_conf=0.2)
    assert s.calibration_.grouping == cal.grouping and s.calibration_.alpha_conf == 0.1
    np.testing.assert_array_equal(
        s.certify(_draw(kl, 20, np.random.default_rng(0))).radius,
        sur.certify(_draw(kl, 20, np.random.default_rng(0))).radius,
    )


def test_surrogate_over_a_pipeline_certifies_raw_inputs_and_saves_as_one_model(digits, tmp_path):
    """RRISESurrogate(pipe) used to raise TypeError: the user transformed by hand and rebuilt a
    Pipeline to save it. Now the preprocessing is the surrogate's own."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    from rrise_sklearn import certify, load, save

    X, y = digits
    raw = (X * 16.0 + 1.0).astype(np.float32)  # raw units 1..17
    pipe = make_pipeline(
        MaxAbsScaler(),
        SmoothedClassifier(MLP, module__hidden=32, max_epochs=15, n0=20, n=200, random_state=0),
    ).fit(raw[:300], y[:300])
    params = dict(SMALL, max_epochs=5, alpha_conf=0.1, random_state=0)
    sur = RRISESurrogate(pipe, **params).fit(raw[300:420])
    by_hand = RRISESurrogate(FrozenEstimator(pipe[-1]), **params).fit(
        pipe[:-1].transform(raw[300:420])
    )
    res = sur.certify(raw[420:460])
    want = by_hand.certify(pipe[:-1].transform(raw[420:460]))
    np.testing.assert_array_equal(res.radius, want.radius)
    np.testing.assert_array_equal(res.prediction, want.prediction)
    assert (res.radius > 0).any()
    np.testing.assert_array_equal(sur.predict(raw[420:460]), by_hand.predict(
        pipe[:-1].transform(raw[420:460])))  # fmt: skip
    # through rrise_sklearn.certify: the same radii, named in the SmoothedClassifier's space, and
    # the raw-unit radius of the MaxAbsScaler (max|d| = 1 / the smallest max-abs feature)
    via = certify(sur, raw[420:460])
    np.testing.assert_array_equal(via.radius, res.radius)
    assert "the SmoothedClassifier of RRISESurrogate (the output of MaxAbsScaler)" in via.info[
        "radius_units"]  # fmt: skip
    np.testing.assert_allclose(via.input_radius, res.radius * pipe[0].scale_.min())
    # one model file; the loaded surrogate certifies raw inputs identically
    save(sur, tmp_path / "sur.zip")
    loaded = load(tmp_path / "sur.zip")
    again = loaded.certify(raw[420:460])
    np.testing.assert_array_equal(again.radius, res.radius)
    np.testing.assert_array_equal(again.prediction, res.prediction)
    assert type(loaded.smoothed).__name__ == "Pipeline" and loaded.preprocessing_ is not None
    # partial_fit takes raw inputs too (it used to feed them to the network untransformed)
    soft = (by_hand.train_counts_ / by_hand.train_counts_.sum(1, keepdims=True))[:60]
    soft = soft.astype(np.float32)
    for est, X_pf in ((sur, raw[300:360]), (by_hand, pipe[:-1].transform(raw[300:360]))):
        torch.manual_seed(0)  # the same batch order for both
        est.partial_fit(X_pf, soft)
    np.testing.assert_allclose(sur.predict_proba(raw[420:460]),
                               by_hand.predict_proba(pipe[:-1].transform(raw[420:460])),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # refused: an unfitted Pipeline, a Pipeline that does not end in a SmoothedClassifier
    unfitted = make_pipeline(MaxAbsScaler(), SmoothedClassifier(MLP))
    with pytest.raises(ValueError, match="not fitted: fit it first"):
        RRISESurrogate(unfitted, **params).fit(raw[300:420])
    with pytest.raises(TypeError, match="must end in a SmoothedClassifier"):
        RRISESurrogate(make_pipeline(MaxAbsScaler(), MaxAbsScaler()), **params).fit(raw[:10])


def test_surrogate_over_a_stretching_pipeline_warns_at_fit_before_the_costly_part(digits):
    """A scaler that stretches X's units 20x or more makes every radius that much smaller in raw
    units: the user hears it when fitting the surrogate (it used to come only at
    rrise_sklearn.certify); a Pipeline that keeps the units stays quiet."""
    import warnings

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    X, y = digits
    smoothed = SmoothedClassifier(MLP, module__hidden=16, max_epochs=2, n0=20, n=100,
                                  random_state=0)  # fmt: skip
    params = dict(SMALL, max_epochs=1, alpha_conf=0.2, random_state=0)
    for factor, stretched in ((0.05, True), (16.0, False)):  # digits X is in [0, 1]
        raw = (X * factor).astype(np.float32)  # feature ranges <= factor: MinMaxScaler stretches
        pipe = make_pipeline(MinMaxScaler(), smoothed).fit(raw[:200], y[:200])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            RRISESurrogate(pipe, **params).fit(raw[200:260])
        said = [w for w in seen if "stretches the units" in str(w.message)]
        assert bool(said) is stretched
        if stretched:
            assert "before RRISESurrogate" in str(said[0].message)
            assert "sigma=0.25" in str(said[0].message)
            assert said[0].filename == __file__  # points at the user's call
