"""Would the Beta(1/2, 1/2) mixture confidence sequence beat our anytime schedule?

``certify_adaptive`` uses Clopper-Pearson bounds at per-look levels that sum to
alpha (union bound over geometric checkpoints). The optional alternative of
issue #6 is the closed-form mixture ("betting") confidence sequence: with a
Beta(1/2, 1/2) prior the mixture likelihood ratio against p0 is
``B(k + 1/2, n - k + 1/2) / B(1/2, 1/2) / (p0^k (1 - p0)^(n - k))``, a
nonnegative martingale under p0, so by Ville's inequality
``{p0 : ratio < 1/alpha}`` holds at every n at once. This script prints both
lower bounds (on the PhiInv scale, i.e. radius / sigma) at the checkpoints of a
schedule (default: ``certify_adaptive``'s defaults n_start=300, growth=1.3;
max_n=1e5, final_share=0.5, alpha=0.001), for a few observed success rates.
Exact computations, no sampling.

Run: ``.venv/bin/python benchmarks/compare_betting_cs.py [--n-start 300] [--growth 1.3]``
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import betaln

from rrise_sklearn import stats

ALPHA = 0.001


def mixture_lower(k: int, n: int, alpha: float) -> float:
    """Lower end of the Beta(1/2, 1/2) mixture confidence sequence at (k, n)."""

    def excess(p: float) -> float:  # log ratio - log(1/alpha); decreasing in p up to k/n
        log_ratio = betaln(k + 0.5, n - k + 0.5) - betaln(0.5, 0.5)
        return log_ratio - (k * np.log(p) + (n - k) * np.log1p(-p)) - np.log(1 / alpha)

    hi = k / n if k < n else 1 - 1e-15
    lo = 1e-12
    return brentq(excess, lo, hi) if excess(lo) > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-start", type=int, default=300)
    parser.add_argument("--growth", type=float, default=1.3)
    args = parser.parse_args()
    # the schedule certify_adaptive uses (final_share=0.5)
    checkpoints, levels = stats._anytime_schedule(args.n_start, args.growth, 100_000, ALPHA, 0.5)
    print(f"checkpoints n_start={args.n_start}, growth={args.growth}: {len(checkpoints)} looks")
    rates = (1.0, 0.999, 0.99, 0.9)
    print(f"PhiInv(lower bound), alpha={ALPHA}: union-bound Clopper-Pearson / mixture CS")
    print(f"{'n':>8s}" + "".join(f"{'k/n=' + format(r, 'g'):>22s}" for r in rates))
    worse = 0
    for n, level in zip(checkpoints, levels, strict=True):
        cells = []
        for r in rates:
            k = int(round(r * n))
            z_cp = float(sps.norm.ppf(stats.clopper_pearson_lower(k, n, level)))
            z_mix = float(sps.norm.ppf(mixture_lower(k, n, ALPHA)))
            worse += z_mix < z_cp
            cells.append(f"{z_cp:10.3f} /{z_mix:7.3f}")
        print(f"{n:>8d}" + "".join(f"{c:>22s}" for c in cells))
    total = len(checkpoints) * len(rates)
    print(f"mixture bound below the union-bound one in {worse} of {total} cells")


if __name__ == "__main__":
    main()
