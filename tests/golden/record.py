"""The surrogate's golden record: certificates, thresholds and model files to compare with.

Fits the surrogate of the known-answer fixture (``tests/test_surrogate.py::linear_setup``)
in each grouping mode (``mondrian`` False, ``"class"``, ``"cap"``) and the surrogate of
``rrise demo --quick``, then records for each: the certificates of fixed test inputs
(prediction, radius, p_lower) and the calibration (thresholds, scores, refinement levels,
prediction cap), in ``NAME-refit.npz``.

Beside them, ``NAME.zip`` is a model file written by version 0.1 (format 1) and
``NAME.npz`` what it certified then: the fixture of "a model file of an earlier version
certifies exactly as it did". They are never rewritten (``--write`` leaves them).

Usage, from the repository root::

    python tests/golden/record.py --write   # (re)record the refits: only when a change is
                                            # *meant* to move them
    python tests/golden/record.py --check   # refit everything and compare bitwise

``--check`` is the acceptance check of a behaviour-preserving change (it refits, about a
minute on 2 cores). The test suite checks the cheaper half on every run
(``tests/test_golden.py``): the recorded model files load to the recorded certificates.
Bitwise equality of refits holds on one machine and torch build; another CPU may round
float32 matrix products differently.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/ for conftest's KnownLinear

MODES = {"pooled": False, "class": "class", "cap": "cap"}
FIELDS = ("prediction", "radius", "p_lower")


def _draw(kl, size, rng):
    dist = rng.uniform(-1.2, 1.2, size=size)
    return kl.points_at_distance(dist, seed=int(rng.integers(2**31)))


def linear_surrogate(mondrian):
    """The known-answer fixture's surrogate (as ``linear_setup``), calibrated with ``mondrian``."""
    from conftest import KnownLinear
    from sklearn.frozen import FrozenEstimator

    from rrise_sklearn import RRISESurrogate

    kl = KnownLinear()
    smoothed = kl.smoothed(sigma=0.5, n=2000, alpha=0.001, random_state=0)
    rng = np.random.default_rng(0)
    X = _draw(kl, 400, rng)
    sur = RRISESurrogate(
        FrozenEstimator(smoothed),
        n_members=1,
        n_targets=None,
        n_calibration=None,
        n_refine=4000,
        alpha_conf=0.1,
        n_augment=1,
        max_epochs=30,
        lr=1e-2,
        mondrian=mondrian,
        random_state=0,
    ).fit(X)
    X_test = _draw(kl, 200, np.random.default_rng(7))
    return sur, X_test


def demo_surrogate():
    """The surrogate of ``rrise demo --quick`` (same data, settings and seeds)."""
    from rrise_sklearn import RRISESurrogate, SmoothedClassifier
    from rrise_sklearn.demo import DemoConfig, load_demo_data
    from rrise_sklearn.nets import MLP

    cfg = DemoConfig.quick()
    data = load_demo_data(cfg.seed)
    clf = SmoothedClassifier(
        MLP, sigma=cfg.sigma, max_epochs=cfg.epochs, lr=1e-3, batch_size=64, n0=cfg.n0,
        n=cfg.n, alpha=cfg.alpha, random_state=cfg.seed,
    ).fit(*data["base"])  # fmt: skip
    sur = RRISESurrogate(
        clf, alpha_conf=cfg.alpha_conf, random_state=cfg.seed, **cfg.surrogate
    ).fit(data["rrise"][0])
    return sur, data["test"][0]


def settings():
    for name, mondrian in MODES.items():
        yield f"linear-{name}", (lambda m=mondrian: linear_surrogate(m))
    yield "demo-quick", demo_surrogate


def record_of(sur, X_test) -> dict:
    res = sur.certify(X_test)
    rec = {f: np.asarray(getattr(res, f)) for f in FIELDS}
    rec["X_test"] = np.asarray(X_test)
    rec["threshold"] = np.atleast_1d(np.asarray(sur.threshold_, dtype=np.float64))
    rec["calibration_scores"] = np.asarray(sur.calibration_scores_)
    rec["refine_levels"] = np.asarray(sur.refine_levels_)
    rec["prediction_cap"] = np.asarray([sur.prediction_cap_])
    return rec


def compare(name: str, got: dict, want: dict) -> list[str]:
    bad = []
    for key, w in want.items():
        g = got.get(key)
        if g is not None and g.shape == w.shape and g.dtype == w.dtype:
            if np.array_equal(g, w, equal_nan=True):
                continue
            d = np.abs(g.astype(np.float64) - w.astype(np.float64))
            bad.append(f"{name}: {key} differs (max |diff| {np.nanmax(d):.3g})")
        else:
            what = "missing" if g is None else f"{g.dtype}{g.shape} vs {w.dtype}{w.shape}"
            bad.append(f"{name}: {key} differs ({what})")
    return bad


def load_record_model(name: str, quiet: bool = True):
    """The recorded model file of one setting (the fixture's base network is given back);
    ``quiet`` hides the warning that format-1 files carry."""
    from rrise_sklearn import load
    from rrise_sklearn.nets import LinearModel

    module = LinearModel(5, 2) if name.startswith("linear") else None
    with warnings.catch_warnings():  # recorded in format 1: "no digest" is expected
        if quiet:
            warnings.filterwarnings("ignore", message=".*model file of format 1")
        return load(os.path.join(HERE, f"{name}.zip"), module=module)


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(2)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    bad = []
    for name, make in settings():
        sur, X_test = make()
        got = record_of(sur, X_test)
        path = os.path.join(HERE, f"{name}-refit.npz")
        if args.write:
            np.savez(path, **got)
            print(f"{name}: recorded {len(X_test)} certificates, thresholds {got['threshold']}")
            continue
        problems = compare(name, got, dict(np.load(path)))
        # the model file of the earlier version loads to what it certified then
        want = dict(np.load(os.path.join(HERE, f"{name}.npz")))
        old = load_record_model(name).certify(want["X_test"])
        problems += compare(
            f"{name} (recorded model file)",
            {f: np.asarray(getattr(old, f)) for f in FIELDS},
            {f: want[f] for f in FIELDS},
        )
        print(f"{name}: {'equal' if not problems else 'DIFFERENT'}")
        bad += problems
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
