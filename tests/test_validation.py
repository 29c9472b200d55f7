"""One validation layer: every bad input gives a documented exception with a message that says what
was wrong and how to fix it (table-driven), and random inputs never crash, hang or give NaN radii
(property-based, hypothesis)."""

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError

from rrise_sklearn import RRISESurrogate, SmoothedClassifier, certify, metrics, stats
from rrise_sklearn.nets import MLP, LinearModel

# S: the surrogate settings of these tests (one network, targets and calibration at the
# smoothed classifier's n, no second stage)
S = dict(n_members=1, n_targets=None, n_calibration=None, n_refine=None)


@pytest.fixture(scope="module")
def models(digits):
    X, y = digits
    clf = SmoothedClassifier(
        MLP, module__hidden=16, max_epochs=1, n0=10, n=100, random_state=0
    ).fit(X[:300], y[:300])
    sur = RRISESurrogate(
        clf, n_members=1, n_refine=None, n_targets=50, n_augment=0, n_calibration=100,
        alpha_conf=0.1, max_epochs=1, random_state=0,
    ).fit(X[300:600])  # fmt: skip
    return X, y, clf, sur


def _retrained(sur, X):
    """A copy of a calibrated surrogate trained further (which drops its calibration)."""
    sur = copy.deepcopy(sur)
    k = len(sur.classes_)
    return sur.partial_fit(X[:20], np.full((20, k), 1.0 / k, dtype=np.float32))


def _new(**kw):
    return SmoothedClassifier(MLP, max_epochs=1, n=50, **kw)


def _with(X, i, value):
    X = X.copy()
    X.flat[i] = value
    return X


