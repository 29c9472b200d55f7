"""Resumable, scaled-out Monte Carlo precomputation: identical counts everywhere, no lost work."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import small_mlp
from joblib import parallel_config

import rrise_sklearn.sampling as sampling
from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.nets import MLP
from rrise_sklearn.sampling import monte_carlo_counts, precompute_counts

_mlp = small_mlp


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(41, 8)).astype(np.float32)


KW = dict(sigma=0.5, n=600, n_classes=4, random_state=11)


@pytest.fixture
def count_calls(monkeypatch):
    """How many chunks were computed (not read from the cache), in this process."""
    calls = []
    real = sampling._count_chunk

    def spy(forward, X, first_group, *a, **k):
        calls.append(first_group)
        return real(forward, X, first_group, *a, **k)

    monkeypatch.setattr(sampling, "_count_chunk", spy)
    return calls


@pytest.mark.parametrize("noise_sharing", [1, 3])
def test_same_counts_as_the_engine_for_any_chunking_and_workers(X, tmp_path, noise_sharing):
    f = _mlp()
    ref = monte_carlo_counts(f, X, noise_sharing=noise_sharing, **KW)
    for chunk in (1, 7, 64):
        got = precompute_counts(f, X, noise_sharing=noise_sharing, chunk_size=chunk, **KW)
        np.testing.assert_array_equal(got, ref)
    cached = precompute_counts(
        f, X, noise_sharing=noise_sharing, chunk_size=5, cache_dir=tmp_path / "c", **KW
    )
    np.testing.assert_array_equal(cached, ref)
    assert cached.noise_key == ref.noise_key
    for backend in ("loky", "threading"):
        with parallel_config(backend=backend, n_jobs=2):
            got = precompute_counts(f, X, noise_sharing=noise_sharing, chunk_size=6, **KW)
        np.testing.assert_array_equal(got, ref)
    got = precompute_counts(f, X, noise_sharing=noise_sharing, chunk_size=6, n_jobs=2, **KW)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.slow
def test_a_real_two_worker_dask_cluster_gives_identical_counts(X, tmp_path):
    distributed = pytest.importorskip("distributed")
    f = _mlp()
    ref = monte_carlo_counts(f, X, noise_sharing=1, **KW)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster):  # fmt: skip
        with parallel_config(backend="dask"):
            got = precompute_counts(f, X, chunk_size=8, cache_dir=tmp_path / "c", **KW)
            again = precompute_counts(f, X, chunk_size=8, cache_dir=tmp_path / "c", **KW)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(again, ref)


def test_missing_truncated_and_corrupted_chunks_are_recomputed(X, tmp_path, count_calls):
    f = _mlp()
    ref = precompute_counts(f, X, chunk_size=5, cache_dir=tmp_path, **KW)
    files = sorted(p for p in os.listdir(tmp_path) if p.startswith("chunk_"))
    assert len(files) == 9 and len(count_calls) == 9
    count_calls.clear()
    np.testing.assert_array_equal(precompute_counts(f, X, chunk_size=5, cache_dir=tmp_path, **KW),
                                  ref)  # fmt: skip
    assert count_calls == []  # all read back
    os.remove(tmp_path / files[0])  # missing
    blob = (tmp_path / files[3]).read_bytes()
    (tmp_path / files[3]).write_bytes(blob[: len(blob) // 2])  # truncated
    with np.load(tmp_path / files[6]) as z:  # a valid file whose counts do not match the checksum
        parts = {k: z[k] for k in z.files}
    parts["counts"] = parts["counts"][:, ::-1].copy()
    np.savez(tmp_path / files[6], **parts)
    got = precompute_counts(f, X, chunk_size=5, cache_dir=tmp_path, **KW)
    np.testing.assert_array_equal(got, ref)
    assert sorted(count_calls) == [0, 15, 30]  # first noise group of chunks 0, 3, 6


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(model=_mlp(seed=1)), "model"),
        (dict(model="tanh"), "model"),  # same weights, another activation
        (dict(X="shifted"), "inputs"),
        (dict(sigma=0.25), "sigma"),
        (dict(n=601), "n"),
        (dict(random_state=12), "seed"),
        (dict(noise_sharing=2), "noise_sharing"),
        (dict(chunk_size=6), "chunk_inputs"),
    ],
)
def test_a_cache_of_another_computation_is_refused(X, tmp_path, change, field):
    args = dict(model=_mlp(), X=X, chunk_size=5, cache_dir=tmp_path, **KW)
    precompute_counts(**args)
    change = dict(change)
    if change.get("X") == "shifted":
        change["X"] = X + 1e-3
    if change.get("model") == "tanh":
        change["model"] = _mlp()
        change["model"][1] = torch.nn.Tanh()
    pattern = rf"another computation \(differs in: [a-z_, ]*\b{field}\b"
    with pytest.raises(ValueError, match=pattern):
        precompute_counts(**{**args, **change})


def test_cache_needs_a_fixed_seed(X, tmp_path):
    with pytest.raises(ValueError, match="fixed random_state"):
        precompute_counts(_mlp(), X, **{**KW, "random_state": None}, cache_dir=tmp_path)
    clf = SmoothedClassifier(MLP, max_epochs=1, n=50).fit(X, np.arange(41) % 2)
    with pytest.raises(ValueError, match="cache_dir needs a fixed seed"):
        clf.sample_counts(X, cache_dir=tmp_path)


def test_progress_bar_says_how_many_chunks_were_cached(X, tmp_path, capsys):
    f = _mlp()
    precompute_counts(f, X, chunk_size=10, cache_dir=tmp_path, **KW)
    os.remove(tmp_path / "chunk_000002.npz")
    precompute_counts(f, X, chunk_size=10, cache_dir=tmp_path, verbose=1, **KW)
    err = capsys.readouterr().err
    assert "(4 of 5 chunks cached)" in err and "5/5" in err


_WORKER = """
import sys, time, numpy as np, torch
from rrise_sklearn.sampling import precompute_counts

