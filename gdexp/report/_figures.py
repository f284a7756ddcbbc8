"""The report's figures: loss curves, final loss over learning rate, the lr x hidden-size heatmap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gdexp import plots
from gdexp.regimes import REGIMES
from gdexp.report._read import Report
from gdexp.report._tables import representatives, variant_order

VARIANT_MARKS = {"batch": ("s", "-"), "minibatch": ("o", "--"), "stochastic": ("^", "-.")}  # marker, line style


def _lr_colours(lrs: Any) -> tuple[Any, Any]:
    """A sequential colour map over the learning rates (log scale) and its norm. Viridis, less its pale top
    end, which does not show on white."""
    import matplotlib
    from matplotlib.colors import ListedColormap, LogNorm

    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)))
    finite = np.asarray(lrs, dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    low, high = (finite.min(), finite.max()) if finite.size else (1e-3, 1.0)
    return cmap, LogNorm(low, high) if low < high else LogNorm(low / 2, high * 2)


def panels(n: int, *, panel: float, right: float, top: float, sharey: bool = False) -> tuple[Any, Any, float, float]:
    """A report figure of `n` panels side by side, `panel` inches wide, 5 inches high, with `right` and `top`
    inches kept for a colour bar and a legend: (figure, axes, width, height)."""
    from matplotlib.figure import Figure

    height = 5.0
    width = panel * n + right + 0.35
    fig = Figure(figsize=(width, height), dpi=plots.REPORT["dpi"])
    fig.subplots_adjust(left=0.8 / width, right=1 - right / width, top=1 - top / height, bottom=0.62 / height,
                        wspace=0.32)
    return fig, fig.subplots(1, n, squeeze=False, sharey=sharey)[0], width, height


def _stop(curve: np.ndarray) -> int:
    """The index of a curve's last finite value (where a pruned or diverged run stopped)."""
    finite = np.nonzero(np.isfinite(curve))[0]
    return int(finite[-1]) if finite.size else 0


def _marks(ax: Any, runs: pd.DataFrame, curves: dict[str, np.ndarray], colours: np.ndarray, cap: float) -> None:
    """A panel's triangles at the top edge (values past `cap`) and open circles where pruned runs stopped,
    in each run's colour."""
    over: list[tuple[int, Any]] = []
    stops: list[tuple[int, float, Any]] = []
    for run_id, state, colour in zip(runs["run_id"], runs["state"], colours, strict=True):
        curve = curves[run_id]
        over += [(int(e), colour) for e in np.nonzero(curve > cap)[0]]
        if state == "PRUNED":
            end = _stop(curve)
            stops.append((end, min(float(curve[end]), cap), colour))
    if over:
        ax.scatter([e for e, _ in over], [cap] * len(over), marker="^", s=36, c=[c for _, c in over], zorder=3)
    if stops:
        ax.scatter([e for e, _, _ in stops], [y for _, y, _ in stops], marker="o", s=36, facecolors="white",
                   edgecolors=[c for _, _, c in stops], linewidths=1.6, zorder=3)