# (id, call(X, y, clf, sur), exception, message fragment (regex))
CASES = [
    # inputs
    ("nan X", lambda X, y, c, s: _new().fit(_with(X[:50], 3, np.nan), y[:50]), ValueError, "NaN"),
    ("inf X", lambda X, y, c, s: _new().fit(_with(X[:50], 3, np.inf), y[:50]), ValueError,
     "infinity"),
    ("object X", lambda X, y, c, s: _new().fit(np.full((50, 2), "a", dtype=object), y[:50]),
     ValueError, "could not convert string to float"),
    ("complex X", lambda X, y, c, s: _new().fit(X[:50].astype(complex), y[:50]), ValueError,
     "Complex data not supported"),
    ("empty X", lambda X, y, c, s: _new().fit(X[:0], y[:0]), ValueError,
     r"0 sample\(s\).*minimum of 1"),
    ("1-D X", lambda X, y, c, s: _new().fit(X[:50, 0], y[:50]), ValueError, "Expected 2D array"),
    ("no features", lambda X, y, c, s: _new().fit(X[:50, :0], y[:50]), ValueError,
     r"0 feature\(s\)"),
    ("lengths differ", lambda X, y, c, s: _new().fit(X[:50], y[:40]), ValueError,
     "inconsistent numbers of samples"),
    ("y is None", lambda X, y, c, s: _new().fit(X[:50], None), ValueError, "requires y"),
    ("y 2-D", lambda X, y, c, s: _new().fit(X[:50], np.c_[y[:50], y[:50]]), ValueError,
     "1d array"),
    ("y NaN", lambda X, y, c, s: _new().fit(X[:50], np.where(y[:50] == 0, np.nan, y[:50])),
     ValueError, "y contains NaN"),
    ("y continuous", lambda X, y, c, s: _new().fit(X[:50], X[:50, 3] + 0.1), ValueError,
     "Unknown label type: continuous"),
    ("one class", lambda X, y, c, s: _new().fit(X[:50], np.zeros(50, int)), ValueError,
     r"only one class.*classes=\[\.\.\.\]"),
    ("abstain label is a class", lambda X, y, c, s: _new().fit(X[:50], y[:50] - 1), ValueError,
     "abstain_label=-1 is one of the classes.*choose a label"),
    ("string labels, no abstain label",
     lambda X, y, c, s: _new().fit(X[:50], np.array(["a", "b"])[y[:50] % 2]), ValueError,
     "explicit abstain_label"),
    ("wrong feature count", lambda X, y, c, s: c.certify(X[:5, :10]), ValueError,
     "X has 10 features, but SmoothedClassifier is expecting 64"),
    ("image for a flat model", lambda X, y, c, s: c.certify(X[:5].reshape(5, 1, 8, 8)),
     ValueError, r"fitted on inputs of shape \(64,\); reshape X"),
    ("NaN at certify", lambda X, y, c, s: c.certify(_with(X[:5], 0, np.nan)), ValueError, "NaN"),
    ("empty at certify", lambda X, y, c, s: c.certify(X[:0]), ValueError, r"0 sample\(s\)"),
    ("surrogate: wrong features", lambda X, y, c, s: s.certify(X[:5, :10]), ValueError,
     "X has 10 features"),
    ("surrogate: NaN", lambda X, y, c, s: s.certify(_with(X[:5], 0, np.inf)), ValueError,
     "infinity"),
    ("surrogate: empty", lambda X, y, c, s: s.verify(X[:0]), ValueError, r"0 sample\(s\)"),
    # parameters
    ("sigma 0", lambda X, y, c, s: _new(sigma=0).fit(X[:50], y[:50]), ValueError,
     "sigma .* must be a finite number in \\(0, 1e\\+30\\]"),
    ("sigma NaN", lambda X, y, c, s: _new(sigma=float("nan")).fit(X[:50], y[:50]), ValueError,
     "sigma .* must be a finite number in \\(0, 1e\\+30\\]"),
    ("sigma string", lambda X, y, c, s: _new(sigma="0.5").fit(X[:50], y[:50]), ValueError,
     "sigma .* must be a finite number in \\(0, 1e\\+30\\]"),
    ("alpha 0", lambda X, y, c, s: _new(alpha=0).fit(X[:50], y[:50]), ValueError,
     r"alpha must lie in \(0, 1\)"),
    ("alpha 1.5 at certify", lambda X, y, c, s: c.certify(X[:5], alpha=1.5), ValueError,
     r"alpha must lie in \(0, 1\)"),
    ("n0 0", lambda X, y, c, s: _new(n0=0).fit(X[:50], y[:50]), ValueError,
     "n0 must be an integer >= 1"),
    ("n 0 at certify", lambda X, y, c, s: c.certify(X[:5], n=0), ValueError,
     "n must be an integer >= 1"),
    ("n 2.5 at certify", lambda X, y, c, s: c.certify(X[:5], n0=2.5), ValueError,
     "n0 must be an integer >= 1"),
    ("n 0 for counts", lambda X, y, c, s: c.sample_counts(X[:5], n=0), ValueError,
     "n must be an integer >= 1"),
    ("mc batch 0", lambda X, y, c, s: _new(mc_batch_size=0).fit(X[:50], y[:50]), ValueError,
     "mc_batch_size must be an integer >= 1"),
    ("training batch 0", lambda X, y, c, s: _new(batch_size=0).fit(X[:50], y[:50]), ValueError,
     "batch_size should be a positive integer"),
    ("noise_sharing 0", lambda X, y, c, s: _new(noise_sharing=0).fit(X[:50], y[:50]),
     ValueError, "noise_sharing must be an integer >= 1"),
    ("adaptive max_n 0", lambda X, y, c, s: c.certify_adaptive(X[:5], max_n=0), ValueError,
     "max_n must be an integer >= 1"),
    ("alpha_conf 1.5", lambda X, y, c, s: RRISESurrogate(c, **S, alpha_conf=1.5).fit(X[300:400]),
     ValueError, r"alpha_conf must lie in \(0, 1\)"),
    ("calibration too small",
     lambda X, y, c, s: RRISESurrogate(c, **{**S, "n_targets": 20}, alpha_conf=0.001, n_augment=0,
                                       max_epochs=1).fit(X[300:400]),
     ValueError, "alpha_conf=0.001 needs at least 999"),
    ("calibration_size 2.0", lambda X, y, c, s: RRISESurrogate(c, **S, calibration_size=2.0).fit(X),
     ValueError, r"calibration_size must be a share in \(0, 1\)"),
    ("n_calibration 0", lambda X, y, c, s: RRISESurrogate(c, **{**S, "n_calibration": 0}).fit(X),
     ValueError, "n_calibration must be None or an integer >= 1"),
    ("n_members 0", lambda X, y, c, s: RRISESurrogate(c, **{**S, "n_members": 0}).fit(X),
     ValueError, "n_members must be an integer >= 1"),
    ("removed option loss", lambda X, y, c, s: RRISESurrogate(c, **S, loss="x"),
     TypeError, "loss was removed; for loss='js' pass criterion="),
    ("calibrating on the training set",
     lambda X, y, c, s: RRISESurrogate(c, **S).fit(c.training_inputs_), ValueError,
     "calibration inputs are identical to the smoothed classifier's training inputs"),
    ("verify with another n", lambda X, y, c, s: s.verify(X[:50], n=7), ValueError,
     "differs from the calibration's n_calibration"),
    ("surrogate of a torch module", lambda X, y, c, s: RRISESurrogate(MLP(), **S), TypeError,
     "wrap the network first"),
    ("surrogate of an unfitted classifier", lambda X, y, c, s: RRISESurrogate(_new(), **S).fit(X),
     ValueError, "smoothed is not fitted: pass y"),
    # order of calls
    ("certify before fit", lambda X, y, c, s: _new().certify(X[:5]), NotFittedError,
     r"not fitted yet\. Call fit\(X, y\)"),
    ("predict before fit", lambda X, y, c, s: _new().predict(X[:5]), NotFittedError,
     "not fitted yet"),
    ("conformalize before fit", lambda X, y, c, s: RRISESurrogate(c, **S).conformalize(X[:50]),
     NotFittedError, r"Call fit\(X\) first"),
    ("verify after partial_fit", lambda X, y, c, s: _retrained(s, X).verify(X[:50]),
     NotFittedError, r"not calibrated: call conformalize\(X_cal\)"),
    # metrics and pipelines
    ("metric lengths", lambda X, y, c, s: metrics.certified_accuracy(y[:5], y[:4], np.ones(5)),
     ValueError, "same length"),
    ("NaN radius", lambda X, y, c, s: metrics.average_certified_radius(
        y[:2], y[:2], np.array([np.nan, 1.0])), ValueError, "radius must contain numbers >= 0"),
    ("bound level", lambda X, y, c, s: metrics.certified_accuracy_lower_bound(
        y[:5], c.certify(X[:5]), rho=2), ValueError, r"rho must lie in \(0, 1\)"),
    ("not a certifier", lambda X, y, c, s: certify(object(), X[:5]), TypeError,
     "cannot certify: pass a fitted SmoothedClassifier"),
    ("count above n", lambda X, y, c, s: stats.clopper_pearson_lower(5, 3, 0.01), ValueError,
     r"k must lie in \[0, n\]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "exc", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(models, case, call, exc, message):
    X, y, clf, sur = models
    with pytest.raises(exc) as info:
        call(X, y, clf, sur)
    assert re.search(message, str(info.value), flags=re.S), str(info.value)


def test_a_surrogate_refuses_a_smoothed_classifier_whose_sigma_changed(models):
    X, _, clf, sur = models
    before = sur.certify(X[:20])
    try:
        clf.set_params(sigma=0.5)  # the radii would be scaled by the new sigma: wrong certificates
        with pytest.raises(ValueError, match=r"sigma=0.25 then, 0.5 now.*recalibrate"):
            sur.certify(X[:20])
        with pytest.raises(ValueError, match="calibrated for a smoothed classifier"):
            sur.verify(X[:20])
        clf.set_params(sigma=0.25, alpha=0.01)  # alpha_mc follows the classifier's alpha
        with pytest.raises(ValueError, match="alpha_mc=0.001 then, 0.01 now"):
            sur.certify(X[:20])
    finally:
        clf.set_params(sigma=0.25, alpha=0.001)
    np.testing.assert_array_equal(sur.certify(X[:20]).radius, before.radius)


def test_a_network_that_fails_on_the_input_gives_a_value_error():
    clf = SmoothedClassifier(LinearModel(6, 2), classes=[0, 1], n=20).initialize()
    with pytest.raises(ValueError, match=r"network failed on inputs of shape \(4,\)"):
        clf.certify(np.zeros((3, 4), np.float32))


# ---------------------------------------------------------------------------
# property-based: valid result or documented exception, never a crash or a NaN radius
# ---------------------------------------------------------------------------
def _linear(d, k=3, seed=0):
    torch.manual_seed(seed)
    return SmoothedClassifier(LinearModel(d, k), classes=list(range(k)), n0=5, n=30).initialize()


_dtypes = st.sampled_from(["float16", "float32", "float64", "int8", "int64", "bool", "uint8"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4),
    dtype=_dtypes,
    sigma=st.floats(1e-3, 1e3),
    alpha=st.floats(1e-9, 0.5, exclude_max=True),
    n=st.integers(1, 300),
    n0=st.integers(1, 50),
    data=st.data(),
)
def test_certify_gives_a_valid_result_for_any_numeric_input(shape, dtype, sigma, alpha, n, n0,
                                                            data):  # fmt: skip
    if dtype == "bool":
        elements = None
    else:
        low = 0 if dtype == "uint8" else -100
        elements = {"min_value": low, "max_value": 100}
        if dtype.startswith("float"):
            elements.update(allow_nan=False, allow_infinity=False)
    X = data.draw(hnp.arrays(dtype, shape, elements=elements))
    d = int(np.prod(shape[1:]))
    clf = _linear(d)
    clf.set_params(sigma=sigma, n=n, n0=n0, alpha=alpha)
    with warnings.catch_warnings():  # a tiny n warns that it cannot certify: documented
        warnings.simplefilter("ignore", UserWarning)
        res = clf.certify(X, random_state=0)
    assert res.radius.shape == (shape[0],)
    assert np.all(np.isfinite(res.radius)) and np.all(res.radius >= 0)
    assert np.all((res.p_lower >= 0) & (res.p_lower <= 1))
    assert set(res.prediction.tolist()) <= {0, 1, 2, -1}
    assert np.all((res.radius > 0) == (res.prediction != -1))
    # a second call with another shape is refused with the fitted shape in the message
    if len(shape) > 2:
        with pytest.raises(ValueError, match="fitted on inputs of shape"):
            clf.certify(X.reshape(shape[0], -1))


_bad = st.sampled_from(["nan", "inf", "complex", "object", "str", "empty", "1d", "0d"])


@settings(max_examples=30, deadline=None)
@given(kind=_bad, n=st.integers(1, 5), d=st.integers(1, 6))
def test_bad_inputs_raise_value_error_never_anything_else(kind, n, d):
    clf = _linear(d)
    X = np.ones((n, d), np.float32)
    if kind == "nan":
        X[0, 0] = np.nan
    elif kind == "inf":
        X[-1, -1] = -np.inf
    elif kind == "complex":
        X = X.astype(np.complex64)
    elif kind == "object":
        X = X.astype(object)
        X[0, 0] = "x"
    elif kind == "str":
        X = X.astype(str)
        X[0, 0] = "x"
    elif kind == "empty":
        X = X[:0]
    elif kind == "1d":
        X = X[0]
    elif kind == "0d":
        X = np.float32(1.0)
    for method in (clf.certify, clf.predict, clf.predict_proba):
        with pytest.raises(ValueError):
            method(X)


@settings(max_examples=15, deadline=None)
@given(
    labels=st.sampled_from(
        [
            np.array([3, 7]),
            np.array([-5, 0, 9]),
            np.array([-1, 2]),
            np.array(["cat", "dog"]),
            np.array([True, False]),
            np.array([1.0, 2.0]),
            np.array([0.5, 1.5]),
        ]
    ),
    abstain=st.sampled_from([None, -99, "none"]),
    seed=st.integers(0, 3),
)
def test_any_label_type_fits_or_raises_a_documented_error(labels, abstain, seed):
    rng = np.random.default_rng(seed)
    y = labels[rng.integers(0, len(labels), 24)]
    y[: len(labels)] = labels  # every class present
    X = rng.normal(size=(24, 3)).astype(np.float32)
    clf = SmoothedClassifier(LinearModel, abstain_label=abstain, max_epochs=1, n0=5, n=40,
                             random_state=seed)  # fmt: skip
    try:
        clf.fit(X, y)
    except ValueError as exc:  # documented: abstain label collides or missing, float labels
        assert re.search("abstain_label|Unknown label type: continuous", str(exc)), str(exc)
        return
    pred = clf.predict(X)
    allowed = set(clf.classes_.tolist()) | {clf.abstain_label_}
    assert set(pred.tolist()) <= allowed
    res = clf.certify(X)
    assert np.all(np.isfinite(res.radius)) and np.all(res.radius >= 0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 8),
    radius=st.lists(st.floats(-1, 5) | st.just(float("nan")), min_size=0, max_size=8),
    r=st.floats(-1, 3),
)
def test_metrics_give_a_number_in_range_or_a_value_error(n, radius, r):
    y = np.arange(n) % 3
    pred = (np.arange(n) + 1) % 3
    radius = np.asarray(radius, dtype=float)
    try:
        acc = metrics.certified_accuracy(y, pred, radius, r=r)
        acr = metrics.average_certified_radius(y, pred, radius)
    except ValueError:
        return
    assert 0 <= acc <= 1 and np.isfinite(acr) and acr >= 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    rows=st.integers(1, 20),
    scale=st.floats(0, 1e4),
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32]),
)
def test_surrogate_radii_are_finite_for_any_valid_input(models, rows, scale, dtype):
    X, _, _, sur = models
    Z = (X[:rows] * scale).astype(dtype)
    res = sur.certify(Z)
    assert np.all(np.isfinite(res.radius)) and np.all(res.radius >= 0)
    assert np.all((res.radius > 0) == (res.prediction != sur.smoothed_.abstain_label_))


