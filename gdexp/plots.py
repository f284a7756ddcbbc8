"""Every figure gdexp draws: a run's loss curve, a sweep's history and search plots, the range test.

Figures are made with `matplotlib.figure.Figure` (no pyplot): no global figure registry, no GUI
backend, nothing to close. Margins are fixed instead of `tight_layout`: a layout pass per figure would
measure text on every draw, and gdexp's figures have fixed layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gdexp.history import History

__all__ = ["REGIME_COLORS", "REGIME_LINES", "REPORT", "VARIANT_COLORS", "VARIANT_MARKS", "axes", "log_x", "log_y",
           "loss_curve", "lr_range", "positive", "regime_handles", "save"]

# One colour per regime wherever gdexp draws one (Okabe and Ito's palette, told apart with any colour vision);
# README lists them. `none`: interrupted or failed runs, which regime figures leave out.
REGIME_COLORS = {"too_small": "#0072B2", "just_right": "#009E73", "too_large": "#D55E00", "none": "#999999"}
# One colour per GD variant where a figure draws variants as lines (cost.png), none of a regime's hues
# (stochastic was Okabe-Ito orange, read as too_large's vermillion): black, reddish purple, brown.
VARIANT_COLORS = {"batch": "#000000", "minibatch": "#CC79A7", "stochastic": "#8C564B"}
# Where colour shows something else (the regime, the hidden size), the GD variant is the marker's shape.
VARIANT_MARKS = {"batch": "s", "minibatch": "o", "stochastic": "^"}
# Where a figure spends its colours on something else (loss curves coloured by learning rate), a line style.
REGIME_LINES = {"too_small": ":", "just_right": "-", "too_large": "--", "none": "-."}
# Report figures go into papers and slides: sharp at 150 dpi, lettering that stays legible when a figure
# is shrunk to the width of a page.
REPORT = {"dpi": 150, "font.size": 11.0}


def axes(width: float = 6.0, height: float = 4.0, *, left: float = 0.14, bottom: float = 0.13,
         top: float = 0.91, right: float = 0.97, dpi: int = 100) -> tuple[Figure, Axes]:
    """A figure with one set of axes and fixed margins (shares of the figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    fig.subplots_adjust(left=left, right=right, top=top, bottom=bottom)
    return fig, fig.subplots()


def regime_handles(regimes: Sequence[str], *, lines: bool = False) -> list[Any]:
    """Legend entries for these regimes: a dot in the regime's colour, or (`lines`) a black line in its style."""
    from matplotlib.lines import Line2D

    if lines:
        return [Line2D([], [], color="0.15", lw=1.8, ls=REGIME_LINES[r], label=r) for r in regimes]
    return [Line2D([], [], ls="", marker="o", ms=8, mfc=REGIME_COLORS[r], mec="0.2", label=r) for r in regimes]


def log_y(ax: Axes) -> None:
    """A log y axis labelled `0.3`, `1`, `100` rather than with mathtext powers of ten, whose parsing
    costs more than the rest of a small figure. Under two decades some minor ticks are labelled too (2, 3, 5):
    a loss from 0.25 to 4 is read off the axis, not guessed between 1 and 10."""
    _log(ax.yaxis, ax.set_yscale, subset=2)


def log_x(ax: Axes, at: Sequence[float] = ()) -> None:
    """A log x axis labelled as `log_y` labels y, minor ticks only under one decade (labels side by side
    need the room; on a narrow range matplotlib's own labels every minor tick with a power of ten, and they
    overlap). `at`: the few values a grid tried (its learning rates), each ticked and labelled as written
    instead: read off the axis as they were set, none of them left without its label (0.05 of 0.02-0.05 was)."""
    _log(ax.xaxis, ax.set_xscale, subset=1)
    if at:
        from matplotlib.ticker import NullFormatter

        values = sorted(set(at))
        ax.set_xticks(values, labels=[f"{v:g}" for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())


def _log(axis: Any, scale: Any, *, subset: float) -> None:
    from gdexp import compat

    Plain = compat.log_formatter()
    scale("log")
    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(subset, 0.4)))


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path)
    return path


