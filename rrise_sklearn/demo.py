"""The main job: ``rrise demo`` on scikit-learn's bundled digits (nothing downloaded)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import stats
from .callbacks import EpochProgress
from .metrics import abstain_rate, average_certified_radius, certified_accuracy
from .nets import MLP
from .smoothing import SmoothedClassifier
from .surrogate import RRISESurrogate

__all__ = ["DemoConfig", "load_demo_data", "run_demo"]

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class DemoConfig:
    """Settings of the demo; ``quick()`` is the smoke-run variant.

    The surrogate's settings are ``None`` in the full demo: it shows
    ``RRISESurrogate``'s defaults, as a user gets them.
    """

    sigma: float = 0.25
    epochs: int = 60
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    alpha_conf: float = 0.01
    seed: int = 0
    radii: tuple = field(default=RADII)
    surrogate: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw: Any) -> DemoConfig:
        small = dict(
            n_targets=200,
            n_augment=2,
            n_calibration=1_000,
            n_refine=5_000,
            n_members=2,
            max_epochs=10,
        )
        return cls(epochs=15, n0=50, n=1_000, alpha_conf=0.05, surrogate=small, **kw)


def load_demo_data(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits scaled to [0, 1], split into base-training, RRISE calibration and test.

    The three parts are disjoint. The surrogate trains on the base-training inputs
    (``RRISESurrogate``'s default), so its calibration inputs train neither network.
    """
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_base, X_rest, y_base, y_rest = train_test_split(
        X, y, train_size=0.45, random_state=seed, stratify=y
    )
    X_rrise, X_test, y_rrise, y_test = train_test_split(
        X_rest, y_rest, test_size=0.36, random_state=seed, stratify=y_rest
    )
    return {"base": (X_base, y_base), "rrise": (X_rrise, y_rrise), "test": (X_test, y_test)}


def _row(name: str, values: list[str], width: int = 12) -> str:
    return f"{name:<28s}" + "".join(f"{v:>{width}s}" for v in values)


