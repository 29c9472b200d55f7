"""Peak memory of certifying CIFAR-shaped inputs (3x32x32) with n = 100,000 noise samples.

Each configuration runs in a fresh subprocess. A helper thread samples the
process's resident set size (``/proc/self/statm``) every 5 ms; the figure is the
peak during the call minus the resident size just before it, i.e. the memory
the certification itself needs on top of the model and the data.

Configurations:

* ``engine``: ``SmoothedClassifier.certify`` (n0 = 100, n = 100,000, one input)
  with the default ``mc_batch_size="auto"`` and with fixed batches of 256 and
  4,096 rows; noise is drawn per batch, so memory is bounded by the batch;
* ``materialize``: a loop that builds all n noisy copies of the input as one
  tensor and then classifies them in batches of 4,096 (the pattern of tools
  that materialize every copy); its noise tensor alone is
  n x 3,072 x 4 bytes = 1.23 GB.

The network is ``rrise_sklearn.nets.SmallCNN(channels=3)`` with random weights
(memory does not depend on the weights).

Run: ``.venv/bin/python benchmarks/bench_memory.py [--n 100000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` after the block."""

    def __enter__(self) -> PeakRSS:
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def child(config: str, n: int) -> None:
    import numpy as np
    import torch

    from rrise_sklearn import SmoothedClassifier
    from rrise_sklearn.nets import SmallCNN

    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    batch = {"engine-auto": "auto", "engine-256": 256, "engine-4096": 4096}.get(config, 4096)
    clf = SmoothedClassifier(
        SmallCNN(3 * 32 * 32, 10, channels=3),
        classes=list(range(10)),
        sigma=0.25,
        n0=100,
        n=n,
        mc_batch_size=batch,
        random_state=0,
    ).initialize()
    clf.certify(x[:1].copy(), n=200)  # warm-up (shape recorded, kernels loaded)
    t0 = time.perf_counter()
    if config.startswith("engine"):
        with PeakRSS() as mem:
            res = clf.certify(x)
        extra = {"radius": float(res.radius[0])}
    else:
        module = clf.module_.eval()
        with PeakRSS() as mem, torch.inference_mode():
            xt = torch.as_tensor(x)
            noisy = xt.repeat(n, 1, 1, 1) + 0.25 * torch.randn(n, 3, 32, 32)
            counts = torch.zeros(10, dtype=torch.long)
            for i in range(0, n, 4096):
                counts += torch.bincount(module(noisy[i : i + 4096]).argmax(1), minlength=10)
        extra = {"top_count": int(counts.max())}
    print(
        json.dumps(
            {
                "config": config,
                "peak_extra_gb": (mem.peak - mem.start) / 1e9,
                "seconds": time.perf_counter() - t0,
                **extra,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--configs", default="engine-auto,engine-256,engine-4096,materialize")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n)
        return
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# certify one 3x32x32 input, SmallCNN(channels=3), n0=100, n={args.n:,}")
    print(f"{'configuration':<14} {'peak extra RSS (GB)':>20} {'seconds':>9}")
    for config in args.configs.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", config, "--n", str(args.n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{config:<14} {row['peak_extra_gb']:>20.3f} {row['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