def positive(values: Any) -> bool:
    """Can these values go on a log axis (finite ones all > 0, and at least one)?"""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(np.all(v > 0))


def loss_curve(history: History, path: Path, *, title: str) -> Path:
    """Train and validation loss per epoch from epoch 0, before the first update (log scale when every value is
    positive): the curve the regime's reason reads, its rise above the start included."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = axes()
    epochs = np.concatenate([[0.0], history.curve("epoch")])
    curves = {key: np.concatenate([[history.initial.get(key, math.nan)], history.curve(key)])
              for key in ("train_loss", "val_loss")}
    for values, label in zip(curves.values(), ("training set", "validation set"), strict=True):
        if np.any(np.isfinite(values)):
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=label)
    start = curves["train_loss"][0]
    if math.isfinite(start):  # what "above its initial loss" is measured against
        ax.axhline(start, color="0.5", ls=":", lw=1, label="training loss at epoch 0")
    if positive(np.concatenate(list(curves.values()))):
        log_y(ax)
    ax.set(xlabel="epoch (0: before the first update)", ylabel="loss",
           title=title + ("  (diverged)" if history.diverged else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend()
    if not history.epochs:
        ax.text(0.5, 0.5, "no epoch finished", ha="center", va="center", transform=ax.transAxes)
    return save(fig, path)


def lr_range(lrs: np.ndarray, losses: np.ndarray, smooth: np.ndarray, result: dict[str, float], path: Path) -> Path:
    """Loss against learning rate for the range test: each update's batch loss faint, the smoothed curve the
    suggestion reads, its steepest fall and its lowest point marked, the suggested rate (a tenth of the lowest
    point's), the just-right window and the divergence edge."""
    fig, ax = axes(9.0, 4.4, dpi=int(REPORT["dpi"]), left=0.09, right=0.64)
    ax.plot(lrs, losses, lw=0.8, color="0.6", alpha=0.6, label="batch loss of each update")
    ax.plot(lrs, smooth, lw=1.8, color="C0", label="smoothed (what the suggestion reads)")
    log_x(ax)
    if positive(losses):
        log_y(ax)
        finite = smooth[np.isfinite(smooth)]
        raw = losses[np.isfinite(losses) & (losses > 0)]
        # the faint batch losses dip below the smoothed curve near its lowest point: their 1st percentile is kept
        # in view (a single near-zero batch would flatten the rest); a blow-up past the edge goes off the top
        ax.set_ylim(min(float(np.min(finite)) / 1.5, float(np.percentile(raw, 1)) / 1.2), float(finite[0]) * 3)
    if math.isfinite(result["window_low"]):
        ax.axvspan(result["window_low"], result["window_high"], color=REGIME_COLORS["just_right"], alpha=0.18,
                   lw=0, label="just-right window")
        for key, marker, label in (("steepest_lr", "v", "steepest fall"), ("min_loss_lr", "o", "lowest loss")):
            at = int(np.argmin(np.abs(np.log(lrs) - math.log(result[key]))))
            ax.plot(lrs[at], smooth[at], marker=marker, ms=8, color="0.15", ls="",
                    label=f"{label}: lr {result[key]:.3g}")
        ax.axvline(result["suggested_lr"], color="0.15", ls=":", lw=1.4,
                   label=f"suggested lr {result['suggested_lr']:.3g}\n(a tenth of the lowest loss's)")
        ax.axvline(result["divergence_lr"], color=REGIME_COLORS["too_large"], ls="--",
                   label=f"divergence edge {result['divergence_lr']:.3g}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    ax.set(xlabel="learning rate (raised every update)", ylabel="training loss", title="learning-rate range test")
    ax.grid(True, alpha=0.3)
    return save(fig, path)
