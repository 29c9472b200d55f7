"""Training objectives compared: certified accuracy and ACR of each, at equal epochs, over seeds.

For each data set and sigma, a base network is trained with every objective
of :mod:`rrise_sklearn.training` (their default hyperparameters) for the same
number of epochs, then the first ``--n-certify`` test inputs are certified
with Cohen's CERTIFY (n0 = 100, n = 10,000, alpha = 0.001). Prints the mean
over seeds of the certified accuracy at radii 0-1 and of the ACR with its
spread (max - min over seeds), and the training time as a ratio to
Gaussian augmentation.

Data: digits (the MLP; 1,000 training / 400 test images, pixels in [0, 1])
and MNIST-5k (``--datasets mnist``; a narrow SmallCNN, 2,000 training / 1,000
test images; needs the ``mnist`` extra).

Run: ``.venv/bin/python benchmarks/bench_training.py [--datasets digits,mnist]
[--sigmas 0.25,0.5] [--seeds 0,1,2] [--methods macer --set deferred=3]``
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
from sklearn.model_selection import train_test_split

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.metrics import average_certified_radius, certified_accuracy
from rrise_sklearn.nets import MLP, SmallCNN
from rrise_sklearn.training import OBJECTIVES, defaults

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def data(name: str):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X = (X / 16).astype(np.float32)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, train_size=1000, test_size=400,
                                                  stratify=y, random_state=0)  # fmt: skip
        return X_tr, X_te, y_tr, y_te, dict(module=MLP)
    from rrise_sklearn.datasets import load_mnist_5k

    X, y = load_mnist_5k(return_X_y=True, shuffle=False)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, train_size=2000, test_size=1000,
                                              stratify=y, random_state=0)  # fmt: skip
    return X_tr, X_te, y_tr, y_te, dict(module=SmallCNN, module__width=8, module__hidden=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--sigmas", default="0.25,0.5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(OBJECTIVES))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter for every method that has it, e.g. deferred=3 (repeatable)",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-certify", type=int, default=300)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    overrides = {k: float(v) if "." in v else int(v) for k, v in (a.split("=") for a in args.set)}
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; epochs={args.epochs}, n0=100, n={args.n:,}, "
        f"alpha=0.001, seeds={seeds}, first {args.n_certify} test inputs certified"
        + (f"; hyperparameters set: {overrides}" if overrides else "")
    )
    for name in args.datasets.split(","):
        X_tr, X_te, y_tr, y_te, net = data(name)
        Xc, yc = X_te[: args.n_certify], y_te[: args.n_certify]
        for method in methods:  # warm-up: first-call costs must not count for one method
            SmoothedClassifier(**net, training=method, max_epochs=1, n=100).fit(
                X_tr[:256], y_tr[:256]
            )
        for sigma in (float(s) for s in args.sigmas.split(",")):
            print(f"\n{name}, sigma={sigma}: certified accuracy (%) at r, ACR mean [spread]")
            cols = " ".join(f"{r:>5.2f}" for r in RADII)
            print(f"{'method':<12} | {cols} | {'ACR':>6} {'spread':>7} | {'train x':>7}")
            base_time = None
            for method in methods:
                accs, acrs, times = [], [], []
                for seed in seeds:
                    hyper = {f"training__{k}": v for k, v in overrides.items()
                             if k in defaults(method)}  # fmt: skip
                    clf = SmoothedClassifier(
                        **net, training=method, sigma=sigma, n0=100, n=args.n, alpha=0.001,
                        max_epochs=args.epochs, batch_size=128, random_state=seed, **hyper,
                    )  # fmt: skip
                    t0 = time.perf_counter()
                    clf.fit(X_tr, y_tr)
                    times.append(time.perf_counter() - t0)
                    res = clf.certify(Xc)
                    accs.append(
                        [certified_accuracy(yc, res.prediction, res.radius, r) for r in RADII]
                    )
                    acrs.append(average_certified_radius(yc, res.prediction, res.radius))
                t_mean = statistics.mean(times)
                base_time = t_mean if method == "gaussian" else base_time
                ratio = t_mean / base_time if base_time else float("nan")
                mean_acc = " ".join(f"{100 * v:>5.1f}" for v in np.mean(accs, axis=0))
                spread = max(acrs) - min(acrs)
                print(
                    f"{method:<12} | {mean_acc} | {statistics.mean(acrs):>6.3f} "
                    f"{spread:>7.3f} | {ratio:>7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
