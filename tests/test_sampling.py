"""The Monte Carlo engine: shapes, determinism, marginal distribution, input types."""

import numpy as np
import pytest
import torch
from conftest import small_mlp
from joblib import parallel_config
from scipy import stats as sps

from rrise_sklearn.sampling import monte_carlo_counts, noise_block_size, resolve_seed

_mlp = small_mlp


@pytest.fixture
def X8():
    return np.random.default_rng(0).normal(size=(37, 8)).astype(np.float32)


def test_counts_shape_dtype_and_row_sums(X8):
    c = monte_carlo_counts(_mlp(), X8, sigma=0.5, n=777, n_classes=4, random_state=0)
    assert c.shape == (37, 4)
    assert c.dtype == np.int64
    assert (c.sum(axis=1) == 777).all()


@pytest.mark.parametrize("noise_sharing", [1, 5, 16])
def test_same_seed_same_counts_for_every_batch_size_and_worker_count(X8, noise_sharing):
    f = _mlp()
    kw = dict(sigma=0.5, n=1100, n_classes=4, random_state=123, noise_sharing=noise_sharing)
    ref = monte_carlo_counts(f, X8, batch_size=4096, **kw)
    for bs in [1, 7, 512, 1100, 50_000]:
        np.testing.assert_array_equal(monte_carlo_counts(f, X8, batch_size=bs, **kw), ref)
    np.testing.assert_array_equal(monte_carlo_counts(f, X8, n_jobs=2, batch_size=300, **kw), ref)
    with parallel_config(backend="threading", n_jobs=2):
        np.testing.assert_array_equal(monte_carlo_counts(f, X8, **kw), ref)
    other = monte_carlo_counts(f, X8, **{**kw, "random_state": 124})
    assert (other != ref).any()


def test_dask_backend_gives_identical_counts(X8):
    distributed = pytest.importorskip("distributed")
    f = _mlp()
    kw = dict(sigma=0.5, n=500, n_classes=4, random_state=5)
    ref = monte_carlo_counts(f, X8, **kw)
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        with parallel_config(backend="dask"):
            got = monte_carlo_counts(f, X8, **kw)
    np.testing.assert_array_equal(got, ref)


def test_marginal_counts_are_binomial_with_shared_noise():
    """Every input sees n i.i.d. draws, also when noise blocks are shared.

    A 1-D threshold model f(x) = [x > 0] at x = 0.2, sigma = 1: the count of class 1
    is Bin(n, Phi(0.2)). Check mean and variance over seeds, for an input in the
    middle of a noise group.
    """

    class Threshold(torch.nn.Module):
        def forward(self, x):
            return (x[:, 0] > 0).long()

    X = np.full((16, 1), 0.2, dtype=np.float32)
    p, n, reps = sps.norm.cdf(0.2), 200, 300
    k = np.array(
        [
            monte_carlo_counts(Threshold(), X, sigma=1.0, n=n, n_classes=2, random_state=s)[7, 1]
            for s in range(reps)
        ]
    )
    se_mean = np.sqrt(p * (1 - p) * n / reps)
    assert abs(k.mean() - n * p) < 5 * se_mean
    var = n * p * (1 - p)
    assert 0.7 * var < k.var(ddof=1) < 1.4 * var  # chi2(299) 0.1 % tails: 0.75 / 1.28


def test_numpy_callable_and_class_index_outputs(X8):
    w = np.random.default_rng(1).normal(size=(8, 3))

    def predict(batch):
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
        return np.argmax(batch @ w, axis=1)

    c = monte_carlo_counts(predict, X8, sigma=0.3, n=300, n_classes=3, random_state=0)
    assert (c.sum(1) == 300).all()
    # the same model as a torch module returning scores gives identical counts
    lin = torch.nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w.T, dtype=torch.float32))
    c2 = monte_carlo_counts(lin, X8, sigma=0.3, n=300, n_classes=3, random_state=0)
    assert (np.abs(c - c2) <= 2).all()  # float rounding of the matmul may flip a tie


