"""Metrics, scorers and plots."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.model_selection import GridSearchCV

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.metrics import (
    abstain_rate,
    acr_scorer,
    average_certified_radius,
    certified_accuracy,
    certified_accuracy_lower_bound,
    certified_accuracy_scorer,
)
from rrise_sklearn.nets import MLP
from rrise_sklearn.plotting import CertifiedAccuracyDisplay, plot_certified_regions
from rrise_sklearn.results import CertificationResult


def test_certified_accuracy_by_hand():
    y = np.array([0, 1, 2, 1, 0])
    pred = np.array([0, 1, -1, 2, 0])
    rad = np.array([0.3, 0.6, 0.0, 0.9, 0.0])  # last: correct label but abstained (radius 0)
    assert certified_accuracy(y, pred, rad) == pytest.approx(2 / 5)
    np.testing.assert_allclose(
        certified_accuracy(y, pred, rad, [0, 0.3, 0.31, 0.6, 0.61]), [2 / 5, 2 / 5, 1 / 5, 1 / 5, 0]
    )
    assert average_certified_radius(y, pred, rad) == pytest.approx((0.3 + 0.6) / 5)
    assert abstain_rate(rad) == pytest.approx(2 / 5)
    # string labels
    ys = np.array(["a", "b"])
    assert certified_accuracy(ys, np.array(["a", "abstain"]), [0.2, 0.0]) == 0.5


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length"):
        certified_accuracy([0, 1], [0], [0.1, 0.2])
    with pytest.raises(ValueError, match=">= 0"):
        certified_accuracy([0], [0], [-0.1])
    with pytest.raises(ValueError, match="empty"):
        average_certified_radius([], [], [])
    with pytest.raises(ValueError, match="r must"):
        certified_accuracy([0], [0], [0.1], r=-1)


@pytest.mark.parametrize("independent", [True, False])
def test_lower_bound_holds_with_probability_one_minus_rho(independent):
    """Simulate certifiers whose certificates are each wrong w.p. alpha (independently)."""
    rng = np.random.default_rng(0)
    n, alpha, rho, sims = 500, 0.02, 0.1, 2000
    y = np.zeros(n, dtype=int)
    truly_ok = rng.random(n) < 0.7  # inputs truly correct and robust at r
    misses = 0
    for _ in range(sims):
        wrong = rng.random(n) < alpha  # these certificates claim correct but are not
        claimed = truly_ok | wrong
        pred = np.where(claimed, 0, 1)
        if independent:  # the result must show independent draws
            res = CertificationResult(
                pred, np.ones(n), np.ones(n), info={"alpha": alpha, "noise_sharing": 1}
            )
            bound = certified_accuracy_lower_bound(y, res, rho=rho, independent=True)
        else:
            bound = certified_accuracy_lower_bound(y, pred, np.ones(n), alpha=alpha, rho=rho)
        true_acc = np.mean(truly_ok)
        misses += bound > true_acc
    assert misses / sims <= rho
    # and the correction is not vacuous
    assert bound > (0.6 if independent else 0.4)


@pytest.fixture(scope="module")
def digits_small(digits):
    X, y = digits
    return X[:600], y[:600]


def test_scorers_in_grid_search_with_dict_scoring(digits_small):
    X, y = digits_small
    clf = SmoothedClassifier(MLP, module__hidden=32, max_epochs=5, n0=20, n=100, random_state=0)
    grid = GridSearchCV(
        clf,
        {"sigma": [0.25, 0.5]},
        scoring={"acc": certified_accuracy_scorer(0.25), "acr": acr_scorer()},
        refit="acr",
        cv=2,
    ).fit(X, y)
    res = grid.best_estimator_.certify(X[:100])
    assert acr_scorer()(grid.best_estimator_, X[:100], y[:100]) == pytest.approx(
        average_certified_radius(y[:100], *res)
    )
    assert certified_accuracy_scorer(0.25)(grid.best_estimator_, X[:100], y[:100]) == pytest.approx(
        certified_accuracy(y[:100], *res, r=0.25)
    )
    assert np.isfinite(grid.cv_results_["mean_test_acc"]).all()
    assert grid.best_index_ == int(np.argmax(grid.cv_results_["mean_test_acr"]))
    with pytest.raises(ValueError, match="r must"):
        certified_accuracy_scorer(-1)


def test_plots_return_matplotlib_objects(digits_small):
    from sklearn.datasets import make_moons

    y = np.array([0, 1, 1, 0])
    disp = CertifiedAccuracyDisplay.from_results(
        y, {"a": (y, np.array([0.5, 0.2, 0.0, 1.0])), "b": (y, np.zeros(4))}, ceiling=1.2
    )
    assert len(disp.lines_) == 2
    assert disp.ax_.get_xlabel().startswith("radius")
    # the curve is the certified accuracy
    np.testing.assert_allclose(disp.curves["a"][0], 0.75)
    X, ym = make_moons(100, noise=0.1, random_state=0)
    clf = SmoothedClassifier(
        MLP, module__hidden=16, max_epochs=5, lr=1e-2, n=50, random_state=0
    ).fit(X, ym)
    ax = plot_certified_regions(clf, X, ym, grid_size=10)
    assert ax.images
    with pytest.raises(ValueError, match="2-D"):
        plot_certified_regions(clf, np.zeros((3, 3)))


def test_lower_bound_refuses_an_independence_it_cannot_see():
    y = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="plain arrays do not show"):
        certified_accuracy_lower_bound(y, y, np.ones(10), alpha=0.01, independent=True)
    shared = CertificationResult(
        y, np.ones(10), np.ones(10), info={"alpha": 0.01, "noise_sharing": 16}
    )
    with pytest.raises(ValueError, match="share noise within groups of noise_sharing=16"):
        certified_accuracy_lower_bound(y, shared, independent=True)
    # default: Markov for shared noise, equal to the explicit Markov variant
    assert certified_accuracy_lower_bound(y, shared) == certified_accuracy_lower_bound(
        y, y, np.ones(10), alpha=0.01
    )
    with pytest.raises(ValueError, match="alpha is required"):
        certified_accuracy_lower_bound(y, y, np.ones(10))


@pytest.mark.slow
def test_lower_bound_with_shared_noise_holds_and_the_binomial_variant_would_not(known_linear):
    """4,000 inputs at one distance from a linear boundary, certified with the default
    noise_sharing=16: the bound chosen from the result holds w.p. >= 1 - rho; the binomial
    (independent) bound, computed by hand on the same certificates, fails far more often."""
    kl = known_linear
    sigma, alpha, rho, n_in, reps = 0.5, 0.05, 0.05, 4000, 120
    d = sigma * sps.norm.ppf(0.8)
    X = kl.points_at_distance(np.full(n_in, d), seed=1)
    g, dist, _ = kl.exact(X, sigma)
    clf = kl.smoothed(sigma=sigma, n0=10, n=100, alpha=alpha, noise_sharing=16)
    misses = binomial_misses = 0
    for t in range(reps):
        res = clf.certify(X, random_state=t)
        ok = (res.prediction == g) & (res.radius > 0)
        truly = np.mean(ok & (res.radius <= dist))  # certified and right
        misses += certified_accuracy_lower_bound(g, res, rho=rho) > truly
        counted = np.mean(ok)
        binomial_misses += counted - sps.binom.ppf(1 - rho, n_in, alpha) / n_in > truly
    tol = sps.binom.ppf(1 - 1e-4, reps, rho)
    assert misses <= tol, (misses, tol)
    assert binomial_misses > tol, (binomial_misses, tol)
    print(f"shared-noise bound missed {misses}/{reps}, binomial {binomial_misses}/{reps}")


@pytest.mark.parametrize("kind", ["accuracy", "acr"])
def test_scorers_work_on_a_pipeline_and_grid_search_selects_by_them(digits, kind):
    """A Pipeline does not forward certify: the scorers used to score every candidate NaN
    (and GridSearchCV then picked the first one)."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from rrise_sklearn import SmoothedClassifier, certify
    from rrise_sklearn.metrics import certified_accuracy, certified_accuracy_scorer
    from rrise_sklearn.nets import MLP

    X, y = digits
    pipe = make_pipeline(
        StandardScaler(),
        SmoothedClassifier(MLP, module__hidden=16, max_epochs=10, n0=20, n=200, random_state=0),
    )
    scorer = certified_accuracy_scorer(0.25) if kind == "accuracy" else acr_scorer()
    grid = GridSearchCV(
        pipe,
        {"smoothedclassifier__sigma": [0.25, 2.0]},
        scoring=scorer,
        cv=2,
        error_score="raise",
    )
    grid.fit(X[:400], y[:400])  # fmt: skip
    scores = grid.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert grid.best_params_["smoothedclassifier__sigma"] == 0.25 and scores[0] > scores[1] > 0
    fitted = grid.best_estimator_
    res = certify(fitted, X[400:450])
    if kind == "accuracy":
        want = certified_accuracy(y[400:450], res.prediction, res.radius, 0.25)
    else:
        want = average_certified_radius(y[400:450], res.prediction, res.radius)
    assert scorer(fitted, X[400:450], y[400:450]) == pytest.approx(want)


