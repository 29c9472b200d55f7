"""RRISESurrogate as a user gets it, against Monte Carlo CERTIFY on digits.

The demo's split (808 base-training / 632 held-out / 357 test inputs, digits
scaled to [0, 1]); the base MLP trained with Gaussian noise (60 epochs, seed 0);
Monte Carlo CERTIFY with n0 = 100, n = 10,000, alpha = 0.001, timed over the test
inputs; a 100,000-sample Monte Carlo reference on the test inputs.

For each seed, nothing but the seed is set:
``RRISESurrogate(clf, random_state=seed).fit(X_heldout)``. With the defaults the
surrogate trains on the base classifier's training inputs (kept by its ``fit``),
all 632 held-out inputs calibrate it, and targets, training and calibration are
all redrawn per seed. Reported per seed: certified accuracy at r in {0, 0.25,
0.5, 0.75, 1.0}, ACR, the mean gap to Monte Carlo over r <= 0.75, wrong
positive-radius certificates against the reference (other class than the
reference's top class, or radius above sigma * PhiInv(reference frequency)),
the one-time seconds by phase, seconds per query (the test set in one call,
median of 20 calls, divided by its size; and one input per call, median of 50),
the speedup over Monte Carlo and the break-even number of queries. Then the
Jensen-Shannon uncalibrated baseline (one network trained on the first seed's
targets, no guarantee), and the Monte Carlo sample budget of the one-time work
against that of the defaults before 2026-11-23 (exact counts, not timed).

Run: ``.venv/bin/python benchmarks/bench_rrise_defaults.py [--sigmas 0.25 0.5] [--seeds 0 1 2]``
(``--quick`` for a smoke run with small sample sizes)
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch
from bench_rrise import wrong_rate

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.demo import load_demo_data
from rrise_sklearn.metrics import average_certified_radius, certified_accuracy
from rrise_sklearn.nets import MLP
from rrise_sklearn.stats import max_certifiable_radius

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


def _per_query(fn, X: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(X)


def _latency(fn, X: np.ndarray, calls: int) -> float:
    times = []
    for i in range(calls):
        x = X[i % len(X) : i % len(X) + 1]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _row(name: str, acc: np.ndarray, acr: float, extra: str) -> str:
    return f"{name:26s}" + "".join(f"{100 * a:8.1f}" for a in acc) + f"{acr:8.3f}  {extra}"


def bench_sigma(sigma: float, seeds: list[int], quick: bool, overrides: dict) -> dict:
    data = load_demo_data(0)
    X_base, y_base = data["base"]
    X_held, _ = data["rrise"]
    X_test, y_test = data["test"]
    n, n_ref = (1_000, 5_000) if quick else (10_000, 100_000)
    clf = SmoothedClassifier(
        MLP, sigma=sigma, max_epochs=15 if quick else 60, lr=1e-3, batch_size=64, n0=100, n=n,
        alpha=0.001, random_state=0,
    ).fit(X_base, y_base)  # fmt: skip
    t0 = time.perf_counter()
    mc = clf.certify(X_test)
    t_mc = (time.perf_counter() - t0) / len(X_test)
    ref = clf.sample_counts(X_test, n_ref, random_state=12345, noise_sharing=1)
    acc_mc = certified_accuracy(y_test, mc.prediction, mc.radius, RADII)
    acr_mc = average_certified_radius(y_test, mc.prediction, mc.radius)
    wrong, pos = wrong_rate(mc, ref, clf.classes_, sigma)
    print(
        f"\nsigma={sigma}: {len(X_base)} base-training (the surrogate's training inputs) / "
        f"{len(X_held)} held-out (calibration) / {len(X_test)} test; reference n={n_ref}; "
        f"MC ceiling {float(max_certifiable_radius(n, 0.001, sigma)):.3f}",
        flush=True,
    )
    print(
        f"{'certifier':26s}" + "".join(f"{'r=' + format(r, 'g'):>8s}" for r in RADII) + "     ACR"
    )
    print(_row(f"MC CERTIFY n={n}", acc_mc, acr_mc, f"wrong {wrong}/{pos}; {t_mc:.2e} s/query"))
    out: dict = {"gap": [], "speedup": [], "break_even": [], "one_time": [], "latency": []}
    first = None
    for seed in seeds:
        sur = RRISESurrogate(clf, random_state=seed, **overrides).fit(X_held)
        am = sur.amortization_
        fixed = am["targets"] + am["training"] + am["calibration"]
        res = sur.certify(X_test)
        t_q = _per_query(sur.certify, X_test, 20)
        lat = _latency(sur.certify, X_test, 50)
        acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
        acr = average_certified_radius(y_test, res.prediction, res.radius)
        gap = float(np.mean(100 * (acc_mc[:4] - acc[:4])))
        wrong, pos = wrong_rate(res, ref, clf.classes_, sigma)
        out["gap"].append(gap)
        out["speedup"].append(t_mc / t_q)
        out["break_even"].append(fixed / (t_mc - t_q))
        out["one_time"].append(fixed)
        out["latency"].append(lat)
        print(_row(f"RRISE defaults, seed {seed}", acc, acr, f"wrong {wrong}/{pos}"))
        print(
            f"{'':26s}mean gap r<=0.75: {gap:.2f} pts; tau {float(sur.threshold_):.3f}; "
            f"{t_q:.2e} s/query (batch), {lat * 1e3:.2f} ms (one input per call); speedup "
            f"{t_mc / t_q:.0f}x (batch); one-time {fixed:.0f} s (targets {am['targets']:.0f}, "
            f"training {am['training']:.0f}, calibration {am['calibration']:.0f}); "
            f"break-even {fixed / (t_mc - t_q):.0f} queries",
            flush=True,
        )
        first = first or sur
    js = RRISESurrogate(
        clf, loss="js", calibrate=False, random_state=seeds[0], **{**overrides, "n_members": 1}
    ).fit(X_held, train_inputs=first.train_inputs_, train_counts=first.train_counts_)
    res = js.certify(X_test)
    acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
    wrong, pos = wrong_rate(res, ref, clf.classes_, sigma)
    print(
        _row(
            "JS baseline, uncalibrated",
            acc,
            average_certified_radius(y_test, res.prediction, res.radius),
            f"wrong {wrong}/{pos}; mean gap {np.mean(100 * (acc_mc[:4] - acc[:4])):.2f} pts "
            "(no guarantee)",
        )
    )
    # the Monte Carlo forward passes of the one-time work, new defaults against old ones
    p = first.get_params()
    new = (
        len(X_base) * (1 + p["n_augment"]) * p["n_targets"]
        + len(X_held) * p["n_calibration"]
        + (math.ceil(p["refine_size"] * len(X_held)) * p["n_refine"] if p["n_refine"] else 0)
    )
    n_cal_old = math.ceil(0.25 * len(X_held))  # sklearn's split of calibration_size=0.25
    old = (len(X_held) - n_cal_old) * 33 * n + n_cal_old * n
    print(
        f"one-time Monte Carlo samples: defaults {new / 1e6:.1f} M (+ {p['n_members']} networks "
        f"trained); defaults before 2026-11-23 {old / 1e6:.1f} M (+ 1 network): "
        f"{new / old:.2f}x",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="small sample sizes (smoke run)")
    args = ap.parse_args()
    overrides = {}
    if args.quick:
        overrides = dict(n_targets=200, n_augment=2, n_calibration=2_000, n_refine=10_000,
                         n_members=2, max_epochs=5)  # fmt: skip
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    summary = {s: bench_sigma(s, args.seeds, args.quick, overrides) for s in args.sigmas}
    print(f"\nover seeds {args.seeds} (mean, min-max):")
    for s, o in summary.items():
        g, sp, be = (np.array(o[k]) for k in ("gap", "speedup", "break_even"))
        print(
            f"sigma={s}: mean gap {g.mean():.2f} pts ({g.min():.2f}-{g.max():.2f}); speedup "
            f"{sp.mean():.0f}x ({sp.min():.0f}-{sp.max():.0f}); break-even {be.mean():.0f} "
            f"queries; one-time {np.mean(o['one_time']):.0f} s; one input per call "
            f"{1e3 * np.mean(o['latency']):.2f} ms"
        )


if __name__ == "__main__":
    main()
