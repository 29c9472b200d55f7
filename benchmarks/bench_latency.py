"""One input per call: the latency of ``RRISESurrogate.certify`` and ``predict``.

A digits MLP smoothed classifier (5 epochs, n=1,000) and a surrogate with the
default five members, trained on small settings (the latency does not depend on
them); then ``certify`` and ``predict`` on one input per call, 3,000 calls after
50 warm-up calls, for three different inputs; the median of the three is
printed. Serving one request at a time pays this per query.

Compare two versions in interleaved runs by pointing ``PYTHONPATH`` at a
checkout of each (``git worktree add /tmp/old COMMIT``)::

    for r in 1 2 3; do
      PYTHONPATH=/tmp/old .venv/bin/python benchmarks/bench_latency.py
      PYTHONPATH=. .venv/bin/python benchmarks/bench_latency.py
    done
"""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.datasets import load_digits

import rrise_sklearn
from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.nets import MLP


def per_call_us(fn, calls: int = 3000) -> float:
    for _ in range(50):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = SmoothedClassifier(MLP, sigma=0.25, max_epochs=5, n=1000, random_state=0)
    clf.fit(X[:800], y[:800])
    sur = RRISESurrogate(
        clf, n_targets=200, n_augment=2, n_calibration=2000, n_refine=10_000, max_epochs=3,
        random_state=0,
    ).fit(X[800:1400])  # fmt: skip
    rows = [X[1400 + i : 1401 + i] for i in range(3)]
    cert = np.median([per_call_us(lambda x=x: sur.certify(x)) for x in rows])
    pred = np.median([per_call_us(lambda x=x: sur.predict(x)) for x in rows])
    where = os.path.dirname(os.path.dirname(os.path.abspath(rrise_sklearn.__file__)))
    print(
        f"{where}: {sur.n_members} members; one input per call: certify {cert:.0f} us, "
        f"predict {pred:.0f} us"
    )


if __name__ == "__main__":
    main()
