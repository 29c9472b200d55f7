"""Plots of certified robustness (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import certified_accuracy

__all__ = ["CertifiedAccuracyDisplay", "plot_certified_regions"]


def _pyplot():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg",) and not _has_display():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'rrise-sklearn[plot]'.") from exc
    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("MPLBACKEND"))


@dataclass
class CertifiedAccuracyDisplay:
    """Certified accuracy against radius for one or several certifiers.

    Build it with :meth:`from_estimator` (certifies ``X`` with an estimator or
    a Pipeline ending in one), :meth:`from_predictions` (certificates already
    computed) or :meth:`from_results` (several certifiers); ``plot`` draws on a
    matplotlib axes and returns the display (``ax_``, ``figure_``, ``lines_``
    are set), as scikit-learn's ``*Display`` objects do. Radii are in the
    units of the certifier's input: after a scaler in a Pipeline, scaled units.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.plotting import CertifiedAccuracyDisplay
    >>> y = np.array([0, 1, 1, 0])
    >>> disp = CertifiedAccuracyDisplay.from_results(
    ...     y, {"MC": (y, np.array([0.5, 0.2, 0.0, 1.0]))}, ceiling=1.2)
    >>> len(disp.lines_)
    1
    """

    radii: np.ndarray
    curves: dict[str, np.ndarray]
    ceiling: float | None = None
    xlabel: str = "radius (L2, input units)"

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        name: str | None = None,
        radii: Any = None,
        ax: Any = None,
        radius_space: str = "model",
        **certify_kwargs: Any,
    ) -> CertifiedAccuracyDisplay:
        """Certify ``X`` (through every Pipeline step) and plot certified accuracy.

        ``certify_kwargs`` go to the certifier's ``certify``. For a Monte Carlo
        certifier the n-sample radius ceiling is drawn as well.
        ``radius_space="input"`` plots the radii in the units of ``X`` (the
        result's ``input_radius``; a Pipeline of per-feature affine steps);
        ``"model"`` (default) in the certifier's input space.
        """
        from .pipeline import certify, split_certifier

        if radius_space not in ("model", "input"):
            raise ValueError(f"radius_space must be 'model' or 'input'; got {radius_space!r}.")
        res = certify(estimator, X, **certify_kwargs)
        _, cert = split_certifier(estimator)
        ceiling = None
        info = res.info
        if "n" in info and "alpha" in info:
            from .stats import max_certifiable_radius

            ceiling = float(max_certifiable_radius(info["n"], info["alpha"], info["sigma"]))
        radius, units = res.radius, res.info["radius_units"]
        if radius_space == "input":
            if res.input_radius is None:
                raise ValueError(
                    "radius_space='input' needs preprocessing made of per-feature affine steps "
                    "(scalers); this Pipeline's radii have no exact conversion to the units of X."
                )
            radius, units = res.input_radius, "L2 in the units of X"
            ceiling = None if ceiling is None else ceiling / info["input_scale"]
        disp = cls.from_predictions(
            y, res.prediction, radius, name=name or type(cert).__name__, radii=radii,
            ceiling=ceiling, ax=ax, xlabel=f"radius ({units})",
        )  # fmt: skip
        disp.result_ = res
        return disp

    @classmethod
    def from_predictions(
        cls,
        y_true: Any,
        prediction: Any,
        radius: Any,
        *,
        name: str = "certifier",
        radii: Any = None,
        ceiling: float | None = None,
        ax: Any = None,
        xlabel: str | None = None,
    ) -> CertifiedAccuracyDisplay:
        """Plot the certified accuracy of given certificates (prediction and radius)."""
        disp = cls.from_results(
            y_true, {name: (prediction, radius)}, radii=radii, ceiling=ceiling, ax=ax,
            xlabel=xlabel,
        )  # fmt: skip
        return disp

    @classmethod
    def from_results(
        cls,
        y_true: Any,
        results: dict[str, Any],
        *,
        radii: Any = None,
        ceiling: float | None = None,
        ax: Any = None,
        xlabel: str | None = None,
    ) -> CertifiedAccuracyDisplay:
        """Compute the curves from ``{name: CertificationResult or (prediction, radius)}``."""
        y = np.asarray(y_true)
        if not results:
            raise ValueError("results is empty: pass {name: certification result}.")
        max_r = max(float(np.max(tuple(r)[1])) for r in results.values())
        if radii is None:
            top = max(max_r, ceiling or 0.0) * 1.05 or 1.0
            radii = np.linspace(0.0, top, 200)
        radii = np.asarray(radii, dtype=np.float64)
        curves = {}
        for name, res in results.items():
            prediction, radius = tuple(res)
            curves[name] = np.asarray(certified_accuracy(y, prediction, radius, radii))
        disp = cls(radii=radii, curves=curves, ceiling=ceiling)
        if xlabel is not None:
            disp.xlabel = xlabel
        return disp.plot(ax=ax)

    def plot(self, ax: Any = None) -> CertifiedAccuracyDisplay:
        """Draw the curves (and the n-sample ceiling as a dotted vertical line)."""
        plt = _pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        self.lines_ = [
            ax.step(self.radii, acc, where="post", label=name)[0]
            for name, acc in self.curves.items()
        ]
        if self.ceiling is not None:
            ax.axvline(self.ceiling, ls=":", color="gray", label="MC radius ceiling")
        ax.set_xlabel(self.xlabel)
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


def plot_certified_regions(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    grid_size: int = 60,
    ax: Any = None,
    margin: float = 0.5,
) -> Any:
    """Certified radius heat map and decision regions of a 2-D certifier.

    Certifies every point of a ``grid_size x grid_size`` grid over the data's
    bounding box (``estimator.certify``), shows the certified class by hue and
    the radius by intensity (white: abstain), and overlays ``X``.

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_certified_regions needs 2-D inputs; got shape {X.shape}.")
    lo, hi = X.min(0) - margin, X.max(0) + margin
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size))
    grid = np.c_[xx.ravel(), yy.ravel()].astype(np.float32)
    res = estimator.certify(grid)
    classes = list(estimator.classes_)
    idx = np.array([classes.index(p) if p in classes else -1 for p in res.prediction])
    rmax = max(float(res.radius.max()), 1e-12)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10")
    rgb = np.ones((len(grid), 3))
    for c in range(len(classes)):
        sel = idx == c
        strength = (res.radius[sel] / rmax)[:, None]
        rgb[sel] = 1 - strength * (1 - np.asarray(cmap(c)[:3]))
    ax.imshow(
        rgb.reshape(grid_size, grid_size, 3),
        origin="lower",
        extent=(lo[0], hi[0], lo[1], hi[1]),
        aspect="auto",
    )
    cs = ax.contour(
        xx, yy, res.radius.reshape(xx.shape), levels=5, colors="k", linewidths=0.5, alpha=0.6
    )
    ax.clabel(cs, fontsize=7)
    if y is not None:
        y = np.asarray(y)
        for c, label in enumerate(classes):
            sel = y == label
            ax.scatter(X[sel, 0], X[sel, 1], s=8, color=cmap(c), edgecolor="k", linewidth=0.3)
    else:
        ax.scatter(X[:, 0], X[:, 1], s=8, color="k")
    ax.set_title("certified class (hue) and radius (intensity, contours)")
    return ax
