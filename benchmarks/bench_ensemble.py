"""Per-query cost of an RRISE ensemble against one surrogate network.

Fits ``RRISESurrogate`` on digits with ``n_members`` in {1, 3, 5} (small
Monte Carlo budgets: the timing does not depend on the fit's quality), then
times ``certify`` in interleaved rounds:

* one query per call (latency: what a service answering single requests pays);
* 1,000 queries per call (throughput), reported per query.

For ensembles, with the fused pass (MLP members: one batched matrix product
per layer for calls of up to ``MeanLogProbEnsemble.fused_max_rows`` rows) and
with the member loop (``fused_max_rows = 0``). Prints medians and the ratio to
one network.

``--training``: instead, the training of five MLP members on the demo's
surrogate training set (808 digits inputs with 32 noisy copies each, 26,664
rows, soft targets), all members at once as one batched network (the default)
against one skorch fit per member (what other architectures get), in
interleaved rounds of ``--epochs`` epochs each.

Run: ``.venv/bin/python benchmarks/bench_ensemble.py [--rounds 5] [--training --epochs 4]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.nets import MLP


def per_query(fn, queries: int, min_time: float = 0.3) -> float:
    fn()
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < min_time:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / (reps * queries)


def bench_training(rounds: int, epochs: int, members: int = 5) -> None:
    from rrise_sklearn.demo import load_demo_data

    X_base, y_base = load_demo_data(0)["base"]
    clf = SmoothedClassifier(MLP, max_epochs=5, lr=1e-3, batch_size=64, random_state=0)
    clf.fit(X_base, y_base)
    rng = np.random.default_rng(0)
    X = np.repeat(X_base, 33, axis=0)
    X = (X + 0.25 * rng.standard_normal(X.shape)).astype(np.float32)
    T = rng.dirichlet(np.ones(10), size=len(X)).astype(np.float32)
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {members} MLP members, {len(X)} rows, "
        f"{epochs} epochs, rounds={rounds}"
    )
    times: dict[str, list[float]] = {"batched": [], "one skorch fit per member": []}
    for _ in range(rounds):
        for label in times:
            est = RRISESurrogate(clf, n_members=members, max_epochs=epochs, random_state=0)
            est._prepare(X_base[:2])
            seeds = np.arange(1, members + 1)
            t0 = time.perf_counter()
            if label == "batched":
                assert est._fit_stacked(X, T, seeds, {}) is not None
            else:
                for seed in seeds:
                    torch.manual_seed(int(seed))
                    est.initialize()
                    est.partial_fit(X, T)
            times[label].append(time.perf_counter() - t0)
    base = statistics.median(times["one skorch fit per member"])
    for label, ts in times.items():
        m = statistics.median(ts)
        print(f"{label:<28} {m:8.2f} s   {base / m:5.2f}x the loop's speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--training", action="store_true", help="time the members' training")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.training:
        bench_training(args.rounds, args.epochs)
        return
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; rounds={args.rounds}"
    )
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    clf = SmoothedClassifier(MLP, max_epochs=5, n=1000, random_state=0).fit(X[:800], y[:800])
    surs = {}
    for k in (1, 3, 5):
        surs[k] = RRISESurrogate(
            clf, n_members=k, n_targets=200, n_augment=1, n_calibration=500, n_refine=None,
            alpha_conf=0.05, max_epochs=3, random_state=0,
        ).fit(X[800:1400])  # fmt: skip
    one, batch = X[1400:1401], X[1400:1797]
    reps = np.resize(batch, (1000, 64))
    configs = {"1 network": (surs[1], None)}
    for k in (3, 5):
        configs[f"{k} members, fused"] = (surs[k], 64)
        configs[f"{k} members, loop"] = (surs[k], 0)
    lat: dict[str, list[float]] = {c: [] for c in configs}
    thr: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for label, (sur, rows) in configs.items():
            if rows is not None:
                sur.module_.fused_max_rows = rows
            lat[label].append(per_query(lambda sur=sur: sur.certify(one), 1))
            thr[label].append(per_query(lambda sur=sur: sur.certify(reps), len(reps)))
    base_l = statistics.median(lat["1 network"])
    base_t = statistics.median(thr["1 network"])
    print(
        f"{'configuration':<18} {'1 query/call (s)':>17} {'x one':>6} "
        f"{'1000/call (s/q)':>16} {'x one':>6}"
    )
    for label in configs:
        lm, tm = statistics.median(lat[label]), statistics.median(thr[label])
        print(f"{label:<18} {lm:>17.3g} {lm / base_l:>6.2f} {tm:>16.3g} {tm / base_t:>6.2f}")


if __name__ == "__main__":
    main()