def test_the_one_input_fast_path_returns_what_scikit_learn_would(models):
    """Fitted estimators skip scikit-learn's generic checks only for inputs those checks would
    return unchanged; every other input gets them (and their errors and warnings)."""
    from sklearn.utils.validation import validate_data

    from rrise_sklearn._validation import _checked_already, validate_inputs

    pd = pytest.importorskip("pandas")

    X, y, clf, sur = models
    x = np.ascontiguousarray(X[:1], dtype=np.float32)
    for est in (clf, sur):
        assert _checked_already(est, x)
        assert validate_inputs(est, x, reset=False) is x
        np.testing.assert_array_equal(
            validate_inputs(est, x, reset=False), validate_data(est, x, reset=False)
        )
        others = [
            x.astype(np.float64),  # converted
            np.asfortranarray(np.repeat(x, 3, axis=0)),  # made contiguous
            _with(x, 2, np.nan),  # refused
            x[:, :-1],  # refused: other width
            x[:0],  # refused: no rows
        ]
        for other in others:
            assert not _checked_already(est, other)
    assert not _checked_already(sur, torch.as_tensor(x))  # tensors take the general path
    with pytest.raises(ValueError, match="NaN"):
        sur.certify(_with(x, 2, np.nan))
    with pytest.raises(ValueError, match="features"):
        sur.certify(x[:, :-1])
    # fitted on a DataFrame: an array without names still gets scikit-learn's warning
    named = SmoothedClassifier(MLP, module__hidden=4, max_epochs=1, n0=10, n=20, random_state=0)
    named.fit(pd.DataFrame(X[:100], columns=[f"p{i}" for i in range(X.shape[1])]), y[:100])
    assert not _checked_already(named, x)
    with pytest.warns(UserWarning, match="feature names"):
        named.predict(x)