class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 4)
    def forward(self, x):
        time.sleep(0.05)
        return self.lin(x)

X = np.random.default_rng(0).normal(size=(41, 8)).astype(np.float32)
precompute_counts(Slow(), X, sigma=0.5, n=600, n_classes=4, random_state=11, chunk_size=1,
                  cache_dir=sys.argv[1], batch_size=600)
print("finished")
"""


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, count_calls):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(cache)], stdout=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [p for p in os.listdir(cache)] if cache.exists() else []
        if sum(p.startswith("chunk_") for p in done) >= 5:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sum(p.startswith("chunk_") for p in os.listdir(cache))
    assert 5 <= finished < 41, "the run was not killed part way"
    ns = {}
    exec(_WORKER.split("X = np")[0], ns)  # the same model class, in this process
    model = ns["Slow"]()
    X = np.random.default_rng(0).normal(size=(41, 8)).astype(np.float32)
    kw = dict(sigma=0.5, n=600, n_classes=4, random_state=11, batch_size=600)
    resumed = precompute_counts(model, X, chunk_size=1, cache_dir=cache, **kw)
    assert len(count_calls) == 41 - finished  # only the missing chunks ran
    np.testing.assert_array_equal(resumed, monte_carlo_counts(model, X, noise_sharing=1, **kw))
    # a temporary file left by the kill never counts as a chunk
    assert all(p.startswith(("chunk_", "cache.json", ".chunk-")) for p in os.listdir(cache))


def test_rrise_fit_with_cache_dir_resumes_and_gives_the_same_surrogate(digits, tmp_path,
                                                                       count_calls):  # fmt: skip
    Xd, y = digits
    clf = SmoothedClassifier(MLP, module__hidden=16, max_epochs=1, n=100, random_state=0)
    clf.fit(Xd[:300], y[:300])
    kw = dict(n_targets=60, n_augment=1, n_calibration=80, n_refine=200,
              alpha_conf=0.1, max_epochs=1, random_state=3, cache_dir=tmp_path)  # fmt: skip
    a = RRISESurrogate(clf, **kw).fit(Xd[300:600])
    first = len(count_calls)
    assert first > 0 and {p for p in os.listdir(tmp_path)} == {"targets", "calibration", "refine"}
    count_calls.clear()
    b = RRISESurrogate(clf, **kw).fit(Xd[300:600])
    assert count_calls == []  # every count came from the cache
    np.testing.assert_array_equal(a.calibration_scores_, b.calibration_scores_)
    np.testing.assert_array_equal(a.train_counts_, b.train_counts_)
    plain = RRISESurrogate(clf, **{**kw, "cache_dir": None}).fit(Xd[300:600])
    np.testing.assert_array_equal(plain.calibration_scores_, a.calibration_scores_)
    with pytest.raises(ValueError, match="cache_dir needs an int random_state"):
        RRISESurrogate(clf, **{**kw, "random_state": None}).fit(Xd[300:600])