def test_multi_metric_scorer_certifies_once_per_fold_and_selects_on_a_pipeline(digits, monkeypatch):
    """The gallery's pattern: several metrics, one certification per fold (dict scoring with
    one library scorer per metric certifies once per metric)."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import rrise_sklearn.pipeline as pipeline_module
    from rrise_sklearn.metrics import certified_scorer

    real, calls = pipeline_module.certify, []

    def counting(estimator, X, **kw):
        calls.append(len(X))
        return real(estimator, X, **kw)

    monkeypatch.setattr(pipeline_module, "certify", counting)
    X, y = digits
    pipe = make_pipeline(
        StandardScaler(),
        SmoothedClassifier(MLP, module__hidden=16, max_epochs=10, n0=20, n=200, random_state=0),
    )
    scorer = certified_scorer([0.0, 0.25], acr=True, abstain_rate=True)
    grid = GridSearchCV(
        pipe, {"smoothedclassifier__sigma": [0.25, 3.0]}, scoring=scorer,
        refit="certified_accuracy_r0.25", cv=2, error_score="raise",
    ).fit(X[:400], y[:400])  # fmt: skip
    assert len(calls) == 2 * 2  # 2 candidates x 2 folds, one certify each
    for name in scorer.names:
        assert np.isfinite(grid.cv_results_[f"mean_test_{name}"]).all()
    # a sigma far too large for standardized digits (3 standard deviations per pixel) loses
    assert grid.best_params_ == {"smoothedclassifier__sigma": 0.25}
    acc = grid.cv_results_["mean_test_certified_accuracy_r0.25"]
    assert acc[0] > acc[1]
    # the dict holds what the single-metric functions give on the same certificates
    calls.clear()
    fitted = grid.best_estimator_
    got = scorer(fitted, X[400:450], y[400:450])
    res = real(fitted, X[400:450])
    assert got["certified_accuracy_r0.25"] == pytest.approx(
        certified_accuracy(y[400:450], *res, r=0.25)
    )
    assert got["acr"] == pytest.approx(average_certified_radius(y[400:450], *res))
    assert got["abstain_rate"] == pytest.approx(np.mean(res.radius == 0))
    assert len(calls) == 1


def test_scorers_warn_when_the_radius_is_above_the_sample_budget_ceiling(digits_small):
    """At n=100, alpha=0.001, sigma=0.25 no certificate exceeds 0.375: scoring at r=0.5 gives 0
    whatever the model, which must not pass silently."""
    from rrise_sklearn.metrics import certified_scorer, radius_ceiling
    from rrise_sklearn.stats import max_certifiable_radius

    X, y = digits_small
    clf = SmoothedClassifier(
        MLP, module__hidden=32, max_epochs=5, sigma=0.25, n0=20, n=100, random_state=0
    ).fit(X, y)
    ceiling = radius_ceiling(clf)
    assert ceiling == pytest.approx(float(max_certifiable_radius(100, 0.001, 0.25)))
    res = clf.certify(X[:200])
    assert res.radius.max() <= ceiling + 1e-12
    assert res.radius.max() == pytest.approx(ceiling)  # easy inputs: all 100 samples agree
    with pytest.warns(UserWarning, match=r"r=0.5 is above the radius ceiling 0.375.*n to at least"):
        assert certified_accuracy_scorer(0.5)(clf, X[:50], y[:50]) == 0.0
    with pytest.warns(UserWarning, match="radius ceiling"):
        certified_scorer([0.0, 0.5])(clf, X[:50], y[:50])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        certified_accuracy_scorer(0.25)(clf, X[:50], y[:50])
        certified_scorer([0.0, 0.25])(clf, X[:50], y[:50])
        acr_scorer()(clf, X[:50], y[:50])
    # the n the warning asks for does lift the ceiling above r
    import re

    with pytest.warns(UserWarning) as rec:
        certified_accuracy_scorer(0.5)(clf, X[:5], y[:5])
    need = int(re.search(r"at least ([\d,]+)", str(rec[0].message)).group(1).replace(",", ""))
    assert max_certifiable_radius(need, 0.001, 0.25) > 0.5
    assert max_certifiable_radius(need - 1, 0.001, 0.25) <= 0.5


def test_certified_scorer_refuses_bad_radii():
    from rrise_sklearn.metrics import certified_scorer

    for bad in ([-0.1], [np.nan], [0.25, 0.25]):
        with pytest.raises(ValueError, match="radii"):
            certified_scorer(bad)
    with pytest.raises(ValueError, match="at least one"):
        certified_scorer([], acr=False)
