"""The rrise command: demo smoke run, certify output format, one-line errors."""

import json
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rrise_sklearn import SmoothedClassifier, save
from rrise_sklearn.cli import main
from rrise_sklearn.nets import MLP


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits):
    X, y = digits
    d = tmp_path_factory.mktemp("cli")
    pipe = make_pipeline(
        StandardScaler(),
        SmoothedClassifier(MLP, module__hidden=32, max_epochs=5, n0=20, n=200, random_state=0),
    ).fit(X[:300], y[:300])
    save(pipe, d / "model.zip")
    joblib.dump(pipe, d / "model.joblib")
    np.save(d / "X.npy", X[300:340])
    np.save(d / "y.npy", y[300:340])
    return d, pipe, X[300:340], y[300:340]


def test_certify_writes_reference_tsv(saved):
    d, pipe, X, y = saved
    out = d / "res.tsv"
    rc = main(
        [
            "certify",
            "--model",
            str(d / "model.zip"),
            "--data",
            str(d / "X.npy"),
            "--labels",
            str(d / "y.npy"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    # the reference tools' reader takes the file as is: one header line, then one row per input
    table = pd.read_csv(out, delimiter="\t")
    assert list(table.columns) == ["idx", "label", "predict", "radius", "correct", "time"]
    assert len(table) == 40 and table["correct"].dtype.kind == "i"
    # sigma and the radius' units sit beside it (those of the scaler's output here)
    meta = json.loads((d / "res.tsv.json").read_text())
    assert meta["sigma"] == 0.25 and meta["n_inputs"] == 40
    assert meta["radius_units"].startswith("L2 in the input space of SmoothedClassifier")
    assert "(the output of StandardScaler)" in meta["radius_units"]
    assert not (d / "res.tsv.partial").exists()
    expected = pipe[-1].certify(pipe[0].transform(X))
    np.testing.assert_allclose(table["radius"], expected.radius, rtol=1e-5)
    assert table["predict"].tolist() == expected.prediction.tolist()
    assert (
        table["correct"].tolist()
        == ((expected.prediction == y) & (expected.radius > 0)).astype(int).tolist()
    )


def _args(d, out, *extra):
    return ["certify", "--model", str(d / "model.zip"), "--data", str(d / "X.npy"),
            "--labels", str(d / "y.npy"), "--out", str(out), *extra]  # fmt: skip


def test_certify_in_chunks_keeps_the_lines_of_an_interrupted_run(saved, monkeypatch, capsys):
    d, pipe, X, y = saved
    out = d / "chunks.tsv"
    assert main(_args(d, out, "--chunk-size", "16")) == 0
    table = pd.read_csv(out, delimiter="\t")
    assert table["idx"].tolist() == list(range(40))
    # the first chunk is one certify call with the model's own seed; later ones draw fresh noise
    first = pipe[-1].certify(pipe[0].transform(X[:16]))
    np.testing.assert_allclose(table["radius"][:16], first.radius, rtol=1e-5)
    import rrise_sklearn.pipeline as pipeline_module

    real, calls = pipeline_module.certify, []

    def interrupted(model, X, **kw):
        calls.append(len(X))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, X, **kw)

    monkeypatch.setattr(pipeline_module, "certify", interrupted)
    out = d / "stopped.tsv"
    assert main(_args(d, out, "--chunk-size", "16")) == 130
    assert "interrupted after 16 of 40 inputs" in capsys.readouterr().err
    assert not out.exists()  # only a finished run gets the final name
    kept = pd.read_csv(d / "stopped.tsv.partial", delimiter="\t")
    assert kept["idx"].tolist() == list(range(16))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "0"], "--n: expected a whole number >= 1, got 0"),
        (["--n0", "-3"], "--n0: expected a whole number >= 1"),
        (["--alpha", "1.5"], "--alpha: expected a number in \\(0, 1\\)"),
        (["--chunk-size", "0"], "--chunk-size: expected a whole number >= 1"),
    ],
)
def test_invalid_sample_sizes_and_levels_are_refused(saved, extra, message, capsys):
    d, *_ = saved
    with pytest.raises(SystemExit) as exc:
        main(_args(d, d / "never.tsv", *extra))
    assert exc.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (d / "never.tsv").exists()


