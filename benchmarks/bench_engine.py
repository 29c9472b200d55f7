"""Throughput of the Monte Carlo engine against the physical limit and a per-input loop.

For the digits MLP and the small CNN, in one process and interleaved rounds:

* raw forward: the module's forward + argmax on pre-made batches of the same
  size (no noise, no counting): the limit for the engine on this machine;
* engine: ``monte_carlo_counts`` (noise, packing, counting on the device);
* per-input loop in the style of the original reference implementation: for
  each input, repeat it ``batch`` times, add fresh noise, argmax, count on
  the host.

Prints noisy samples per second (median over rounds) and the ratios.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--inputs 200 --n 10000 --rounds 3]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from rrise_sklearn.nets import MLP, SmallCNN
from rrise_sklearn.sampling import monte_carlo_counts


def raw_forward(module, batch, total):
    reps = max(1, total // len(batch))
    with torch.inference_mode():
        t = time.perf_counter()
        for _ in range(reps):
            module(batch).argmax(1)
        return reps * len(batch) / (time.perf_counter() - t)


def engine(module, X, n, batch_size, sigma):
    t = time.perf_counter()
    monte_carlo_counts(
        module, X, sigma=sigma, n=n, n_classes=10, batch_size=batch_size, random_state=0
    )
    return len(X) * n / (time.perf_counter() - t)


def per_input_loop(module, X, n, batch_size, sigma):
    """Reference-style loop: one input at a time, counts on the host."""
    Xt = torch.as_tensor(X)
    t = time.perf_counter()
    with torch.inference_mode():
        for x in Xt:
            counts = np.zeros(10, dtype=np.int64)
            remaining = n
            while remaining > 0:
                b = min(batch_size, remaining)
                remaining -= b
                batch = x.repeat((b, 1))
                noise = torch.randn_like(batch) * sigma
                pred = module(batch + noise).argmax(1)
                counts += np.bincount(pred.cpu().numpy(), minlength=10)
    return len(X) * n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=0.25)
    args = ap.parse_args()

    X, _ = load_digits(return_X_y=True)
    X = (X[: args.inputs] / 16.0).astype(np.float32)
    torch.manual_seed(0)
    models = {
        "digits MLP (64-256-256-10)": MLP(64, 10).eval(),
        "small CNN (8x8, 32/64 filters)": SmallCNN(64, 10).eval(),
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"inputs={args.inputs} n={args.n} batch_size={args.batch_size} rounds={args.rounds}")
    print(
        f"{'model':34s} {'raw fwd/s':>12s} {'engine/s':>12s} {'loop/s':>12s} "
        f"{'engine/raw':>10s} {'engine/loop':>11s}"
    )
    for name, module in models.items():
        # the CNN is ~20x slower per sample: fewer inputs keep the run short
        Xm = X if "MLP" in name else X[: max(1, len(X) // 4)]
        batch = torch.as_tensor(
            np.repeat(X, -(-args.batch_size // len(X)), axis=0)[: args.batch_size]
        )
        batch = batch + args.sigma * torch.randn_like(batch)
        raw, eng, loop = [], [], []
        total = len(Xm) * args.n
        for _ in range(args.rounds):  # interleaved so machine noise hits all three alike
            raw.append(raw_forward(module, batch, total))
            eng.append(engine(module, X, args.n, args.batch_size, args.sigma))
            loop.append(
                per_input_loop(
                    module, X[: max(1, args.inputs // 4)], args.n, args.batch_size, args.sigma
                )
            )
        r, e, lp = (statistics.median(v) for v in (raw, eng, loop))
        print(f"{name:34s} {r:12.3g} {e:12.3g} {lp:12.3g} {e / r:10.2f} {e / lp:11.2f}")


if __name__ == "__main__":
    main()