def test_training_flag_restored_and_progress_bar(X8, capsys):
    f = _mlp()
    f.train()
    monte_carlo_counts(f, X8, sigma=0.5, n=50, n_classes=4, random_state=0, verbose=1)
    assert f.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sigma=0.0), "sigma"),
        (dict(n=0), "n must"),
        (dict(n_classes=0), "n_classes"),
        (dict(batch_size=0), "batch_size"),
        (dict(noise_sharing=0), "noise_sharing"),
        (dict(n_classes=3), r"expected \(.*, 3\)"),
        (dict(random_state=-1), "random_state"),
    ],
)
def test_bad_arguments(X8, kwargs, match):
    base = dict(sigma=0.5, n=10, n_classes=4, random_state=0)
    with pytest.raises(ValueError, match=match):
        monte_carlo_counts(_mlp(), X8, **{**base, **kwargs})


def test_nan_and_out_of_range_labels(X8):
    bad = X8.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        monte_carlo_counts(_mlp(), bad, sigma=0.5, n=10, n_classes=4)
    with pytest.raises(ValueError, match="outside"):
        monte_carlo_counts(lambda b: np.full(len(b), 7), X8, sigma=0.5, n=10, n_classes=4)


def test_helpers():
    assert noise_block_size(64, 10) == 10
    assert noise_block_size(64, 10_000) == 512
    assert resolve_seed(np.random.SeedSequence(3)) == resolve_seed(np.random.SeedSequence(3))
    assert resolve_seed(None) != resolve_seed(None)


def test_no_repeated_noise_among_many_independent_blocks():
    """1.2e5 single-sample blocks (one per noise group, as with ``n=1, noise_sharing=1``)
    are all distinct. With a 32-bit-seeded generator, groups 37961 and 91972 of seed 0
    received the same noise (birthday bound over about 4e9 streams)."""
    from rrise_sklearn.sampling import block_noise

    rows = np.concatenate([block_noise(0, g, 0, (1, 2)).numpy() for g in range(120_000)])
    assert len(np.unique(rows, axis=0)) == len(rows)
    assert not np.array_equal(rows[37961], rows[91972])


