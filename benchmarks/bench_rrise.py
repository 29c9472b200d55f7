"""RRISE against Monte Carlo CERTIFY on scikit-learn's bundled digits.

For each sigma: certified accuracy at radii {0, 0.25, 0.5, 0.75, 1.0} and ACR of
(a) Monte Carlo CERTIFY (n0=100, n=10,000, alpha=0.001), (b) RRISE with each
option (Mondrian, PAC threshold, training on the base classifier's inputs too
or alone; the headroom / probability scores and the probit loss measured here
until 2026-11-23 have left the estimator since),
(c) the uncalibrated Jensen-Shannon baseline (Accelerated Smoothing); the
empirical rate of wrong positive-radius certificates on the test split against a
large-n Monte Carlo reference (class differs from the reference's top class, or
radius above sigma * PhiInv of the reference frequency); per-query time of (a)
and (b), their ratio, and the break-even number of queries.

The estimator's defaults of 2026-11-23 are measured by ``bench_rrise_defaults.py``;
here every setting is explicit (one network, no second calibration stage, the
first row as the defaults were before). The surrogate is trained on part of
the held-out inputs and calibrated on the rest (a variant also trains it on the
base classifier's inputs; two more train it on the base classifier's inputs
alone, as one network and as an ensemble of three, and calibrate it on all
held-out inputs). The
variants share one set of training targets and one calibration Monte Carlo run
(each is still calibrated on its own predicted class); those that differ only in
the calibration reuse the default's trained network.

Run: ``.venv/bin/python benchmarks/bench_rrise.py [--sigmas 0.25 0.5] [--quick]``
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch
from scipy import stats as sps
from sklearn.model_selection import train_test_split

from rrise_sklearn import CertificationResult, RRISESurrogate, SmoothedClassifier
from rrise_sklearn.demo import load_demo_data
from rrise_sklearn.metrics import average_certified_radius, certified_accuracy
from rrise_sklearn.nets import MLP, JensenShannonLoss
from rrise_sklearn.stats import max_certifiable_radius

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


def wrong_rate(res, ref_counts, classes, sigma):
    """Rate of positive-radius certificates contradicted by the reference Monte Carlo."""
    n_ref = ref_counts.sum(1)
    ref_top = classes[np.argmax(ref_counts, axis=1)]
    idx = np.searchsorted(classes, np.where(res.radius > 0, res.prediction, classes[0]))
    p_ref = ref_counts[np.arange(len(idx)), idx] / n_ref
    with np.errstate(divide="ignore"):
        r_ref = sigma * sps.norm.ppf(np.clip(p_ref, 0, 1))
    pos = res.radius > 0
    bad = pos & ((res.prediction != ref_top) | (res.radius > r_ref))
    return int(bad.sum()), int(pos.sum())


def line(name, res, t_query, y_test, ref, classes, sigma):
    """Print one row of the table and return the certified accuracies."""
    acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
    acr = average_certified_radius(y_test, res.prediction, res.radius)
    w, pos = wrong_rate(res, ref, classes, sigma)
    print(
        f"{name:32s}"
        + "".join(f"{100 * a:8.1f}" for a in acc)
        + f"{acr:8.3f}{w:>5d}/{pos:<4d}{t_query:10.2e}"
    )
    return acc


def bench_sigma(sigma: float, n: int, n_targets: int, n_aug: int, n_cal: int, n_ref: int) -> None:
    """All certifiers at one sigma: one table."""
    data = load_demo_data(0)
    X_base, y_base = data["base"]
    X_rr, _ = data["rrise"]
    X_test, y_test = data["test"]
    clf = SmoothedClassifier(
        MLP,
        sigma=sigma,
        max_epochs=60,
        lr=1e-3,
        batch_size=64,
        n0=100,
        n=n,
        alpha=0.001,
        random_state=0,
    ).fit(X_base, y_base)
    t0 = time.perf_counter()
    mc = clf.certify(X_test)
    t_mc = (time.perf_counter() - t0) / len(X_test)
    ref = clf.sample_counts(X_test, n_ref, random_state=12345, noise_sharing=1)

    X_fit, X_cal = train_test_split(X_rr, test_size=0.4, random_state=0)
    t0 = time.perf_counter()
    # default: train on part of the held-out inputs (each with noisy copies), calibrate
    # on the rest; variant: also train on the base classifier's inputs
    X_tr_fit, c_tr_fit = RRISESurrogate(
        clf, n_targets=n_targets, n_augment=n_aug, random_state=0
    ).compute_targets(X_fit)  # (only the targets: n_members etc. play no part here)
    t_targets_fit = time.perf_counter() - t0
    X_tr_base, c_tr_base = RRISESurrogate(
        clf, n_targets=n_targets, n_augment=n_aug, random_state=1
    ).compute_targets(X_base)
    t_targets = time.perf_counter() - t0
    X_tr = np.concatenate([X_tr_base, X_tr_fit])
    c_tr = np.concatenate([c_tr_base, c_tr_fit])
    t0 = time.perf_counter()
    c_cal = clf.sample_counts(X_cal, n_cal, random_state=777, noise_sharing=1)
    t_cal_mc = time.perf_counter() - t0
    # the base-only variants calibrate on every held-out input: the surrogate-training
    # part gets its own calibration draw
    t0 = time.perf_counter()
    X_all = np.concatenate([X_cal, X_fit])
    c_all = np.concatenate(
        [c_cal, clf.sample_counts(X_fit, n_cal, random_state=778, noise_sharing=1)]
    )
    t_cal_all = t_cal_mc + time.perf_counter() - t0

    common = dict(
        n_calibration=n_cal, n_refine=None, n_members=1, alpha_conf=0.01, max_epochs=30,
        random_state=0,
    )  # fmt: skip
    # variants that need their own training: (name, params, training inputs/counts)
    trained = {
        "RRISE radius score (default)": (dict(), X_tr_fit, c_tr_fit),
        "RRISE trained on base inputs too": (dict(), X_tr, c_tr),
        "RRISE base inputs only, cal. all": (dict(), X_tr_base, c_tr_base),
        "  same, n_members=3": (dict(n_members=3), X_tr_base, c_tr_base),
        "JS baseline, uncalibrated": (dict(criterion=JensenShannonLoss), X_tr_fit, c_tr_fit),
    }
    # variants of the default that differ only in the calibration (no retraining)
    recalibrated = {
        "RRISE Mondrian": dict(mondrian="class"),
        "RRISE PAC (delta=0.1)": dict(pac_delta=0.1),
        "soft-CE, uncalibrated": None,
    }
    ceiling = float(max_certifiable_radius(n, 0.001, sigma))
    print(
        f"\nsigma={sigma}: {len(X_base)} base / {len(X_fit)} held-out surrogate-train "
        f"(x{n_aug + 1} with noisy copies, "
        f"{n_targets}-sample targets) / {len(X_cal)} calibration (n_cal={n_cal}) / "
        f"{len(X_test)} test; reference n={n_ref}; MC ceiling {ceiling:.3f}, RRISE cap "
        f"{float(max_certifiable_radius(n_cal, 0.001, sigma)):.3f}"
    )
    header = "".join(f"{'r=' + format(r, 'g'):>8s}" for r in RADII)
    print(f"{'certifier':32s}{header}{'ACR':>8s}{'wrong':>10s}{'s/query':>10s}")

    acc_mc = line(f"MC CERTIFY n={n}", mc, t_mc, y_test, ref, clf.classes_, sigma)

    def report(name, sur, t_fixed_targets, t_cal=t_cal_mc):
        calibrated = "uncalibrated" not in name
        t0 = time.perf_counter()
        res = sur.certify(X_test) if calibrated else uncalibrated(sur, X_test)
        t_q = (time.perf_counter() - t0) / len(X_test)
        acc = line(name, res, t_q, y_test, ref, clf.classes_, sigma)
        gap = np.mean(100 * (acc_mc[:4] - acc[:4]))
        if calibrated:
            fixed = t_fixed_targets + sur.amortization_["training"] + t_cal
            print(
                f"{'':32s}mean gap r<=0.75: {gap:.2f} pts; tau={np.round(sur.threshold_, 3)}"
                f"; speedup {t_mc / t_q:.0f}x; break-even "
                f"{fixed / (t_mc - t_q):.0f} queries (one-time {fixed:.0f} s)"
            )
        else:
            print(f"{'':32s}mean gap r<=0.75: {gap:.2f} pts (no guarantee)")

    default = None
    for name, (kw, X_t, c_t) in trained.items():
        sur = RRISESurrogate(clf, **{**common, **kw})
        if X_t is X_tr_base:  # all held-out inputs calibrate
            sur.fit(X_all, train_inputs=X_t, train_counts=c_t, calibration_counts=c_all)
            report(name, sur, t_targets - t_targets_fit, t_cal_all)
        else:
            sur.fit(X_cal, train_inputs=X_t, train_counts=c_t, calibration_counts=c_cal)
            report(name, sur, t_targets if X_t is X_tr else t_targets_fit)
        if default is None:
            default = sur
            for name_r, kw_r in recalibrated.items():
                var = copy.deepcopy(default)
                if kw_r is not None:
                    var.set_params(**kw_r).conformalize(X_cal, counts=c_cal)
                report(name_r, var, t_targets_fit)


def uncalibrated(sur: RRISESurrogate, X: np.ndarray) -> CertificationResult:
    """The uncalibrated baseline (no guarantee): radius ``sigma * PhiInv(max predict_proba)``."""
    proba = sur.predict_proba(X)
    z = sps.norm.ppf(proba.max(axis=1))
    radius = np.where(z > 0, sur.sigma_ * z, 0.0)
    abstain = sur.smoothed_.abstain_label_
    prediction = np.where(radius > 0, sur.classes_[proba.argmax(axis=1)], abstain)
    return CertificationResult(prediction, radius, sps.norm.cdf(z), abstain_label=abstain)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--n-ref", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="small sample sizes (smoke run)")
    args = ap.parse_args()
    n, n_targets, n_aug, n_cal = (10_000, 2_000, 32, 100_000)
    if args.quick:
        n, n_targets, n_aug, n_cal, args.n_ref = 1_000, 200, 2, 2_000, 5_000
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    for sigma in args.sigmas:
        bench_sigma(sigma, n, n_targets, n_aug, n_cal, args.n_ref)


if __name__ == "__main__":
    main()