def plot_loss_curves(report: Report, path: Path) -> Path:
    """Validation loss per epoch, one panel per GD variant: each line coloured by its learning rate (a
    sequential map, its colour bar beside the panels) and drawn in its regime's line style; a pruned run's
    line ends in an open circle where the pruner stopped it. Log scale; a value past 30x the largest initial
    loss is drawn at the top edge as a triangle, so that a spike shows without squeezing the other curves."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    reps = representatives(report.runs)
    variants = variant_order(reps["gd_variant"])
    curves = {run_id: report.curves[run_id] for run_id in reps["run_id"]}
    values = np.concatenate([c[np.isfinite(c)] for c in curves.values()] or [np.ones(1)])
    starts = np.array([c[0] for c in curves.values() if len(c) and np.isfinite(c[0])] or [values.max()])
    cap = min(values.max(), 30 * starts.max())
    cmap, norm = _lr_colours(reps["lr"])
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, axes, width, height = panels(len(variants), panel=max(3.6, 6.4 / len(variants)), right=1.65, top=1.2,
                                          sharey=True)
        for ax, variant in zip(axes, variants, strict=True):
            runs = reps[reps["gd_variant"] == variant].sort_values("lr")
            for regime, group in runs.groupby("regime", sort=False):  # a collection per line style: fast at 1,000
                lines = [np.column_stack([np.arange(len(c)), np.minimum(c, cap)])
                         for c in (curves[run_id] for run_id in group["run_id"])]
                ax.add_collection(LineCollection(lines, colors=cmap(norm(group["lr"].to_numpy())), lw=1.8,
                                                 linestyles=plots.REGIME_LINES[str(regime)]))
            _marks(ax, runs, curves, cmap(norm(runs["lr"].to_numpy())), cap)
            ax.autoscale_view()
            ax.set(title=variant, xlabel="epoch", ylabel="validation loss")
            ax.tick_params(labelleft=True)
            ax.grid(True, alpha=0.3)
        if plots.positive(values):
            plots.log_y(axes[0])
            axes[0].set_ylim(values.min() / 1.3, cap * 1.3)
        fig.colorbar(ScalarMappable(norm, cmap), label="learning rate",
                     cax=fig.add_axes((1 - 1.35 / width, 0.62 / height, 0.16 / width, 1 - 1.82 / height)))
        shown = [r for r in REGIMES if r in set(reps["regime"])]
        extra = [Line2D([], [], ls="", marker="o", ms=6, mfc="white", mec="0.15", mew=1.6, label="pruned here")] \
            if (reps["state"] == "PRUNED").any() else []
        extra += [Line2D([], [], ls="", marker="^", ms=6, color="0.15", label=f"above {cap:.3g}")] \
            if (values > cap).any() else []
        fig.suptitle(f"{report.name}: validation loss per epoch (colour: learning rate; line: regime)",
                     y=1 - 0.1 / height, va="top")
        fig.legend(handles=plots.regime_handles(shown, lines=True) + extra, loc="upper center", ncol=len(shown) + 2,
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.42 / height), handlelength=2.6)
        return plots.save(fig, path)


def plot_final_loss_vs_lr(report: Report, path: Path) -> Path:
    """Final validation loss over learning rate (log-log): one marker shape per GD variant, each point in the
    colour of its own run's regime (never a verdict shared across variants). A variant's points are joined
    when it has one hidden size (across hidden sizes a line would zigzag). A pruned run is an open marker
    at the loss where it stopped; a diverged run a cross at the top; the range test's suggestion a dashed
    line."""
    import matplotlib
    from matplotlib.lines import Line2D

    reps = representatives(report.runs)
    done = ~reps["diverged"] & np.isfinite(reps["final_val_loss"])
    top = float(reps["final_val_loss"][done].max()) * 1.6 if done.any() else 1.0
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, ax = plots.axes(9.6, 5.4, left=0.085, bottom=0.11, top=0.91, dpi=int(plots.REPORT["dpi"]))
        fig.subplots_adjust(right=0.7)
        variant_handles = []
        for variant in variant_order(reps["gd_variant"]):
            group = reps[reps["gd_variant"] == variant].sort_values("lr")
            ok = done[group.index]
            marker, style = VARIANT_MARKS.get(variant, ("D", ":"))
            joined = group["hidden_size"].nunique() <= 1
            if joined:  # through the finished runs: a pruned run's loss is from an earlier epoch
                line = ok & (group["state"] == "COMPLETE")
                ax.plot(group["lr"][line], group["final_val_loss"][line], color="0.4", ls=style, lw=1.2, zorder=1)
            for pruned, face in ((False, None), (True, "white")):
                points = group[ok & ((group["state"] == "PRUNED") == pruned)]
                colours = [plots.REGIME_COLORS[r] for r in points["regime"]]
                ax.scatter(points["lr"], points["final_val_loss"], marker=marker, s=64, zorder=3,
                           c=[face] * len(points) if face else colours, edgecolors=colours if face else "0.15",
                           linewidths=1.8 if face else 0.8)
            gone = group[~ok]
            ax.scatter(gone["lr"], np.full(len(gone), top), marker="X", s=80, zorder=3, edgecolors="0.15",
                       c=[plots.REGIME_COLORS[r] for r in gone["regime"]])
            variant_handles.append(Line2D([], [], color="0.4", ls=style if joined else "", marker=marker, ms=8,
                                          mfc="0.85", mec="0.15", label=variant))
        extra = [Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="0.3", mew=1.8,
                        label="pruned: its loss\nwhere it stopped")] if (reps["state"] == "PRUNED").any() else []
        extra += [Line2D([], [], ls="", marker="X", ms=9, mfc="0.85", mec="0.15", label="diverged (no final loss)")] \
            if (~done).any() else []
        rt = report.range_test
        if rt is not None and math.isfinite(rt["suggested_lr"]):
            ax.axvline(rt["suggested_lr"], color="k", ls="--", lw=1)
            extra.append(Line2D([], [], color="k", ls="--", lw=1, label="range test's suggestion"))
        ax.set_xscale("log")
        if plots.positive(reps["final_val_loss"][done]):
            plots.log_y(ax)
        ax.set(xlabel="learning rate", ylabel="final validation loss",
               title=f"{report.name}: final validation loss vs learning rate")
        ax.grid(True, alpha=0.3)
        first = ax.legend(handles=variant_handles, title="GD variant", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          frameon=False)
        ax.add_artist(first)
        shown = [r for r in REGIMES if r in set(reps["regime"])]
        ax.legend(handles=plots.regime_handles(shown) + extra, title="regime (colour)", loc="upper left",
                  bbox_to_anchor=(1.02, 0.55), frameon=False)
        return plots.save(fig, path)


def uniform_bins(logged: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bins of width `step` over log-scaled values: (every bin's lower edge from the lowest bin to the highest,
    empty ones included; each value's bin index). An axis of only the bins that hold values is uneven."""
    lower = np.floor(logged / step) * step
    axis = np.arange(lower.min(), lower.max() + step / 2, step)
    return axis, np.rint((lower - axis[0]) / step).astype(int)


