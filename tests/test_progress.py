"""Progress and announced costs: each estimator's verbose drives its own labelled Monte Carlo bars,
the epoch log is one level up, and long phases are estimated before they start."""

import re
import warnings

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

import rrise_sklearn.sampling as sampling
from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.nets import MLP

SMALL = dict(module__hidden=16, max_epochs=2, n0=20, n=100, random_state=0)


def test_bars_are_labelled_by_phase_and_the_epoch_log_needs_verbose_2(digits, capsys):
    X, y = digits
    clf = SmoothedClassifier(MLP, verbose=1, **SMALL).fit(X[:200], y[:200])
    out = capsys.readouterr()
    assert "train_loss" not in out.out  # no epoch table at verbose=1
    clf.certify(X[:20])
    err = capsys.readouterr().err
    assert "selection n0=20" in err and "estimation n=100" in err
    clf.predict(X[:20])
    assert "predict n=1000" in capsys.readouterr().err
    SmoothedClassifier(MLP, verbose=2, **SMALL).fit(X[:200], y[:200])
    assert "train_loss" in capsys.readouterr().out
    SmoothedClassifier(MLP, verbose=0, **SMALL).fit(X[:200], y[:200]).certify(X[:20])
    out = capsys.readouterr()
    assert out.out == "" and "estimation" not in out.err


def test_the_surrogates_verbose_drives_its_own_phases(digits, capsys):
    X, y = digits
    clf = SmoothedClassifier(MLP, verbose=0, **SMALL).fit(X[:200], y[:200])
    RRISESurrogate(FrozenEstimator(clf), n_members=1, n_targets=50, n_calibration=200,
                   n_refine=None, max_epochs=2, verbose=1, random_state=0,
                   ).fit(X[200:320])  # fmt: skip
    err = capsys.readouterr().err
    assert "targets n=50" in err and "calibration n=200" in err


def test_predict_uses_its_own_budget(digits):
    X, y = digits
    clf = SmoothedClassifier(MLP, **{**SMALL, "n": 5000}).fit(X[:200], y[:200])
    proba = clf.predict_proba(X[:5])
    assert np.allclose(proba * 1000, np.round(proba * 1000))  # 1,000 samples, not n=5,000
    full = clf.set_params(n_predict=None).predict_proba(X[:5])
    assert np.allclose(full * 5000, np.round(full * 5000))
    with pytest.raises(ValueError, match="n_predict"):
        clf.set_params(n_predict=0).predict(X[:5])


def test_long_phases_are_announced_before_they_start(digits, monkeypatch, capsys):
    X, y = digits
    clf = SmoothedClassifier(MLP, verbose=1, **SMALL).fit(X[:200], y[:200])
    probes = []

    def rate(value):
        def probe(forward, X, device):
            probes.append(len(X))
            return value

        return probe

    # 50 inputs x n=10,000 = 500,000 passes at 5,000/s: 100 s, printed, no warning
    monkeypatch.setattr(sampling, "_probe_rate", rate(5000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.certify(X[:50], n=10_000)
    out = capsys.readouterr().out
    assert re.search(r"estimation n=10000 \(50 inputs\): 500,000 noisy forward passes, about "
                     r"100 s", out), out  # fmt: skip
    # at 100/s: 5,000 s, and a warning naming what shrinks it
    monkeypatch.setattr(sampling, "_probe_rate", rate(100.0))
    with pytest.warns(UserWarning, match=r"about 83 min.*To shrink it: lower n"):
        clf.set_params(verbose=0).certify(X[:50], n=10_000)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing
    # small jobs are not timed at all
    probes.clear()
    clf.certify(X[:5])
    assert probes == []


def test_the_probe_measures_a_real_rate(digits):
    X, y = digits
    clf = SmoothedClassifier(MLP, **SMALL).fit(X[:200], y[:200])
    rate = sampling._probe_rate(clf.module_, X[:3], "cpu")
    assert 1e3 < rate < 1e9  # an MLP on 64 inputs: thousands to millions per second


def test_a_surrogate_that_splits_x_says_so(known_linear):
    smoothed = known_linear.smoothed(sigma=0.5, n=200, random_state=0)  # pretrained: no inputs
    X = known_linear.points_at_distance(np.linspace(-1, 1, 80), seed=0)
    params = dict(n_members=1, n_targets=None, n_calibration=None, n_refine=None,
                  alpha_conf=0.1, max_epochs=2, random_state=0)  # fmt: skip
    with pytest.warns(UserWarning, match=r"X is split: 60 inputs train .* and 20 calibrate"):
        RRISESurrogate(FrozenEstimator(smoothed), **params).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RRISESurrogate(FrozenEstimator(smoothed), **params).fit(X, train_inputs="split")


def test_a_long_surrogate_phase_names_the_settings_that_shrink_it(digits, monkeypatch):
    X, y = digits
    clf = SmoothedClassifier(MLP, **SMALL).fit(X[:200], y[:200])
    # 200 training inputs x 3 x 500 = 300,000 target passes and 120 x 2,000 = 240,000
    # calibration passes at 50/s: each phase over an hour
    monkeypatch.setattr(sampling, "_probe_rate", lambda forward, X, device: 50.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RRISESurrogate(FrozenEstimator(clf), n_members=1, n_targets=500, n_augment=2,
                       n_calibration=2_000, n_refine=None, max_epochs=1, random_state=0,
                       ).fit(X[200:320])  # fmt: skip
    texts = [str(w.message) for w in caught if "To shrink it" in str(w.message)]
    targets = [t for t in texts if "targets n=500" in t]
    calibration = [t for t in texts if "calibration n=2000" in t]
    assert targets and "lower n_targets and n_augment" in targets[0], texts
    assert "Large training sets" in targets[0]
    assert calibration and "lower n_calibration" in calibration[0], texts
