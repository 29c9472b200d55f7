"""Drift monitoring: false alarms over many looks, and how fast a shifted stream is caught.

On digits (pixels in [0, 1]): a smoothed MLP (sigma 0.25) trained on 800
images and an RRISE surrogate trained on 400 others. The remaining 597
images form a pool. For every stream the pool is shuffled and split into a
calibration set (``--m-cal``) and a deployment stream, so calibration and
stream are exchangeable by construction; the surrogate is recalibrated on
the calibration part and ``monitor`` is called after every ``--look``
inputs. Counted:

* exchangeable streams: the share of streams with an alarm at any look,
  for ``monitor`` and, for comparison, for the one-shot ``verify`` run at
  every look (at the same level);
* shifted streams (each stream image moved ``--roll`` pixels sideways, or
  with Gaussian pixel noise of std ``--shift``): the share caught, and the
  number of stream inputs until the alarm.

Run: ``.venv/bin/python benchmarks/bench_monitor.py [--streams 200] [--look 50]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import numpy as np
import torch
from scipy import stats as sps
from sklearn.datasets import load_digits

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.nets import MLP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--shifted-streams", type=int, default=50)
    parser.add_argument("--look", type=int, default=50)
    parser.add_argument("--m-cal", type=int, default=197)
    parser.add_argument("--level", type=float, default=0.05)
    parser.add_argument("--n-calibration", type=int, default=1000)
    parser.add_argument("--shift-kind", choices=("noise", "roll"), default="roll")
    parser.add_argument("--shift", type=float, default=0.3, help="pixel noise std (noise)")
    parser.add_argument("--roll", type=int, default=2, help="pixels moved (roll)")
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    clf = SmoothedClassifier(MLP, sigma=0.25, max_epochs=20, random_state=0).fit(X[:800], y[:800])
    sur = RRISESurrogate(
        clf, alpha_conf=0.05, n_calibration=args.n_calibration, n_refine=None, n_members=1,
        n_targets=2000, n_augment=4, max_epochs=20, random_state=0,
    ).fit(X[1000:1200], train_inputs=X[800:1000])  # fmt: skip
    pool = X[1200:]
    looks = (len(pool) - args.m_cal) // args.look
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; digits, "
        f"sigma=0.25, alpha_conf=0.05, n_calibration={args.n_calibration}, "
        f"{args.m_cal} calibration inputs, {looks} looks of {args.look} inputs, "
        f"level={args.level}"
    )
    alarms = verify_alarms = 0
    for s in range(args.streams):
        srng = np.random.default_rng(1000 + s)
        idx = srng.permutation(len(pool))
        cal, stream = pool[idx[: args.m_cal]], pool[idx[args.m_cal :]]
        sur.conformalize(cal, random_state=s)
        mon = ver = False
        for j in range(looks):
            batch = stream[j * args.look : (j + 1) * args.look]
            mon |= sur.monitor(batch, level=args.level).alarm
            ver |= sur.verify(batch, level=args.level, random_state=10**6 + 100 * s + j).alarm
        alarms += mon
        verify_alarms += ver
    hi = sps.beta.ppf(0.975, alarms + 1, args.streams - alarms)
    print(
        f"exchangeable streams: monitor alarmed on {alarms}/{args.streams} "
        f"({100 * alarms / max(1, args.streams):.1f} %, 95 % upper bound {100 * hi:.1f} %); "
        "verify at "
        f"every look alarmed on {verify_alarms}/{args.streams} "
        f"({100 * verify_alarms / max(1, args.streams):.1f} %)"
    )
    delays, caught = [], 0
    for s in range(args.shifted_streams):
        srng = np.random.default_rng(5000 + s)
        idx = srng.permutation(len(pool))
        cal, stream = pool[idx[: args.m_cal]], pool[idx[args.m_cal :]]
        if args.shift_kind == "noise":
            stream = stream + args.shift * srng.standard_normal(stream.shape)
        else:  # images moved right by --roll pixels (a camera that moved)
            stream = np.roll(stream.reshape(-1, 8, 8), args.roll, axis=2).reshape(-1, 64)
        stream = stream.astype(np.float32)
        sur.conformalize(cal, random_state=10_000 + s)
        for j in range(looks):
            rep = sur.monitor(stream[j * args.look : (j + 1) * args.look], level=args.level)
            if rep.alarm:
                caught += 1
                delays.append(rep.n_seen)
                break
    med = statistics.median(delays) if delays else float("nan")
    what = (
        f"pixel noise std {args.shift}"
        if args.shift_kind == "noise"
        else f"images moved {args.roll} pixels"
    )
    print(
        f"shifted streams ({what}): caught {caught}/{args.shifted_streams} "
        f"within {looks * args.look} inputs; median inputs until the alarm {med}"
        f" (quartiles {np.percentile(delays, [25, 75]).tolist() if delays else 'n/a'})"
    )


if __name__ == "__main__":
    main()