def test_the_output_path_is_checked_before_the_model_is_loaded(saved, monkeypatch, capsys):
    d, *_ = saved
    import rrise_sklearn.cli as cli

    def never(args):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(cli, "_load_model", never)
    assert main(_args(d, d / "no-such-folder" / "r.tsv")) == 2
    err = capsys.readouterr().err
    assert "no-such-folder does not exist" in err, err
    assert main(_args(d, d)) == 2
    assert "is a directory" in capsys.readouterr().err


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from rrise_sklearn.cli import main\n"
        "for argv in (['--help'], ['--version'], ['certify', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False False"
    assert "rrise-sklearn 0.1" in proc.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: ["--model", str(d / "nope.zip")], "not found"),
        (lambda d: ["--model", str(d / "model.joblib")], "not an rrise model file.*--allow-pickle"),
        (lambda d: ["--model", str(d / "truncated.zip")], "cannot load model"),
        (lambda d: ["--data", str(d / "nope.npy")], "not found"),
        (lambda d: ["--data", str(d / "strings.npy")], "not numeric"),
        (lambda d: ["--data", str(d / "flat.npy")], r"shape \(inputs, features\)"),
        (lambda d: ["--data", str(d / "narrow.npy")], r"shape \(5,\); the model expects \(64,\)"),
        (lambda d: ["--labels", str(d / "short.npy")], "labels must be 1-D"),
        (lambda d: ["--model", str(d / "X.npy")], "not an rrise model file"),
        (lambda d: ["--data", str(d / "garbage.npy")], "cannot read|not a numeric"),
    ],
)
def test_certify_errors_are_one_line_and_leave_no_file(saved, make, message, capsys):
    d, _, X, _ = saved
    np.save(d / "strings.npy", np.array([["a", "b"]]))
    np.save(d / "flat.npy", X[:, 0])
    np.save(d / "narrow.npy", X[:, :5])
    np.save(d / "short.npy", np.arange(3))
    (d / "garbage.npy").write_bytes(b"not a numpy file at all")
    blob = (d / "model.zip").read_bytes()
    (d / "truncated.zip").write_bytes(blob[: len(blob) // 2])
    args = {
        "--model": str(d / "model.zip"),
        "--data": str(d / "X.npy"),
        "--labels": str(d / "y.npy"),
        "--out": str(d / "bad.tsv"),
    }
    extra = make(d)
    args[extra[0]] = extra[1]
    rc = main(["certify", *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert not (d / "bad.tsv").exists()
    assert not (d / "bad.tsv.partial").exists() and not (d / "bad.tsv.json").exists()
    assert not list(d.glob(".rrise-*"))


def test_pickle_files_need_allow_pickle_and_a_marker_payload_never_runs(saved, tmp_path, capsys):
    """A joblib file is refused unless --allow-pickle; with it, the trusted file loads."""
    d, pipe, X, y = saved
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    joblib.dump(Payload(), tmp_path / "evil.joblib")
    rc = main(
        [
            "certify",
            "--model",
            str(tmp_path / "evil.joblib"),
            "--data",
            str(d / "X.npy"),
            "--out",
            str(tmp_path / "o.tsv"),
        ]
    )
    assert rc == 2 and not marker.exists()
    assert "--allow-pickle" in capsys.readouterr().err
    out = tmp_path / "trusted.tsv"
    rc = main(
        [
            "certify",
            "--model",
            str(d / "model.joblib"),
            "--allow-pickle",
            "--data",
            str(d / "X.npy"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and len(out.read_text().splitlines()) == 41
    assert "UNSAFE" in _help("certify")


def _help(*command):
    return subprocess.run(
        [sys.executable, "-m", "rrise_sklearn", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_help_and_module_entry_point():
    out = _help()
    assert "demo" in out and "certify" in out
    out = _help("certify")
    assert "idx, label, predict, radius, correct, time" in " ".join(out.split())


@pytest.mark.slow
def test_demo_quick_runs_and_writes_plot(tmp_path):
    png = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "rrise_sklearn", "demo", "--quick", "--plot", str(png)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "certified acc. @ r=0 " in proc.stdout
    assert "break-even" in proc.stdout
    # the report states sigma, the radius' units and the base network's clean accuracy
    assert "sigma=0.25; radii: L2 distance in those pixel units" in proc.stdout
    assert "base network, clean inputs (no smoothing): accuracy" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_certify_reads_a_signed_model_with_the_key_from_the_environment(saved, monkeypatch, capsys):
    d, pipe, _, _ = saved
    save(pipe, d / "signed.zip", key="k3y")
    args = ["certify", "--model", str(d / "signed.zip"), "--data", str(d / "X.npy"),
            "--out", str(d / "signed.tsv")]  # fmt: skip
    assert main(args) == 2  # no key: refused, one line
    assert "signed with a key" in capsys.readouterr().err
    monkeypatch.setenv("RRISE_TEST_KEY", "k3y")
    assert main([*args, "--key-env", "RRISE_TEST_KEY"]) == 0
    monkeypatch.setenv("RRISE_TEST_KEY", "wrong")
    assert main([*args, "--key-env", "RRISE_TEST_KEY"]) == 2
    assert "the key is wrong" in capsys.readouterr().err
    assert main([*args, "--key-env", "RRISE_UNSET_VARIABLE"]) == 2
    assert "is not set" in capsys.readouterr().err


def test_radius_space_input_writes_radii_in_the_data_units(saved):
    d, *_ = saved
    assert main(_args(d, d / "model_units.tsv")) == 0
    with pytest.warns(UserWarning, match="stretches the units"):
        assert main(_args(d, d / "raw_units.tsv", "--radius-space", "input")) == 0
    model = pd.read_csv(d / "model_units.tsv", delimiter="\t")
    raw = pd.read_csv(d / "raw_units.tsv", delimiter="\t")
    meta = json.loads((d / "raw_units.tsv.json").read_text())
    assert meta["radius_space"] == "input" and meta["input_scale"] > 1
    assert meta["radius_units"] == "L2 in the units of the data file"
    np.testing.assert_allclose(raw["radius"], model["radius"] / meta["input_scale"], rtol=1e-5)
    assert (raw["correct"] == model["correct"]).all()


def test_radius_space_input_is_refused_before_certifying_when_there_is_no_conversion(
    saved, tmp_path, monkeypatch, capsys
):
    from sklearn.preprocessing import Normalizer

    import rrise_sklearn.pipeline as pipeline_module

    d, _, X, y = saved
    clf = SmoothedClassifier(MLP, module__hidden=8, max_epochs=1, n0=20, n=100, random_state=0)
    pipe = make_pipeline(Normalizer(), clf)
    save(pipe.fit(X, y), tmp_path / "norm.zip")

    def never(*a, **k):
        raise AssertionError("certified before refusing --radius-space input")

    monkeypatch.setattr(pipeline_module, "certify", never)
    out = tmp_path / "r.tsv"
    args = ["certify", "--model", str(tmp_path / "norm.zip"), "--data", str(d / "X.npy"),
            "--out", str(out), "--radius-space", "input"]  # fmt: skip
    assert main(args) == 2
    assert "no exact conversion" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r.tsv.partial").exists()