def run_demo(
    *,
    quick: bool = False,
    sigma: float = 0.25,
    out: str | None = "rrise_demo.png",
    seed: int = 0,
    print_fn: Any = print,
) -> dict:
    """Train, certify with Monte Carlo and with RRISE, print the comparison table.

    Returns the figures as a dict (used by the tests and the README).
    """
    cfg = DemoConfig.quick(sigma=sigma, seed=seed) if quick else DemoConfig(sigma=sigma, seed=seed)
    data = load_demo_data(seed)
    X_base, y_base = data["base"]
    X_rrise, _ = data["rrise"]
    X_test, y_test = data["test"]
    print_fn(
        f"digits (8x8, pixels scaled to [0, 1]): {len(X_base)} base-training, "
        f"{len(X_rrise)} held out for the surrogate's calibration, {len(X_test)} test inputs; "
        f"sigma={cfg.sigma}, alpha={cfg.alpha}, alpha_conf={cfg.alpha_conf}"
    )

    t0 = time.perf_counter()
    clf = SmoothedClassifier(
        MLP,
        sigma=cfg.sigma,
        max_epochs=cfg.epochs,
        lr=1e-3,
        batch_size=64,
        n0=cfg.n0,
        n=cfg.n,
        alpha=cfg.alpha,
        random_state=cfg.seed,
        callbacks=[("progress", EpochProgress("1/4 training the base MLP with noise"))],
    ).fit(X_base, y_base)
    t_train = time.perf_counter() - t0

    clf.set_params(verbose=1)  # Monte Carlo progress bars from here on
    t0 = time.perf_counter()
    mc = clf.certify(X_test)
    t_mc = (time.perf_counter() - t0) / len(X_test)

    # the defaults: the surrogate trains on the base network's training inputs (kept by
    # fit) and all of X_rrise calibrates it
    sur = RRISESurrogate(
        clf,
        alpha_conf=cfg.alpha_conf,
        random_state=cfg.seed,
        callbacks=[("progress", EpochProgress("3/4 training the RRISE surrogate"))],
        **cfg.surrogate,
    )
    sur.fit(X_rrise)
    t0 = time.perf_counter()
    rr = sur.certify(X_test)
    t_rr = (time.perf_counter() - t0) / len(X_test)
    clf.set_params(verbose=0)

    amort = sur.amortization_
    fixed = amort["targets"] + amort["training"] + amort["calibration"]
    break_even = fixed / (t_mc - t_rr) if t_mc > t_rr else float("inf")
    ceiling = float(stats.max_certifiable_radius(cfg.n, cfg.alpha, cfg.sigma))
    acc_mc = certified_accuracy(y_test, mc.prediction, mc.radius, list(cfg.radii))
    acc_rr = certified_accuracy(y_test, rr.prediction, rr.radius, list(cfg.radii))
    base_acc = float(np.mean(clf.base_predict(X_test) == y_test))
    figures = {
        "base_clean_accuracy": base_acc,
        "radii": list(cfg.radii),
        "certified_accuracy_mc": acc_mc.tolist(),
        "certified_accuracy_rrise": acc_rr.tolist(),
        "abstain_mc": abstain_rate(mc.radius),
        "abstain_rrise": abstain_rate(rr.radius),
        "acr_mc": average_certified_radius(y_test, *mc),
        "acr_rrise": average_certified_radius(y_test, *rr),
        "seconds_per_query_mc": t_mc,
        "seconds_per_query_rrise": t_rr,
        "speedup": t_mc / t_rr,
        "one_time_seconds": fixed,
        "break_even_queries": break_even,
        "train_seconds": t_train,
        "ceiling": ceiling,
        "threshold": np.asarray(sur.threshold_).tolist(),  # two with mondrian="cap" or "cap_margin"
    }

    lines = [
        "",
        f"digits (pixels scaled to [0, 1]), sigma={cfg.sigma:g}; radii: L2 distance in those "
        "pixel units",
        f"base network, clean inputs (no smoothing): accuracy {100 * base_acc:.1f} %",
        "",
        _row("", ["Monte Carlo", "RRISE"]),
        _row("", [f"n={cfg.n}", "1 pass"]),
    ]
    for r, a, b in zip(cfg.radii, acc_mc, acc_rr, strict=True):
        lines.append(_row(f"certified acc. @ r={r:g}", [f"{100 * a:.1f} %", f"{100 * b:.1f} %"]))
    lines += [
        _row(
            "abstain rate",
            [f"{100 * figures['abstain_mc']:.1f} %", f"{100 * figures['abstain_rrise']:.1f} %"],
        ),
        _row("ACR", [f"{figures['acr_mc']:.3f}", f"{figures['acr_rrise']:.3f}"]),
        _row("time per query", [f"{1e3 * t_mc:.2f} ms", f"{1e6 * t_rr:.1f} us"]),
        "",
        f"speedup per query: {figures['speedup']:.0f}x; one-time RRISE cost "
        f"{fixed:.1f} s (targets {amort['targets']:.1f} s, training {amort['training']:.1f} s, "
        f"calibration {amort['calibration']:.1f} s); break-even after {break_even:.0f} queries",
        f"guarantee: RRISE certificates wrong w.p. <= alpha_conf + alpha_mc = "
        f"{cfg.alpha_conf + cfg.alpha:g} for inputs exchangeable with the calibration set; "
        f"MC certificates w.p. <= {cfg.alpha:g} each",
        f"MC radius ceiling at n={cfg.n}: {ceiling:.3f}",
    ]
    if out:
        from .plotting import CertifiedAccuracyDisplay

        disp = CertifiedAccuracyDisplay.from_results(
            y_test, {f"Monte Carlo (n={cfg.n})": mc, "RRISE (1 pass)": rr}, ceiling=ceiling
        )
        disp.ax_.set_title(f"digits, sigma={cfg.sigma}")
        from ._io import write_atomic

        write_atomic(out, lambda fh: disp.figure_.savefig(fh, format="png", dpi=120))
        lines.append(f"plot: {out}")
    print_fn("\n".join(lines))
    return figures