def test_engine_draws_the_documented_blocks():
    """Noise of input i (``noise_sharing=1``) is block_noise(root, i, c): what the test
    above checks for repeats is what the engine uses."""
    from rrise_sklearn.sampling import block_noise, noise_block_size, resolve_seed

    seen = []

    def record(batch):
        seen.append(batch.copy())
        return np.zeros(len(batch), dtype=np.int64)

    n, sigma = 700, 0.5
    monte_carlo_counts(record, np.zeros((3, 4), np.float32), sigma=sigma, n=n, n_classes=2,
                       random_state=11, noise_sharing=1, batch_size=256)  # fmt: skip
    got = np.concatenate(seen).reshape(3, n, 4)
    S = noise_block_size(4, n)
    root = resolve_seed(11)
    for i in range(3):
        want = np.concatenate(
            [block_noise(root, i, c, (min(S, n - c * S), 4)).numpy() for c in range(-(-n // S))]
        )
        np.testing.assert_allclose(got[i], sigma * want, rtol=1e-6, atol=1e-7)


def test_seeds_differing_only_above_bit_32_give_different_noise():
    from rrise_sklearn.sampling import block_noise

    s = 5
    for high in (2**32, 2**40, 2**63):
        assert not torch.equal(block_noise(s, 0, 0, (16, 3)), block_noise(s + high, 0, 0, (16, 3)))
    f = torch.nn.Linear(3, 2)
    X = np.zeros((4, 3), np.float32)
    a = monte_carlo_counts(f, X, sigma=1.0, n=500, n_classes=2, random_state=s)
    b = monte_carlo_counts(f, X, sigma=1.0, n=500, n_classes=2, random_state=s + 2**32)
    assert not np.array_equal(a, b)


def test_auto_batch_size_is_timed_once_and_never_changes_the_counts():
    import time as _time

    from rrise_sklearn import sampling

    class Overhead(torch.nn.Module):  # fixed cost per call: large batches are faster
        def forward(self, x):
            _time.sleep(0.004)
            return torch.zeros(len(x), 2)

    class Superlinear(torch.nn.Module):  # cost grows faster than the batch: small is faster
        def forward(self, x):
            _time.sleep(2e-8 * len(x) ** 2)
            return torch.zeros(len(x), 2)

    X = torch.zeros(3, 4)
    assert sampling.tuned_batch_size(Overhead(), X, total_rows=10**6) == 4096
    slow = Superlinear()
    assert sampling.tuned_batch_size(slow, X, total_rows=10**6) == 256
    assert sampling._tuned_batches[slow][((4,), "cpu")] == 256  # remembered
    assert sampling.tuned_batch_size(torch.nn.Linear(4, 2), X, total_rows=100) == 100
    f = torch.nn.Linear(4, 3)
    Xr = np.random.default_rng(0).normal(size=(25, 4)).astype(np.float32)
    kw = dict(sigma=0.7, n=10_000, n_classes=3, random_state=4)
    auto = monte_carlo_counts(f, Xr, **kw)  # 250,000 rows: tuned
    assert f in sampling._tuned_batches
    np.testing.assert_array_equal(auto, monte_carlo_counts(f, Xr, batch_size=97, **kw))


def test_auto_batch_is_capped_by_activation_memory():
    """Large images get small batches: memory stays bounded by the batch, not by n."""
    from rrise_sklearn.nets import SmallCNN
    from rrise_sklearn.sampling import activation_bytes_per_row, tuned_batch_size

    cnn = SmallCNN(3 * 32 * 32, 10, channels=3)
    X = torch.zeros(2, 3, 32, 32)
    with torch.inference_mode():
        per_row = activation_bytes_per_row(cnn, X)
        # the largest activation: 64 channels x 32 x 32 float32 after the second convolution
        assert per_row == 3 * 64 * 32 * 32 * 4
        assert tuned_batch_size(cnn, X, total_rows=10**6) == 256
        assert tuned_batch_size(cnn, X, total_rows=100) == 100
        wide = torch.nn.Linear(4, 2**22)  # 16 MiB per row: a handful of rows per batch
        assert tuned_batch_size(wide, torch.zeros(1, 4), total_rows=10**6) == 5


def test_cuda_batches_may_be_larger_within_a_share_of_free_memory():
    """On CUDA the tuner may pick up to 65,536 rows, within a quarter of the free memory."""
    from rrise_sklearn.sampling import _allowed_batches

    cnn_row = 3 * 64 * 32 * 32 * 4  # the 3x32x32 SmallCNN's estimate (test above)
    assert _allowed_batches(cnn_row, "cpu") == [256]  # 256 MiB on the CPU, whatever is free
    assert _allowed_batches(cnn_row, "cpu", free_bytes=80 * 2**30) == [256]
    # 80 GiB free: 8 GiB (the ceiling) / 786 kB per row = 10,922 rows
    assert _allowed_batches(cnn_row, "cuda", free_bytes=80 * 2**30) == [256, 1024, 4096]
    # 2 GiB free: a quarter is 512 MiB = 682 rows
    assert _allowed_batches(cnn_row, "cuda", free_bytes=2 * 2**30) == [256]
    # never below the CPU's 256 MiB budget; unknown free memory: that budget too
    assert _allowed_batches(cnn_row, "cuda", free_bytes=2**20) == [256]
    assert _allowed_batches(cnn_row, "cuda") == [256]
    small = 3 * 256 * 4  # the digits MLP
    assert _allowed_batches(small, "cuda", free_bytes=80 * 2**30)[-1] == 65_536
    assert _allowed_batches(small, "cpu")[-1] == 4096
    assert _allowed_batches(16 * 2**20, "cpu") == [16]  # one row's worth over the cap
    assert _allowed_batches(0, "cuda") == [256, 1024, 4096, 16_384, 65_536]  # plain callables