def plot_lr_hidden_heatmap(report: Report, path: Path) -> Path | None:
    """Best final validation loss of the finished runs over learning rate x hidden size: half-decade lr
    bins and power-of-two hidden bins on uniform axes that keep every bin between the smallest and the
    largest (an empty one blank), so a column's distance means the same everywhere. A bin whose runs were
    all pruned or diverged is grey and says which. None when the sweep used one hidden size."""
    import matplotlib
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    runs = report.runs[report.runs["regime"].isin(REGIMES) & np.isfinite(report.runs["lr"])
                       & np.isfinite(report.runs["hidden_size"])]
    if runs["hidden_size"].nunique() < 2:
        return None
    xs, columns = uniform_bins(np.log10(runs["lr"].to_numpy()), 0.5)
    ys, rows = uniform_bins(np.log2(runs["hidden_size"].to_numpy()), 1.0)
    grid, other = np.full((len(ys), len(xs)), np.nan), np.full((len(ys), len(xs)), "", dtype=object)
    finished = ((runs["state"] == "COMPLETE") & ~runs["diverged"] & np.isfinite(runs["final_val_loss"])).to_numpy()
    for x, y, v, ok, diverged in zip(columns, rows, runs["final_val_loss"], finished, runs["diverged"], strict=True):
        if ok:
            grid[y, x] = np.fmin(grid[y, x], v)
        elif other[y, x] != "pruned":
            other[y, x] = "diverged" if diverged else "pruned"
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, ax = plots.axes(8.5, 5.4, left=0.13, bottom=0.17, top=0.91, dpi=int(plots.REPORT["dpi"]))
        finite = grid[np.isfinite(grid)]
        norm = LogNorm(finite.min(), finite.max()) if finite.size and plots.positive(finite) and \
            finite.min() < finite.max() else None
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
        for (y, x), what in np.ndenumerate(other):
            if what and not math.isfinite(grid[y, x]):
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, color="0.86", lw=0))
                ax.text(x, y, what, ha="center", va="center", fontsize="x-small", color="0.25")
        fig.colorbar(image, label="best final validation loss")
        ax.set_xticks(range(len(xs)), [f"1e{x:g}" if x == int(x) else f"3e{math.floor(x):g}" for x in xs],
                      rotation=45)
        ax.set_yticks(range(len(ys)), [f"{2 ** int(y)}-{2 ** int(y + 1) - 1}" for y in ys])
        ax.set(xlabel="learning rate (bin from; half a decade each)", ylabel="hidden size",
               title=f"{report.name}: best finished val loss over lr x hidden (blank: no run)")
        return plots.save(fig, path)
