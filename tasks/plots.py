"""Figures of a valuation run, logged to MLflow as PNG artifacts.

Each function builds a fresh ``Figure`` with the non-interactive Agg canvas (no pyplot
state, so nothing leaks between runs and nothing needs a display) and returns it; the
caller logs it and closes it with ``close_figures``. Values are in the units of the
utility: validation accuracy gained by adding a point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from amortval.tasks.metrics import pearson  # noqa: E402

VALUE_LABEL = "value (validation accuracy gained)"
CLEAN_COLOR = "tab:blue"
FLIPPED_COLOR = "tab:red"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _as_mask(mislabeled: Sequence[bool] | np.ndarray | None, n: int) -> np.ndarray | None:
    if mislabeled is None:
        return None
    mask = np.asarray(mislabeled, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"mislabeled has shape {mask.shape}, expected ({n},)")
    return mask


def value_distribution_figure(
    values: Sequence[float] | np.ndarray,
    class_names: Sequence[object] | np.ndarray,
    mislabeled: Sequence[bool] | np.ndarray | None = None,
) -> Figure:
    """Histogram of values, one panel per class (shared value axis).

    ``class_names`` holds each point's class label (same length as ``values``): a value
    is only comparable with values of the same class, since the network reads its
    output at the label. With ``mislabeled`` the flipped points are drawn in their own
    colour, which is what the demo is meant to show: they collect at negative values.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray([str(c) for c in class_names])
    if labels.shape != values.shape:
        raise ValueError(f"class_names has {labels.size} entries, values has {values.size}")
    flipped = _as_mask(mislabeled, values.size)
    classes = sorted(set(labels.tolist()))
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 41)

    figure = _new_figure(7.0, 1.0 + 1.8 * max(len(classes), 1))
    axes = figure.subplots(max(len(classes), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, classes):
        in_class = labels == name
        if flipped is None:
            ax.hist(values[in_class], bins=bins, color=CLEAN_COLOR, alpha=0.8, label="all points")
        else:
            ax.hist(values[in_class & ~flipped], bins=bins, color=CLEAN_COLOR, alpha=0.6,
                    label=f"clean ({int((in_class & ~flipped).sum())})")
            ax.hist(values[in_class & flipped], bins=bins, color=FLIPPED_COLOR, alpha=0.6,
                    label=f"flipped label ({int((in_class & flipped).sum())})")
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_title(f"label = {name}  ({int(in_class.sum())} points)", fontsize=10)
        ax.set_ylabel("points")
        ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel(VALUE_LABEL)
    figure.suptitle("Distribution of data values per class")
    return figure


def network_vs_monte_carlo_figure(
    mc_value: Sequence[float] | np.ndarray,
    mc_stderr: Sequence[float | None] | np.ndarray,
    amortized: Sequence[float] | np.ndarray,
    mislabeled: Sequence[bool] | np.ndarray | None = None,
) -> Figure:
    """Amortized value against the point's Monte Carlo estimate, with the y = x line.

    Horizontal bars are one Monte Carlo standard error (missing stderr, from points
    with fewer than two samples, draws no bar). The title carries Pearson's r, the
    number to read first: the network should agree with, and smooth, the noisy
    per-point averages.
    """
    x = np.asarray(mc_value, dtype=np.float64)
    y = np.asarray(amortized, dtype=np.float64)
    err = np.asarray([np.nan if s is None else s for s in np.asarray(mc_stderr, dtype=object)],
                     dtype=np.float64)
    if not (x.shape == y.shape == err.shape):
        raise ValueError(f"lengths differ: mc_value {x.size}, mc_stderr {err.size}, amortized {y.size}")
    flipped = _as_mask(mislabeled, x.size)
    err = np.where(np.isfinite(err), err, 0.0)
    both = np.isfinite(x) & np.isfinite(y)
    r = pearson(x[both], y[both])

    figure = _new_figure(6.0, 5.5)
    ax = figure.subplots()
    groups = [(np.ones_like(both), CLEAN_COLOR, "training point")] if flipped is None else [
        (~flipped, CLEAN_COLOR, "clean"), (flipped, FLIPPED_COLOR, "flipped label")]
    for mask, color, label in groups:
        keep = mask & both
        ax.errorbar(x[keep], y[keep], xerr=err[keep], fmt="o", markersize=3, color=color,
                    ecolor=color, elinewidth=0.4, alpha=0.6, label=f"{label} ({int(keep.sum())})")
    if both.any():
        low = float(min(x[both].min(), y[both].min()))
        high = float(max(x[both].max(), y[both].max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1.0, label="y = x")
    ax.set_xlabel(f"Monte Carlo estimate: {VALUE_LABEL}")
    ax.set_ylabel(f"valuation network: {VALUE_LABEL}")
    ax.set_title(f"Network vs Monte Carlo values (Pearson r = {r:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    return figure


def training_curve_figure(history: Sequence[Mapping[str, float]], best_epoch: int) -> Figure:
    """Training and held-out MSE per epoch; the dashed line marks the epoch kept.

    Epoch 0 is the zero head (the network predicts 0 for every point), so the curve
    shows how much the regression improved on "every value is zero".
    """
    epochs = np.asarray([row["epoch"] for row in history], dtype=np.int64)
    figure = _new_figure(6.5, 4.0)
    ax = figure.subplots()
    for key, color, label in (("train_mse", "tab:blue", "training samples"),
                              ("heldout_mse", "tab:orange", "held-out samples")):
        series = np.asarray([row.get(key, np.nan) for row in history], dtype=np.float64)
        ax.plot(epochs, series, marker="o", markersize=3, color=color, label=label)
    ax.axvline(best_epoch, color="black", linestyle="--", linewidth=1.0,
               label=f"chosen epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error (value²)")
    ax.set_title("Valuation network training curve")
    ax.legend(fontsize=8)
    return figure


def removal_curves_figure(curves: Mapping[str, Mapping[str, object]]) -> Figure:
    """Test accuracy against the fraction of training points removed, per estimator.

    ``curves`` maps an estimator label to ``tasks.removal.removal_curves`` output. Each
    estimator gets one colour: a solid line for removing its *lowest*-valued points
    (should rise, or fall slowest) and a dashed line for removing its *highest*-valued
    points (should fall fastest); the gap between them is how much the ranking knows.
    """
    if not curves:
        raise ValueError("removal_curves_figure needs at least one estimator's curves")
    figure = _new_figure(7.0, 4.5)
    ax = figure.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, curve) in enumerate(curves.items()):
        color = colors[index % len(colors)]
        x = np.asarray(curve["fractions"], dtype=np.float64)
        ax.plot(x, np.asarray(curve["low_removed"], dtype=np.float64), color=color, marker="o",
                markersize=3, label=f"{label}: lowest values removed")
        ax.plot(x, np.asarray(curve["high_removed"], dtype=np.float64), color=color, marker="o",
                markersize=3, linestyle="--", label=f"{label}: highest values removed")
    ax.set_xlabel("fraction of training points removed")
    ax.set_ylabel("test accuracy after retraining")
    ax.set_title("Point removal: retrain without the lowest / highest valued points")
    ax.legend(fontsize=8)
    return figure


def close_figures(figures: Mapping[str, Figure] | Sequence[Figure]) -> None:
    """Release the figures' canvases and artists (they are not pyplot-managed)."""
    items = figures.values() if isinstance(figures, Mapping) else figures
    for figure in items:
        figure.clear()
