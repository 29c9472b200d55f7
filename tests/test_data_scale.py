"""The data-scale guard: data on another scale than sigma, or than the training data, is named."""

import warnings

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

from rrise_sklearn import RRISESurrogate, SmoothedClassifier, load, save
from rrise_sklearn.nets import MLP

SMALL = dict(module__hidden=16, max_epochs=2, n0=20, n=100, random_state=0)


@pytest.fixture(scope="module")
def unit_scale(digits):
    X, y = digits  # pixels in [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # well scaled: not a word at fit
        clf = SmoothedClassifier(MLP, sigma=0.25, **SMALL).fit(X[:300], y[:300])
    return clf, X, y


def test_fit_names_negligible_noise_and_whole_number_pixels(digits):
    X, y = digits
    raw = np.round(X * 255).astype(np.uint8)  # pixels 0-255, sigma chosen for [0, 1]
    with pytest.warns(UserWarning, match=r"sigma=0.25 is negligible.*whole numbers from 0 to 255"
                      r".*X / 255 to \[0, 1\]"):  # fmt: skip
        clf = SmoothedClassifier(MLP, sigma=0.25, **SMALL).fit(raw[:300], y[:300])
    assert clf.input_stats_["max"] == 255 and clf.input_stats_["whole_numbers"]
    # the same data with a sigma on its scale: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SmoothedClassifier(MLP, sigma=64.0, **SMALL).fit(raw[:300], y[:300])


def test_certify_and_predict_name_inputs_on_another_scale(unit_scale):
    clf, X, _ = unit_scale
    raw = np.round(X[300:310] * 255).astype(np.float32)
    for call in (clf.certify, clf.predict, clf.predict_proba):
        with pytest.warns(UserWarning, match=r"values from 0 to 255, far outside .*\[0, 1\]"):
            call(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.certify(X[300:310])
        clf.certify(X[300:310] * 3 - 1)  # outside, but within the range + 8 sigma + its width


def test_the_guard_survives_saving_and_reaches_the_surrogate(unit_scale, tmp_path):
    clf, X, y = unit_scale
    save(clf, tmp_path / "m.zip")
    loaded = load(tmp_path / "m.zip")
    assert loaded.input_stats_ == clf.input_stats_
    with pytest.warns(UserWarning, match="far outside"):
        loaded.certify(X[300:305] * 255)
    sur = RRISESurrogate(FrozenEstimator(clf), n_members=1, n_targets=None,
                         n_calibration=None, n_refine=None, max_epochs=2,
                         random_state=0).fit(X[300:420])  # fmt: skip
    with pytest.warns(UserWarning, match="RRISESurrogate: X holds values from 0 to 255"):
        sur.certify(X[420:425] * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sur.certify(X[420:425])


def test_partial_fit_widens_the_recorded_range(digits):
    X, y = digits
    clf = SmoothedClassifier(MLP, sigma=0.25, **SMALL)
    clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
    clf.partial_fit(X[100:200] * 2, y[100:200])
    assert clf.input_stats_["min"] == 0 and clf.input_stats_["max"] == 2
