"""Throughput of the Monte Carlo engine against the physical limit and a per-input loop.

For the digits MLP and small CNNs on 1x8x8, 1x28x28 and 3x32x32 images, in one
process and interleaved rounds:

* best raw forward: the module's forward + argmax on pre-made batches of 256,
  1,024 and 4,096 rows (no noise, no counting); the best of the three is the
  limit for the engine on this machine;
* engine: ``monte_carlo_counts`` with its default batch size (``"auto"``, the
  size it picks is printed) and with the former fixed default 4,096;
* per-input loop in the style of the original reference implementation: for
  each input, repeat it ``--loop-batch`` (250) times, add fresh noise,
  argmax, count on the host.

Prints noisy samples per second (median over rounds) and the ratios.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--n 10000 --rounds 3] [--device cuda]``
(on a GPU the raw forward also tries batches of 16,384 and 65,536 rows)
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
from rrise_sklearn.sampling import monte_carlo_counts, tuned_batch_size

CANDIDATES = (256, 1024, 4096)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward(module, batch, total):
    reps = max(1, total // len(batch))
    with torch.inference_mode():
        _sync(batch.device)
        t = time.perf_counter()
        for _ in range(reps):
            module(batch).argmax(1)
        _sync(batch.device)
        return reps * len(batch) / (time.perf_counter() - t)


def engine(module, X, n, batch_size, sigma):
    t = time.perf_counter()
    monte_carlo_counts(
        module, X, sigma=sigma, n=n, n_classes=10, batch_size=batch_size, random_state=0
    )
    return len(X) * n / (time.perf_counter() - t)


def per_input_loop(module, X, n, batch_size, sigma, device="cpu"):
    """Reference-style loop: one input at a time, counts on the host."""
    Xt = torch.as_tensor(X).to(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for x in Xt:
            counts = np.zeros(10, dtype=np.int64)
            remaining = n
            while remaining > 0:
                b = min(batch_size, remaining)
                remaining -= b
                batch = x.repeat((b, *([1] * x.ndim)))
                noise = torch.randn_like(batch) * sigma
                pred = module(batch + noise).argmax(1)
                counts += np.bincount(pred.cpu().numpy(), minlength=10)
    return len(X) * n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--loop-batch", type=int, default=250, help="the reference loop's batch")
    ap.add_argument("--models", default="", help="only models whose name contains this text")
    ap.add_argument("--device", default="cpu", help='torch device, e.g. "cuda"')
    args = ap.parse_args()
    dev = torch.device(args.device)
    # a GPU's best batch is larger: try up to 65,536 rows there
    candidates = CANDIDATES + ((16_384, 65_536) if dev.type == "cuda" else ())

    X, _ = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cases = [  # (name, module, inputs): fewer inputs for the slower networks keep the run short
        ("digits MLP (64-256-256-10)", MLP(64, 10).eval(), X[:64]),
        ("small CNN 1x8x8", SmallCNN(64, 10).eval(), X[:16].reshape(-1, 1, 8, 8)),
        ("small CNN 1x28x28", SmallCNN(784, 10).eval(),
         rng.random((8, 1, 28, 28), dtype=np.float32)),
        ("small CNN 3x32x32", SmallCNN(3072, 10, channels=3).eval(),
         rng.random((8, 3, 32, 32), dtype=np.float32)),
    ]  # fmt: skip
    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {dev}{gpu}"
    )
    print(f"n={args.n} rounds={args.rounds} (median); raw forward at batch {candidates}")
    print(
        f"{'model':28s} {'best raw/s':>11s} {'@batch':>6s} {'engine/s':>10s} {'auto':>5s} "
        f"{'eng4096/s':>10s} {'loop/s':>10s} {'eng/best':>8s} {'4096/best':>9s} {'eng/loop':>8s}"
    )
    for name, module, Xm in cases:
        if args.models not in name:
            continue
        module = module.to(dev)
        total = len(Xm) * args.n
        auto = tuned_batch_size(module, torch.as_tensor(Xm).to(dev), total)  # the engine's choice
        raw = {b: [] for b in candidates}
        eng, eng4096, loop = [], [], []
        for _ in range(args.rounds):  # interleaved so machine noise hits all alike
            for b in candidates:
                batch = torch.as_tensor(np.repeat(Xm, -(-b // len(Xm)), axis=0)[:b]).to(dev)
                batch = batch + args.sigma * torch.randn_like(batch)
                raw[b].append(raw_forward(module, batch, total))
            eng.append(engine(module, Xm, args.n, "auto", args.sigma))
            eng4096.append(engine(module, Xm, args.n, 4096, args.sigma))
            loop.append(per_input_loop(module, Xm, args.n, args.loop_batch, args.sigma, dev))
        best_b = max(candidates, key=lambda b: statistics.median(raw[b]))
        r = statistics.median(raw[best_b])
        e, e4, lp = (statistics.median(v) for v in (eng, eng4096, loop))
        print(
            f"{name:28s} {r:11.3g} {best_b:6d} {e:10.3g} {auto:5d} {e4:10.3g} {lp:10.3g} "
            f"{e / r:8.2f} {e4 / r:9.2f} {e / lp:8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
