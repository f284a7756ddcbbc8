"""The report's figures: training curves by regime, final losses over the learning rate, the lr x hidden heatmap."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gdexp import plots
from gdexp.regimes import REGIMES
from gdexp.report._bands import bands, recommend
from gdexp.report._read import Report, several_datasets, variant_order, variant_panels
from gdexp.report._tables import fmt_count, representatives

__all__ = ["lr_colours", "panels", "plot_final_loss_vs_lr", "plot_loss_curves", "plot_lr_hidden_heatmap",
           "uniform_bins"]

BAND_ALPHA = 0.18  # a just-right band's span: seen behind the points, over which the grid still shows
GRID_TICKS = 8  # at most this many learning rates tried: each is ticked and labelled (a grid's, not a search's)
CAP = 30.0  # a value past this many times the largest initial loss is drawn at the top edge, as a triangle


def lr_colours(lrs: Any) -> tuple[Any, Any]:
    """A sequential colour map over the learning rates (log scale) and its norm. Viridis, less its pale top
    end, which does not show on white."""
    import matplotlib
    from matplotlib.colors import ListedColormap, LogNorm

    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)))
    finite = np.asarray(lrs, dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    low, high = (finite.min(), finite.max()) if finite.size else (1e-3, 1.0)
    return cmap, LogNorm(low, high) if low < high else LogNorm(low / 2, high * 2)


def panels(rows: int, cols: int, *, panel: float, right: float, top: float, height: float = 3.6,
           sharey: Literal["none", "all", "row", "col"] | bool = False) -> tuple[Any, Any, float, float]:
    """A report figure of `rows` x `cols` panels, each `panel` x `height` inches, with `right` and `top` inches kept
    for a colour bar and a legend: (figure, axes as a 2-D array, width, height)."""
    from matplotlib.figure import Figure

    total_h = height * rows + top + 0.7
    width = panel * cols + right + 0.9
    fig = Figure(figsize=(width, total_h), dpi=plots.REPORT["dpi"])
    fig.subplots_adjust(left=0.85 / width, right=1 - right / width, top=1 - top / total_h, bottom=0.62 / total_h,
                        wspace=0.25, hspace=0.45)
    return fig, fig.subplots(rows, cols, squeeze=False, sharey=sharey), width, total_h


def _stop(curve: np.ndarray) -> int:
    """The index of a curve's last finite value (where a pruned or diverged run stopped)."""
    finite = np.nonzero(np.isfinite(curve))[0]
    return int(finite[-1]) if finite.size else 0


PILE = 1.35  # pruned runs that stopped at one epoch within this factor of each other's loss share a circle


def _pruned_ends(ax: Any, ends: list[tuple[int, float, Any]]) -> None:
    """Open circles where pruned runs stopped; runs that stopped at the same epoch and nearly the same loss (within
    `PILE` of the lowest of them) share one circle with their count beside it, so that a pile of them reads as a
    number, not a blot, and no two counts are drawn over each other."""
    at: dict[int, list[tuple[float, Any]]] = defaultdict(list)
    for epoch, y, colour in ends:
        at[epoch].append((y, colour))
    for epoch, stopped in at.items():
        piles: list[list[tuple[float, Any]]] = []
        for y, colour in sorted(stopped, key=lambda m: m[0]):
            if piles and y <= piles[-1][0][0] * PILE:
                piles[-1].append((y, colour))
            else:
                piles.append([(y, colour)])
        for members in piles:
            y = float(np.median([m[0] for m in members]))
            ax.scatter([epoch], [y], marker="o", s=38, facecolors="white", edgecolors=[members[0][1]],
                       linewidths=1.6, zorder=4)
            if len(members) > 1:
                ax.annotate(f"{len(members)}", (epoch, y), xytext=(5, 3), textcoords="offset points",
                            fontsize="x-small", color="0.2", zorder=5)


