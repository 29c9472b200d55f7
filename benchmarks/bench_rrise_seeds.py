"""How much of an RRISE comparison is training noise: the mean gap over training seeds.

Same data, smoothed classifier, targets and calibration Monte Carlo as
``bench_rrise.py``; for each training seed, the mean certified-accuracy gap to
Monte Carlo CERTIFY (n = 10,000) over r in {0, 0.25, 0.5, 0.75} of
(a) the default before 2026-11-23 (one network trained on the held-out training
part), (b) the same with the base classifier's 808 training inputs added to the
surrogate's training set (a headroom-score row was removed with that option); then
(c) ensembles (``MeanLogProbEnsemble``) of the trained networks, calibrated as
one network (radius score) on the same calibration draw: one value per ensemble.

Run: ``.venv/bin/python benchmarks/bench_rrise_seeds.py [--sigmas 0.25 0.5] [--seeds 0 1 2]``;
``--members 3`` runs only the estimator's own ensemble (``n_members=3``, base inputs too);
``--members 3 --base-only`` trains it on the base classifier's inputs alone and
calibrates it on all 632 held-out inputs (no held-out input is spent on
training), and checks its certificates against a 100,000-sample reference;
``--refine N`` then recalibrates the same ensemble with a second Monte Carlo
stage (``n_refine=N`` more samples for the 10 % of calibration inputs with the
largest scores) and reports both, paired.
(``--quick`` for a smoke run)
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
from bench_rrise import wrong_rate
from sklearn.model_selection import train_test_split

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.demo import load_demo_data
from rrise_sklearn.metrics import certified_accuracy
from rrise_sklearn.nets import MLP
from rrise_sklearn.surrogate import MeanLogProbEnsemble

RADII = [0.0, 0.25, 0.5, 0.75]


def gaps_at(
    sigma: float,
    seeds: list[int],
    n: int,
    n_targets: int,
    n_aug: int,
    n_cal: int,
    members: int = 0,
    base_only: bool = False,
    refine: int = 0,
) -> dict:
    """Mean gap (points) of each variant for each training seed at one sigma.

    With ``members > 0`` only ``RRISESurrogate(n_members=members)`` trained with
    the base inputs too is run (the estimator's own ensemble); with
    ``base_only`` it is trained on the base inputs alone and calibrated on all
    held-out inputs.
    """
    data = load_demo_data(0)
    X_base, y_base = data["base"]
    X_rr, _ = data["rrise"]
    X_test, y_test = data["test"]
    clf = SmoothedClassifier(
        MLP, sigma=sigma, max_epochs=60, lr=1e-3, batch_size=64, n0=100, n=n, alpha=0.001,
        random_state=0,
    ).fit(X_base, y_base)  # fmt: skip
    mc = clf.certify(X_test)
    acc_mc = certified_accuracy(y_test, mc.prediction, mc.radius, RADII)
    X_b, c_b = RRISESurrogate(
        clf, n_targets=n_targets, n_augment=n_aug, random_state=1
    ).compute_targets(X_base)

    def gap(sur):
        res = sur.certify(X_test)
        acc = certified_accuracy(y_test, res.prediction, res.radius, RADII)
        return float(np.mean(100 * (acc_mc - acc)))

    def ensemble_gap(nets_):
        """Calibrate and certify the ensemble of trained estimators' networks as one."""
        ens = copy.deepcopy(nets_[0])
        ens.module_ = MeanLogProbEnsemble([net.module_ for net in nets_])
        return gap(ens.conformalize(X_cal, counts=c_cal))

    if members and base_only:
        name = f"n_members={members}, base only"
        c_all = clf.sample_counts(X_rr, n_cal, random_state=777, noise_sharing=1)
        ref = clf.sample_counts(X_test, 10 * n, random_state=12345, noise_sharing=1)
        out = {name: []}
        if refine:
            out[f"  + n_refine={refine:.0e}"] = []
        for seed in seeds:
            t0 = time.perf_counter()
            ens = RRISESurrogate(
                clf, n_members=members, n_calibration=n_cal, n_refine=None,
                alpha_conf=0.01, max_epochs=30, random_state=seed,
            ).fit(X_rr, train_inputs=X_b, train_counts=c_b, calibration_counts=c_all)  # fmt: skip
            variants = [(name, ens, time.perf_counter() - t0)]
            if refine:
                t0 = time.perf_counter()
                ref_ens = copy.deepcopy(ens).set_params(n_refine=refine)
                ref_ens.conformalize(X_rr, counts=c_all)  # second stage drawn here
                variants.append((f"  + n_refine={refine:.0e}", ref_ens, time.perf_counter() - t0))
            for key, est, sec in variants:
                out[key].append(gap(est))
                wrong, pos = wrong_rate(est.certify(X_test), ref, clf.classes_, sigma)
                print(
                    f"sigma={sigma} seed={seed}: {key.strip()} {out[key][-1]:.2f} "
                    f"(tau {np.round(est.threshold_, 3)}; wrong {wrong}/{pos} against n={10 * n}; "
                    f"{sec:.0f} s)",
                    flush=True,
                )
        return out

    # the other variants train on part of the held-out inputs and calibrate on the rest
    X_fit, X_cal = train_test_split(X_rr, test_size=0.4, random_state=0)
    X_f, c_f = RRISESurrogate(
        clf, n_targets=n_targets, n_augment=n_aug, random_state=0
    ).compute_targets(X_fit)
    c_cal = clf.sample_counts(X_cal, n_cal, random_state=777, noise_sharing=1)

    if members:
        name = f"n_members={members}, base too"
        out = {name: []}
        for seed in seeds:
            ens = RRISESurrogate(
                clf, n_members=members, n_calibration=n_cal, n_refine=None,
                alpha_conf=0.01, max_epochs=30, random_state=seed,
            ).fit(
                X_cal,
                train_inputs=np.concatenate([X_b, X_f]),
                train_counts=np.concatenate([c_b, c_f]),
                calibration_counts=c_cal,
            )  # fmt: skip
            out[name].append(gap(ens))
            print(f"sigma={sigma} seed={seed}: {name} {out[name][-1]:.2f}", flush=True)
        return out

    out = {"default": [], "base inputs too": []}
    nets = {"default": [], "base inputs too": []}
    for seed in seeds:
        common = dict(
            n_calibration=n_cal, n_refine=None, n_members=1, alpha_conf=0.01, max_epochs=30,
            random_state=seed,
        )  # fmt: skip
        sur = RRISESurrogate(clf, **common).fit(
            X_cal, train_inputs=X_f, train_counts=c_f, calibration_counts=c_cal
        )
        out["default"].append(gap(sur))
        nets["default"].append(sur)
        both = RRISESurrogate(clf, **common).fit(
            X_cal,
            train_inputs=np.concatenate([X_b, X_f]),
            train_counts=np.concatenate([c_b, c_f]),
            calibration_counts=c_cal,
        )
        out["base inputs too"].append(gap(both))
        nets["base inputs too"].append(both)
        print(
            f"sigma={sigma} seed={seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in out.items()),
            flush=True,
        )
    # ensembles: one value each, stored as a one-element list
    out["ensemble: defaults"] = [ensemble_gap(nets["default"])]
    out["ensemble: base too"] = [ensemble_gap(nets["base inputs too"])]
    out["ensemble: all"] = [ensemble_gap(nets["default"] + nets["base inputs too"])]
    print(
        f"sigma={sigma} ensembles over seeds {seeds}: "
        + ", ".join(f"{k[10:]} {v[0]:.2f}" for k, v in out.items() if k.startswith("ensemble")),
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--members", type=int, default=0, help="only the estimator's own ensemble")
    ap.add_argument(
        "--base-only",
        action="store_true",
        help="with --members: train on the base inputs alone, calibrate on all held-out inputs",
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=0,
        help="with --members --base-only: also recalibrate with n_refine=REFINE (paired)",
    )
    ap.add_argument("--quick", action="store_true", help="small sample sizes (smoke run)")
    args = ap.parse_args()
    sizes = (1_000, 200, 2, 2_000) if args.quick else (10_000, 2_000, 32, 100_000)
    table = {
        s: gaps_at(
            s,
            args.seeds,
            *sizes,
            members=args.members,
            base_only=args.base_only,
            refine=args.refine,
        )
        for s in args.sigmas
    }
    print(f"\nmean gap r<=0.75 (points) over training seeds {args.seeds}:")
    print(
        f"{'variant':24s}"
        + "".join(f"{'sigma=' + format(s, 'g'):>14s}" for s in table)
        + "      both"
    )
    for name in next(iter(table.values())):
        means = [np.mean(table[s][name]) for s in table]
        print(f"{name:24s}" + "".join(f"{m:14.2f}" for m in means) + f"{np.mean(means):10.2f}")


if __name__ == "__main__":
    main()
