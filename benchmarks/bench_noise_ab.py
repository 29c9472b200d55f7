"""Engine throughput before and after the switch to Philox noise blocks, interleaved in one run.

Loads the engine of an earlier commit (default ``a6666c7``, the last one with
32-bit-seeded ``torch.Generator`` noise) from git next to the current one and
times ``monte_carlo_counts`` of both on the same inputs, alternating, so that
the ratio ``new / old`` is measured under the same machine load.

Run from a git clone: ``.venv/bin/python benchmarks/bench_noise_ab.py [--rounds 5 --rev a6666c7]``
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from rrise_sklearn import sampling
from rrise_sklearn.nets import MLP, SmallCNN


def load_old_engine(rev: str):
    src = subprocess.run(
        ["git", "show", f"{rev}:rrise_sklearn/sampling.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_sampling.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_sampling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rev", default="a6666c7")
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    old = load_old_engine(args.rev)
    X, _ = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    torch.manual_seed(0)
    mlp, cnn = MLP(64, 10).eval(), SmallCNN(64, 10).eval()
    cases = [
        ("digits MLP, noise_sharing=16", mlp, X[:64], 16, args.n),
        ("digits MLP, noise_sharing=1", mlp, X[:64], 1, args.n),
        ("digits MLP, n=100 (selection)", mlp, X[:256], 16, 100),
        ("small CNN, noise_sharing=16", cnn, X[:16], 16, args.n),
        ("small CNN, noise_sharing=1", cnn, X[:16], 1, args.n),
    ]
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, python {sys.version.split()[0]}")  # fmt: skip
    print(f"old engine: git {args.rev}; rounds={args.rounds} (median)")
    print(f"{'case':32s} {'old samples/s':>14s} {'new samples/s':>14s} {'new/old':>8s}")
    for name, model, Xs, sharing, n in cases:
        rates = {"old": [], "new": []}
        for r in range(args.rounds):
            for label, mod in (("old", old), ("new", sampling)):
                t = time.perf_counter()
                mod.monte_carlo_counts(model, Xs, sigma=0.25, n=n, n_classes=10,
                                       random_state=r, noise_sharing=sharing)  # fmt: skip
                rates[label].append(len(Xs) * n / (time.perf_counter() - t))
        o, w = statistics.median(rates["old"]), statistics.median(rates["new"])
        print(f"{name:32s} {o:14.3e} {w:14.3e} {w / o:8.3f}", flush=True)


if __name__ == "__main__":
    main()
