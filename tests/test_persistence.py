"""Model files: round trips; damaged, newer or tampered files are refused without running code."""

import copy
import io
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import rrise_sklearn.persistence as persistence
from rrise_sklearn import RRISESurrogate, SmoothedClassifier, load, save
from rrise_sklearn.nets import MLP, SmallCNN
from rrise_sklearn.persistence import ModelFileError


class _Marker:
    """Unpickling it creates a file: proof that code from a model file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class CustomNet(torch.nn.Module):
    """A network outside rrise_sklearn.nets (as users' own networks are)."""

    def __init__(self, n_features=64, n_classes=10, hidden=16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(n_features, hidden), torch.nn.ReLU()
        )
        self.out = torch.nn.Linear(hidden, n_classes)

    def forward(self, X):
        return self.out(self.body(X))


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    clf = SmoothedClassifier(
        MLP, module__hidden=32, max_epochs=3, n0=20, n=300, random_state=0
    ).fit(X[:500], y[:500])
    sur = RRISESurrogate(
        clf,
        n_refine=None,
        n_targets=100,
        n_augment=1,
        n_calibration=300,
        alpha_conf=0.1,
        mondrian="class",
        n_members=2,
        max_epochs=2,
        random_state=1,
    ).fit(X[500:1100])
    return X, y, clf, sur


def _same_certificates(a, b, X):
    ra, rb = a.certify(X), b.certify(X)
    return np.array_equal(ra.prediction, rb.prediction) and np.array_equal(ra.radius, rb.radius)


@pytest.mark.parametrize("name", ["model", "model.zip"])
def test_smoothed_round_trip_gives_identical_certificates(fitted, tmp_path, name):
    X, _, clf, _ = fitted
    path = save(clf, tmp_path / name)
    back = load(path)
    assert _same_certificates(clf, back, X[1200:1260])
    assert back.get_params()["sigma"] == clf.sigma and back.module__hidden == 32
    # n_predict travels as set (files written before it existed load with None: n samples)
    assert back.n_predict == clf.n_predict == 1_000
    none = copy.deepcopy(clf).set_params(n_predict=None)
    assert load(save(none, tmp_path / f"none-{name}")).n_predict is None
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    assert back.input_shape_ == clf.input_shape_
    # the fresh-stream counter travels: a loaded model never replays an earlier draw's noise
    assert back._n_count_draws == clf._n_count_draws


def test_the_deprecated_methods_warn_and_check_the_type(fitted, tmp_path):
    X, _, clf, sur = fitted
    with pytest.warns(FutureWarning, match=r"use rrise_sklearn.save\(estimator, path\)"):
        path = clf.save(tmp_path / "clf.zip")
    with pytest.warns(FutureWarning, match=r"use rrise_sklearn.load\(path\)"):
        back = SmoothedClassifier.load(path)
    assert _same_certificates(clf, back, X[1200:1230])
    with pytest.warns(FutureWarning), pytest.raises(ModelFileError, match="not a RRISESurrogate"):
        RRISESurrogate.load(path)


@pytest.mark.parametrize("mondrian", ["cap", "cap_margin"])
def test_surrogate_round_trip_keeps_the_cap_split(fitted, tmp_path, mondrian):
    import copy

    X, _, _, sur = fitted
    sur = copy.deepcopy(sur).set_params(mondrian=mondrian, n_calibration=200, alpha_conf=0.1)
    sur.conformalize(X[1100:1200], random_state=3)
    cal = sur.calibration_
    assert cal.grouping == mondrian and sur.threshold_.shape == (2,)
    back = load(save(sur, tmp_path / "cap.zip"))
    assert back.calibration_.grouping == mondrian
    np.testing.assert_array_equal(back.threshold_, sur.threshold_)
    np.testing.assert_array_equal(back.calibration_.own, cal.own)
    np.testing.assert_array_equal(back.calibration_.group_sizes, cal.group_sizes)
    assert back.calibration_.pooled_threshold == cal.pooled_threshold
    if mondrian == "cap_margin":
        assert (back.calibration_.cap_margin, back.calibration_.below_factor) == (0.1, 3.0)
        np.testing.assert_array_equal(back.calibration_.threshold_ranks, cal.threshold_ranks)
        assert back.cap_margin == sur.cap_margin
    assert _same_certificates(sur, back, X[1200:1300])
    assert sur.verify(X[1300:1350]) == back.verify(X[1300:1350])
    # what the file says is checked: an unknown grouping is refused
    path = save(sur, tmp_path / "bad.zip")
    _rewrite(path, edit_manifest=lambda m: m["final"]["fitted"]["calibration"].update(grouping="x"))
    with pytest.raises(ModelFileError, match="invalid calibration.*grouping must be one of"):
        load(path)
    if mondrian == "cap_margin":  # and a margin the guarantee does not cover
        for field, value in (("cap_margin", -1.0), ("below_factor", 0.5)):
            fields = {"grouping": "cap_margin", "cap_margin": 0.1, "below_factor": 3.0}
            fields[field] = value
            _rewrite(path, edit_manifest=lambda m, e=fields: m["final"]["fitted"][
                "calibration"].update(e))  # fmt: skip
            with pytest.raises(ModelFileError, match=f"invalid calibration.*{field} must be"):
                load(path)


def test_surrogate_round_trip_keeps_ensemble_thresholds_and_verify(fitted, tmp_path):
    X, _, _, sur = fitted
    back = load(save(sur, tmp_path / "sur.zip"))
    assert _same_certificates(sur, back, X[1200:1300])
    np.testing.assert_array_equal(back.threshold_, sur.threshold_)  # Mondrian: one per class
    np.testing.assert_array_equal(back.calibration_scores_, sur.calibration_scores_)
    assert len(back.module_.members) == 2
    assert not hasattr(back, "train_inputs_")  # training data only on request
    assert not hasattr(back.smoothed_, "training_inputs_")
    a, b = sur.verify(X[1300:1400]), back.verify(X[1300:1400])
    assert a == b  # same seed derivation after the round trip
    full = load(save(sur, tmp_path / "full", include_training_data=True))
    np.testing.assert_array_equal(full.train_counts_, sur.train_counts_)
    # with them, a recalibration from the loaded file trains on the same inputs as before
    np.testing.assert_array_equal(full.smoothed_.training_inputs_, sur.smoothed_.training_inputs_)


def test_image_pipeline_and_string_labels_round_trip(digits, tmp_path):
    X, y = digits
    Ximg = X.reshape(-1, 1, 8, 8)
    names = np.array(["zero", "one", "two", "three", "four", "5", "6", "7", "8", "9"])[y]
    pipe = make_pipeline(
        MinMaxScaler(),
        SmoothedClassifier(
            SmallCNN, abstain_label="none", max_epochs=1, n0=20, n=200, random_state=0
        ),
    ).fit(X[:400], names[:400])
    back = load(save(pipe, tmp_path / "pipe"))
    assert type(back[0]) is MinMaxScaler
    np.testing.assert_array_equal(back.predict(X[500:540]), pipe.predict(X[500:540]))
    cnn = SmoothedClassifier(SmallCNN, max_epochs=1, n0=20, n=200, random_state=0)
    cnn.fit(Ximg[:400], y[:400])
    back = load(save(cnn, tmp_path / "cnn.zip"))
    assert back.input_shape_ == (1, 8, 8)
    assert _same_certificates(cnn, back, Ximg[500:530])


def test_pretrained_instance_needs_its_module(known_linear, tmp_path):
    clf = known_linear.smoothed(sigma=0.5, n=500, random_state=0)
    path = save(clf, tmp_path / "lin.zip")
    with pytest.raises(ModelFileError, match="constructor arguments are unknown"):
        load(path)
    back = load(path, module=known_linear.module())
    X = known_linear.points_at_distance(np.linspace(-1, 1, 20))
    assert _same_certificates(clf, back, X)


def test_custom_network_class_is_only_taken_from_the_caller(digits, tmp_path):
    X, y = digits
    clf = SmoothedClassifier(CustomNet, max_epochs=1, n=200, random_state=0).fit(X[:300], y[:300])
    path = save(clf, tmp_path / "custom.zip")
    with pytest.raises(ModelFileError, match=r"not in rrise_sklearn.nets.*module=CustomNet"):
        load(path)
    back = load(path, module=CustomNet)
    assert _same_certificates(clf, back, X[400:420])


def _rewrite(path, edit_manifest=None, replace=None, extra=None, fix_checksums=True, key=None):
    """Rewrite a zip model: edit its manifest, replace members, add members; with
    fix_checksums, recompute the checksums and the digest as a determined attacker would
    (the checks behind the digest must still refuse)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    for name, data in (replace or {}).items():
        members[name] = data
    if fix_checksums:  # an attacker can recompute checksums: the format must still refuse
        import hashlib

        for name in manifest["files"]:
            manifest["files"][name] = hashlib.sha256(members[name]).hexdigest()
    if edit_manifest:
        edit_manifest(manifest)
    if fix_checksums and "digest" in manifest:
        from rrise_sklearn.persistence import _digest

        manifest["digest"] = _digest(manifest, key)
    members["manifest.json"] = json.dumps(manifest).encode()
    members.update(extra or {})
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def _npz_with_object_array(marker):
    buf = io.BytesIO()
    np.save(buf, np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("classes.npy", buf.getvalue())
    return out.getvalue()


def _weights_name(manifest):
    return manifest["final"]["weights"]


TAMPERING = [
    ("newer format", dict(edit_manifest=lambda m: m.update(format_version=99)), "newer"),
    ("not our format", dict(edit_manifest=lambda m: m.update(format="x")), "not an rrise"),
    (
        "checksum mismatch",
        dict(replace={"arrays.npz": b"PK\x03\x04 changed"}, fix_checksums=False),
        "checksum mismatch",
    ),
    ("pickle in arrays", "npz_pickle", "not a plain numeric archive"),
    ("pickle in weights", "weights_pickle", "not a safetensors file"),
    ("pickle as manifest", "manifest_pickle", "not valid JSON"),
    ("unexpected member", dict(extra={"payload.pkl": b"\x80\x04."}), "unexpected members"),
    (
        "path in member name",
        dict(edit_manifest=lambda m: m["files"].update({"../x.npz": "0"})),
        "invalid member name",
    ),
    (
        "criterion outside torch.nn",
        dict(edit_manifest=lambda m: m["final"]["params"].update(criterion="os.system")),
        "criterion 'os.system' is not a loss class of torch.nn",
    ),
    (
        "a module named as the criterion (allocates what it likes)",
        dict(
            edit_manifest=lambda m: m["final"]["params"].update(
                {
                    "criterion": "torch.nn.Linear",
                    "criterion__in_features": 16384,
                    "criterion__out_features": 16384,
                }
            )
        ),  # fmt: skip
        "criterion 'torch.nn.Linear' is not a loss class of torch.nn",
    ),
    (
        "network from anywhere",
        dict(edit_manifest=lambda m: m["final"]["network"].update({"class": "os.system"})),
        "not in rrise_sklearn.nets",
    ),
    (
        "unknown estimator",
        dict(edit_manifest=lambda m: m.update(estimator="Evil")),
        "unknown estimator",
    ),
    (
        "unknown parameter (e.g. a removed option)",
        dict(edit_manifest=lambda m: m["final"]["params"].update(conformity_score="radius")),
        "invalid SmoothedClassifier parameters.*conformity_score",
    ),
]


@pytest.mark.parametrize(("case", "how", "message"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampered_files_are_refused_and_run_nothing(fitted, tmp_path, case, how, message):
    _, _, clf, _ = fitted
    path = str(save(clf, tmp_path / "m.zip"))
    marker = tmp_path / "code-ran"
    if how == "npz_pickle":
        how = dict(replace={"arrays.npz": _npz_with_object_array(marker)})
    elif how == "weights_pickle":
        with zipfile.ZipFile(path) as zf:
            wname = _weights_name(json.loads(zf.read("manifest.json")))
        how = dict(replace={wname: pickle.dumps(_Marker(marker))})
    elif how == "manifest_pickle":
        _rewrite(path)
        with zipfile.ZipFile(path) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        members["manifest.json"] = pickle.dumps(_Marker(marker))
        with zipfile.ZipFile(path, "w") as zf:
            for n, d in members.items():
                zf.writestr(n, d)
        how = None
    if how is not None:
        _rewrite(path, **how)
    with pytest.raises(ModelFileError, match=message):
        load(path)
    assert not marker.exists()


def test_damaged_files_are_refused(fitted, tmp_path):
    _, _, clf, _ = fitted
    blob = open(save(clf, tmp_path / "m.zip"), "rb").read()
    for cut in (10, len(blob) // 2, len(blob) - 5):
        (tmp_path / "cut.zip").write_bytes(blob[:cut])
        with pytest.raises(ModelFileError):
            load(tmp_path / "cut.zip")
    d = save(clf, tmp_path / "dir")
    weights = next(n for n in os.listdir(d) if n.endswith(".safetensors"))
    full = open(os.path.join(d, weights), "rb").read()
    open(os.path.join(d, weights), "wb").write(full[:-7])  # truncated member
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load(d)
    os.remove(os.path.join(d, weights))
    with pytest.raises(ModelFileError, match="missing"):
        load(d)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent")


def test_a_named_module_is_never_imported(fitted, tmp_path, monkeypatch):
    """A dotted path in the file is not imported on its own say-so, even if importable."""
    _, _, clf, _ = fitted
    pkg = tmp_path / "site"
    pkg.mkdir()
    marker = tmp_path / "imported"
    (pkg / "evil_nets.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport torch\nclass Net(torch.nn.Module): pass\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    path = str(save(clf, tmp_path / "m.zip"))
    _rewrite(path, edit_manifest=lambda m: m["final"]["network"].update({"class": "evil_nets.Net"}))
    with pytest.raises(ModelFileError, match="not in rrise_sklearn.nets"):
        load(path)
    assert not marker.exists() and "evil_nets" not in sys.modules
    _rewrite(
        path,
        edit_manifest=lambda m: m["final"]["network"].update(
            {"class": "rrise_sklearn.nets.os.system"}
        ),
    )
    with pytest.raises(ModelFileError):
        load(path)


def test_writes_are_atomic_and_never_clobber_other_folders(fitted, tmp_path, monkeypatch):
    X, y, clf, _ = fitted
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="holds no rrise model"):
        save(clf, other)
    assert (other / "cat.jpg").exists()
    d = save(clf, tmp_path / "model")
    clf2 = SmoothedClassifier(MLP, max_epochs=1, n=100, random_state=3).fit(X[:200], y[:200])
    save(clf2, d)  # replacing a model directory is fine
    assert load(d).n == 100
    # a failure half-way leaves the previous file intact and no temporary file behind
    z = save(clf, tmp_path / "m.zip")
    before = open(z, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(persistence.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save(clf2, z)
    with pytest.raises(OSError, match="disk full"):
        save(clf2, d)
    assert open(z, "rb").read() == before and load(d).n == 100
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".rrise")]


def test_what_cannot_be_saved_safely_is_an_error_or_a_warning(fitted, digits, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import FunctionTransformer
    from skorch.callbacks import EpochTimer

    X, y, clf, _ = fitted
    with pytest.raises(TypeError, match="fitted SmoothedClassifier"):
        save(SmoothedClassifier(MLP), tmp_path / "a")
    with pytest.raises(TypeError, match="SmoothedClassifier, an RRISESurrogate"):
        save(StandardScaler().fit(X), tmp_path / "a")
    for step in (FunctionTransformer(np.log1p), PCA(5)):
        pipe = make_pipeline(step, clf)
        with pytest.raises(TypeError, match="may hold only"):
            save(pipe, tmp_path / "a")
    clf3 = SmoothedClassifier(
        MLP, callbacks=[EpochTimer()], max_epochs=1, n=100, random_state=np.random.default_rng(0)
    ).fit(X[:200], y[:200])
    with pytest.warns(UserWarning, match=r"not saved.*callbacks.*random_state"):
        back = load(save(clf3, tmp_path / "w.zip"))
    assert back.callbacks is None and back.random_state is None
    assert not os.path.exists(tmp_path / "a")


def test_device_override_and_missing_cuda(fitted, tmp_path):
    _, _, clf, _ = fitted
    path = str(save(clf, tmp_path / "m.zip"))
    _rewrite(path, edit_manifest=lambda m: m["final"]["params"].update(device="cuda"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelFileError, match="device='cpu'"):
            load(path)
    assert load(path, device="cpu").device == "cpu"