def plot_loss_curves(report: Report, path: Path) -> Path:
    """Training loss per epoch (the curve each label reads), one row per GD variant (per data set and variant when
    the report holds several: each data set on its own scale) and one column per regime: too small creeps down,
    just right falls fast and settles, too large jumps back up or stalls. Each line is coloured by its learning
    rate (a colour bar beside the panels); a pruned run's line ends in an open circle (runs that stopped together
    share one, with their count); log scale, and a value past 30x the largest initial loss is drawn at the top
    edge as a triangle."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    reps = representatives(report.runs)
    rows_of = variant_panels(reps)
    curves = {run_id: report.train_curves[run_id] for run_id in reps["run_id"]}
    cmap, norm = lr_colours(reps["lr"])
    capped = False
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, axes, width, height = panels(len(rows_of), len(REGIMES), panel=4.0, right=1.6, top=1.2, sharey="row")
        for row, (dataset, variant, label) in zip(axes, rows_of, strict=True):
            scale = _scale([curves[r] for r in reps.loc[reps["dataset"] == dataset, "run_id"]])
            capped |= scale.capped
            for ax, regime in zip(row, REGIMES, strict=True):
                runs = reps[(reps["dataset"] == dataset) & (reps["gd_variant"] == variant)
                            & (reps["regime"] == regime)].sort_values("lr")
                _curves_panel(ax, runs, curves, cmap(norm(runs["lr"].to_numpy())), scale.cap, regime)
                pruned = int((runs["state"] == "PRUNED").sum())
                counted = fmt_count(len(runs), "run") + (f", {pruned} pruned" if pruned else "")
                ax.set_title(f"{label}: {regime} ({counted})", color=plots.REGIME_COLORS[regime], fontsize="medium")
                ax.set(xlabel="epoch")
                if not runs.empty:
                    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # 2800 and 3200 side by side
                ax.tick_params(labelleft=True)
                ax.grid(True, alpha=0.3)
            row[0].set_ylabel("training loss")
            if scale.low > 0:
                plots.log_y(row[0])
                row[0].set_ylim(scale.low / 1.3, scale.cap * 1.3)
        fig.colorbar(ScalarMappable(norm, cmap), label="learning rate",
                     cax=fig.add_axes((1 - 1.3 / width, 0.62 / height, 0.16 / width, 1 - 1.82 / height)))
        marks = []
        if (reps["state"] == "PRUNED").any():
            marks.append(Line2D([], [], ls="", marker="o", ms=6, mfc="white", mec="0.15", mew=1.6,
                                label="pruned here (number: runs stopped together)"))
        if capped:
            marks.append(Line2D([], [], ls="", marker="^", ms=6, color="0.15",
                                label=f"above {CAP:g}x the initial loss"))
        fig.suptitle(f"{report.name}: training loss per epoch on the whole training set, the curve each label reads "
                     "(colour: learning rate)", y=1 - 0.1 / height, va="top")
        if marks:
            fig.legend(handles=marks, loc="upper center", ncol=len(marks), frameon=False,
                       bbox_to_anchor=(0.5, 1 - 0.5 / height))
        return plots.save(fig, path)


@dataclass(frozen=True)
class _Scale:
    """A y scale for training curves: the lowest value, the cap (`CAP` x the largest initial loss, or the largest
    value when lower) and whether any value passed it."""

    low: float
    cap: float
    capped: bool


def _scale(curves: list[np.ndarray]) -> _Scale:
    values = np.concatenate([c[np.isfinite(c)] for c in curves] or [np.ones(1)])
    values = values if values.size else np.ones(1)
    starts = np.array([c[0] for c in curves if len(c) and np.isfinite(c[0])] or [values.max()])
    cap = float(min(values.max(), CAP * starts.max()))
    return _Scale(float(values.min()), cap, bool((values > cap).any()))


def _curves_panel(ax: Any, runs: pd.DataFrame, curves: dict[str, np.ndarray], colours: Any, cap: float,
                  regime: str) -> None:
    """One regime's panel: its lines (in the regime's line style: the colour is the learning rate's), the
    triangles of values past `cap` and the circles where pruned runs stopped; "no run" where it has none."""
    from matplotlib.collections import LineCollection

    if runs.empty:
        ax.text(0.5, 0.5, "no run", transform=ax.transAxes, ha="center", va="center", color="0.45")
        ax.set_xticks([])
        return
    lines = [np.column_stack([np.arange(len(c)), np.minimum(c, cap)]) for c in (curves[r] for r in runs["run_id"])]
    ax.add_collection(LineCollection(lines, colors=colours, lw=1.6, linestyles=plots.REGIME_LINES[regime]))
    over = [(int(e), c) for run_id, c in zip(runs["run_id"], colours, strict=True)
            for e in np.nonzero(curves[run_id] > cap)[0]]
    if over:
        ax.scatter([e for e, _ in over], [cap] * len(over), marker="^", s=34, c=[c for _, c in over], zorder=3)
    _pruned_ends(ax, [(_stop(curves[r.run_id]), min(float(curves[r.run_id][_stop(curves[r.run_id])]), cap), c)
                      for r, c in zip(runs.itertuples(), colours, strict=True) if r.state == "PRUNED"])
    ax.autoscale_view()


def _strip_and_main(fig: Any, spec: Any) -> tuple[Any, Any]:
    """A thin strip above a main axes, sharing its x axis: runs without a finished loss go in the strip."""
    inner = spec.subgridspec(2, 1, height_ratios=[1, 6], hspace=0.05)
    main = fig.add_subplot(inner[1])
    strip = fig.add_subplot(inner[0], sharex=main)
    strip.set_yticks([0, 1], ["diverged", "pruned"])
    strip.set_ylim(-0.6, 1.6)
    strip.tick_params(which="both", labelbottom=False)  # minor too: a narrow log range labels its minor ticks
    strip.grid(True, axis="x", alpha=0.3)
    return strip, main


def plot_final_loss_vs_lr(report: Report, path: Path) -> Path:
    """Final training loss (what the label reads) and final validation loss (the sweep's objective) over the
    learning rate, log-log: one marker shape per GD variant, each point in its own run's regime colour. Runs
    with no finished loss are not drawn as if they had one: a pruned run (stopped early by the pruner) and a
    diverged run sit in a strip above, at their learning rate. Each variant's recommended learning rate is a
    dotted line, and the just-right band it is read from a green span behind the points."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    reps = representatives(report.runs)
    finished = (reps["state"] == "COMPLETE") & ~reps["diverged"]
    recommended = recommend(report, every_data_set=True).set_index(["data set", "GD variant"])
    bands_of = {(b["data set"], b["GD variant"], b["sibling group"]): (b["band low"], b["band high"])
                for b in bands(report, every_data_set=True).to_dict(orient="records")}
    datasets = sorted(set(reps["dataset"]))
    several = several_datasets(reps)
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        height = 5.6 * len(datasets)
        fig = Figure(figsize=(14.0, height), dpi=plots.REPORT["dpi"])
        fig.subplots_adjust(left=0.065, right=0.755, top=1 - 0.78 / height, bottom=0.62 / height, wspace=0.28,
                            hspace=0.35)
        grid = fig.add_gridspec(len(datasets), 2)
        legend_variants: dict[str, Any] = {}
        for r, dataset in enumerate(datasets):
            here = reps[reps["dataset"] == dataset]
            for spec, column, what in ((grid[r, 0], "final_train_loss", "final training loss (the label reads it)"),
                                       (grid[r, 1], "final_val_loss", "final validation loss (the sweep's objective)")):
                strip, ax = _strip_and_main(fig, spec)
                for k, variant in enumerate(variant_order(here["gd_variant"])):
                    group = here[here["gd_variant"] == variant].sort_values("lr")
                    marker = plots.VARIANT_MARKS.get(variant, "D")
                    done = group[finished[group.index] & np.isfinite(group[column])]
                    ax.scatter(done["lr"], done[column], marker=marker, s=60, zorder=3, edgecolors="0.15",
                               linewidths=0.8, c=[plots.REGIME_COLORS[x] for x in done["regime"]])
                    stopped = ((1, group[group["state"] == "PRUNED"], "white"), (0, group[group["diverged"]], None))
                    for y, rows, face in stopped:
                        colours = [plots.REGIME_COLORS[x] for x in rows["regime"]]
                        strip.scatter(rows["lr"], np.full(len(rows), y + 0.25 * (k - 1)), marker=marker, s=46,
                                      zorder=3, c=[face] * len(rows) if face else colours,
                                      edgecolors=colours if face else "0.15", linewidths=1.6 if face else 0.8)
                    if (dataset, variant) in recommended.index:
                        pick = recommended.loc[(dataset, variant)]
                        band = bands_of.get((dataset, variant, pick["sibling group"]))
                        if band is not None:  # a variant without a band has no recommendation either
                            ax.axvline(pick["recommended lr"], color="0.25", ls=":", lw=1.4)
                            if band[0] == band[1]:  # a band of one rate: a narrow span centred on it, not nothing
                                band = (band[0] / 1.08, band[1] * 1.08)
                            ax.axvspan(*band, color=plots.REGIME_COLORS["just_right"], alpha=BAND_ALPHA, lw=0,
                                       zorder=0)  # behind the points: a bar along the bottom hid the lowest
                    legend_variants[variant] = Line2D([], [], ls="", marker=marker, ms=8, mfc="white", mec="0.15",
                                                      label=variant)
                lrs = here["lr"][np.isfinite(here["lr"])]
                plots.log_x(ax, at=lrs.tolist() if lrs.nunique() <= GRID_TICKS else ())
                if plots.positive(here[column][finished[here.index]]):
                    plots.log_y(ax)
                ax.set(xlabel="learning rate", ylabel=what)
                ax.grid(True, alpha=0.3)
                if several:
                    strip.set_title(dataset, loc="left", fontsize="medium")
        shown = [x for x in REGIMES if x in set(reps["regime"])]
        top = 1 - 0.78 / height
        fig.legend(handles=list(legend_variants.values()), title="GD variant (shape)", loc="upper left",
                   bbox_to_anchor=(0.77, top), frameon=False)
        extra = [Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="0.3", mew=1.8,
                        label="pruned: stopped early,\nno final loss (strip)"),
                 Line2D([], [], color="0.25", ls=":", lw=1.4, label="recommended lr\n(one per GD variant)"
                        if reps["gd_variant"].nunique() > 1 else "recommended lr"),
                 Patch(color=plots.REGIME_COLORS["just_right"], alpha=BAND_ALPHA, lw=0,
                       label="its just-right band\n(the group it is read from)")]
        fig.legend(handles=plots.regime_handles(shown) + extra, title="regime (colour)", loc="upper left",
                   bbox_to_anchor=(0.77, top - 1.75 / height), frameon=False)
        fig.suptitle(f"{report.name}: final losses over the learning rate", y=1 - 0.17 / height)
        return plots.save(fig, path)


