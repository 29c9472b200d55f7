"""Prototype check of a candidate calibration: a margin at the prediction cap.

Not what the library does (see benchmarks/README.md, session 19). The candidate keeps the cap
split's two groups (inputs predicted at the cap, the others) and:

* an input at the cap deducts ``D = max(c, tau_cap)`` (``tau_cap``: its group's own conformal
  threshold, as now), a fixed margin ``c`` at least;
* the inputs below the cap get one threshold ``tau_b``: the conformal order statistic of all
  ``m`` calibration scores, where a score at the cap is replaced by ``+inf`` if it exceeds
  ``max(c, q)`` (``q``: the ``ceil((1 - alpha) m_cap)``-th smallest score at the cap) and by
  ``-inf`` otherwise.

The guarantee is marginal: ``P(wrong) <= alpha`` over the calibration draw and the new input
(argument in the README's session-19 block), while the group at the cap keeps its own; the
inputs below the cap can be wrong more often than ``alpha`` among themselves. This script
draws exchangeable synthetic scores from four designs (one adversarial: scores at the cap
mostly below ``c``, so that the budget goes to the other group) and prints the empirical
``P(wrong)`` with two standard errors, overall and per group.

Run: ``.venv/bin/python benchmarks/lever_cap_margin.py [--trials 40000] [--broken]`` (about
half a minute; ``--broken`` drops the misses at the cap from the count, and the first design
then exceeds alpha by about 1.6x).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from rrise_sklearn.calibration import conformal_threshold


def deploy(
    s: np.ndarray, cap: np.ndarray, c: float, alpha: float, broken: bool = False
) -> tuple[float, float, int]:
    """The deduction at the cap, the threshold below it and the misses at the cap counted.

    From calibration scores ``s`` and their group (``cap``: predicted at the cap).
    ``broken``: the misses at the cap are not counted (all ``-inf``), on purpose.
    """
    sc = np.sort(s[cap])
    tau_own = sc[math.ceil((1 - alpha) * (len(sc) + 1)) - 1]
    q = sc[math.ceil((1 - alpha) * len(sc)) - 1]
    miss = (s > max(c, q)) & (not broken)
    t = np.where(cap, np.where(miss, np.inf, -np.inf), s)
    return max(c, float(tau_own)), conformal_threshold(t, alpha), int((cap & miss).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=40_000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--m", type=int, default=400, help="calibration inputs")
    ap.add_argument("--broken", action="store_true",
                    help="do not count the misses at the cap (wrong on purpose)")  # fmt: skip
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    alpha, m = args.alpha, args.m
    designs = [
        ("cap scores around c", 0.6, lambda n: rng.normal(0.1, 0.05, n),
         lambda n: rng.normal(0, 1, n), 0.1),
        ("cap scores mostly below c", 0.6, lambda n: rng.normal(-0.2, 0.1, n),
         lambda n: rng.exponential(1, n), 0.1),
        ("heavy tail at the cap", 0.3, lambda n: rng.standard_t(2, n) * 0.1,
         lambda n: rng.normal(0, 1, n), 0.05),
        ("c = 0", 0.5, lambda n: rng.normal(-0.5, 0.3, n), lambda n: rng.normal(0, 1, n), 0.0),
    ]  # fmt: skip
    for name, p_cap, at_cap, below, c in designs:
        wrong = np.zeros(2)
        seen = np.zeros(2)
        for _ in range(args.trials):
            cap = rng.random(m + 1) < p_cap
            s = np.where(cap, at_cap(m + 1), below(m + 1))
            if min(cap.sum(), (~cap).sum()) < 2 / alpha:  # both groups large (the bag's sizes)
                continue
            d, tau_b, _ = deploy(s[:m], cap[:m], c, alpha, args.broken)
            g = 0 if cap[m] else 1
            seen[g] += 1
            wrong[g] += s[m] > (d if g == 0 else tau_b)
        n = seen.sum()
        se = math.sqrt(alpha * (1 - alpha) / n)
        print(
            f"{name}: P(wrong) {wrong.sum() / n:.4f} (alpha {alpha}, +-{2 * se:.4f}); at the "
            f"cap {wrong[0] / seen[0]:.4f}, below {wrong[1] / seen[1]:.4f}"
        )


if __name__ == "__main__":
    main()