def uniform_bins(logged: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bins of width `step` over log-scaled values: (every bin's lower edge from the lowest bin to the highest,
    empty ones included; each value's bin index). An axis of only the bins that hold values is uneven."""
    lower = np.floor(logged / step) * step
    axis = np.arange(lower.min(), lower.max() + step / 2, step)
    return axis, np.rint((lower - axis[0]) / step).astype(int)


def _plain(x: float) -> str:
    """A bin edge on a half-decade axis as a plain number: 0.0001, 0.0003, 0.001, ..., 3, 10."""
    value = 10**x if x == int(x) else 3 * 10 ** math.floor(x)
    return f"{value:.4f}".rstrip("0").rstrip(".") if value < 1 else f"{value:g}"


def plot_lr_hidden_heatmap(report: Report, path: Path) -> Path | None:
    """Best final validation loss of the finished runs over learning rate x hidden size (half-decade lr bins and
    power-of-two hidden bins, every bin between the smallest and the largest kept, an empty one blank), with a dot
    per run in its regime's colour (open: pruned), so the regimes show where the losses are. None when the
    sweep used one hidden size."""
    import matplotlib
    from matplotlib.colors import ListedColormap, LogNorm

    runs = report.runs[report.runs["regime"].isin(REGIMES) & np.isfinite(report.runs["lr"])
                       & np.isfinite(report.runs["hidden_size"])]
    if runs["hidden_size"].nunique() < 2:
        return None
    xs, columns = uniform_bins(np.log10(runs["lr"].to_numpy()), 0.5)
    ys, rows = uniform_bins(np.log2(runs["hidden_size"].to_numpy()), 1.0)
    grid = np.full((len(ys), len(xs)), np.nan)
    finished = ((runs["state"] == "COMPLETE") & ~runs["diverged"] & np.isfinite(runs["final_val_loss"])).to_numpy()
    for x, y, v, ok in zip(columns, rows, runs["final_val_loss"], finished, strict=True):
        if ok:
            grid[y, x] = np.fmin(grid[y, x], v)
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, ax = plots.axes(10.0, 5.6, left=0.1, bottom=0.17, top=0.91, dpi=int(plots.REPORT["dpi"]))
        fig.subplots_adjust(right=0.7)
        finite = grid[np.isfinite(grid)]
        norm = LogNorm(finite.min(), finite.max()) if finite.size and plots.positive(finite) and \
            finite.min() < finite.max() else None
        greys = ListedColormap(matplotlib.colormaps["Greys"](np.linspace(0.6, 0.12, 256)))  # white: no finished run
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=greys, norm=norm)
        placed: dict[tuple[int, int], int] = defaultdict(int)
        cells = pd.DataFrame({"x": columns, "y": rows, "regime": runs["regime"].to_numpy(),
                              "pruned": (runs["state"] == "PRUNED").to_numpy()})
        for cell in cells.itertuples():
            count = int((cells[["x", "y"]] == (cell.x, cell.y)).all(axis=1).sum())
            k = placed[(cell.x, cell.y)]
            placed[(cell.x, cell.y)] += 1
            offset = (k - (count - 1) / 2) * min(0.8 / max(count, 1), 0.22)
            colour = plots.REGIME_COLORS[cell.regime]
            ax.scatter([cell.x + offset], [cell.y], s=44, zorder=3, linewidths=1.6,
                       facecolors="white" if cell.pruned else colour, edgecolors=colour if cell.pruned else "0.15")
        fig.colorbar(image, label="best final val loss of its finished runs\n(white: none finished)", fraction=0.04,
                     pad=0.02)
        ax.set_xticks(range(len(xs)), [_plain(x) for x in xs], rotation=45)
        ax.set_yticks(range(len(ys)), [f"{2 ** int(y)}-{2 ** int(y + 1) - 1}" for y in ys])
        ax.set(xlabel="learning rate (bin from; half a decade each)", ylabel="hidden size",
               title=f"{report.name}: runs by regime over lr x hidden size")
        from matplotlib.lines import Line2D

        handles = plots.regime_handles([r for r in REGIMES if r in set(runs["regime"])])
        handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="0.3", mew=1.6, label="pruned"))
        fig.legend(handles=handles, title="a dot per run", loc="center left", bbox_to_anchor=(0.82, 0.5),
                   frameon=False)
        return plots.save(fig, path)
