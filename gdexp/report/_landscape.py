"""Seeing the steps: each run's path on its training-loss surface (`loss_landscape.png`, and linear regression's
paths step by step in `loss_landscape.gif`, from the runs' trajectory.npz) and what each GD variant's updates
cost (`cost.png`, from their metrics).

The landscape shows, per data set and GD variant, one run of each regime: the too-small run with the largest
step and the too-large run with the smallest (the pair nearest the just-right band, the contrast a teacher points
at) and the just-right run with the lowest final training loss. The cost figure shows one run per GD variant and
data set (its just-right run with the lowest final training loss, else its lowest final training loss): the
training loss after each epoch against the examples its updates processed and against the seconds they took,
with the loss of every (logged) update's own batch behind it -- the noise of the variant's steps.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gdexp import plots
from gdexp.regimes import REGIMES
from gdexp.report._figures import CAP, panels
from gdexp.report._read import Report, variant_order
from gdexp.report._tables import lr_words

__all__ = ["animate_steps", "cost_runs", "examples_at", "landscape_runs", "plot_cost", "plot_landscape"]

ARROWS = 5  # arrow heads along a path, evenly spaced by its length on the panel
FRAMES = 48  # frames of loss_landscape.gif before its last, held


def _cases(runs: pd.DataFrame) -> list[str]:
    """The data sets of a report, the smallest model first (the seeds' line before the digits MLP)."""
    sizes = runs.groupby("dataset", sort=False)["n_params"].max()
    return sorted(sizes.index, key=lambda d: (sizes[d] if math.isfinite(sizes[d]) else math.inf, d))


def landscape_runs(report: Report) -> pd.DataFrame:
    """The runs `loss_landscape.png` shows, one per (data set, GD variant, regime) that has a run with a trajectory
    (module docstring); a single run's report shows that run, whatever its label."""
    runs = report.runs[report.runs["run_id"].isin(list(report.trajectories))]
    if report.single:
        return runs
    runs = runs[runs["regime"].isin(REGIMES)]
    best = {"too_small": ("lr", False), "just_right": ("final_train_loss", True), "too_large": ("lr", True)}
    picked = [group.sort_values([best[regime][0], "run_id"], ascending=[best[regime][1], True]).head(1)
              for (_, _, regime), group in runs.groupby(["dataset", "gd_variant", "regime"], sort=False)]
    return pd.concat(picked) if picked else runs


def cost_runs(report: Report) -> pd.DataFrame:
    """The runs `cost.png` draws: per data set and GD variant, its just-right run with the lowest final training
    loss, else the run with the lowest final training loss."""
    runs = report.runs[report.runs["run_id"].isin(list(report.costs))].copy()
    runs["_rank"] = list(zip(runs["regime"] != "just_right",
                             runs["final_train_loss"].where(np.isfinite(runs["final_train_loss"]), np.inf),
                             runs["run_id"], strict=True))
    return (runs.sort_values("_rank").groupby(["dataset", "gd_variant"], sort=False).head(1)
            .drop(columns="_rank"))


def examples_at(updates: np.ndarray, rows: float, batch: float) -> np.ndarray:
    """Examples processed after each of the 1-based update numbers `updates`, for a training set of `rows` cut into
    batches of `batch` (every batch full but an epoch's last): full epochs x rows + min(updates inside x batch,
    rows), the count the loop keeps (`History`)."""
    per_epoch = math.ceil(rows / batch)
    full, inside = np.divmod(np.asarray(updates, dtype=float), per_epoch)
    return full * rows + np.minimum(inside * batch, rows)


def _arrows(ax: Any, path: np.ndarray, colour: str) -> None:
    """Arrow heads at ARROWS places evenly spaced along the path's length as the panel shows it (each axis scaled
    to its range), pointing the way the steps went."""
    span = np.ptp(path, axis=0)
    steps = np.diff(path / np.where(span > 0, span, 1.0), axis=0)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(*steps.T))])
    if len(path) < 2 or length[-1] == 0:
        return
    for target in length[-1] * (np.arange(ARROWS) + 0.5) / ARROWS:
        i = int(min(np.searchsorted(length, target), len(path) - 1))
        i = max(i, 1)
        ax.annotate("", xy=path[i], xytext=path[i - 1], zorder=4,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2, "mutation_scale": 15,
                                "shrinkA": 0, "shrinkB": 0})


def _contours(ax: Any, t: dict[str, np.ndarray], filled: bool = True) -> None:
    """The training loss on the plane: filled contours on log-spaced levels (pale: low), thin lines between (only
    every other line, paler, when not `filled`)."""
    import matplotlib
    from matplotlib.colors import ListedColormap, LogNorm

    z = np.ma.masked_invalid(t["grid_loss"])
    finite = z.compressed()
    if not finite.size:
        return
    low, high = float(finite.min()), float(finite.max())
    cmap = ListedColormap(matplotlib.colormaps["Greys"](np.linspace(0.02, 0.55, 256)))
    if low > 0 and high > 1.01 * low:
        levels, norm = np.geomspace(low, high, 16), LogNorm(low, high)
    else:
        levels, norm = np.linspace(low, high + 1e-12, 16), None
    if filled:
        ax.contourf(t["grid_x"], t["grid_y"], z, levels=levels, cmap=cmap, norm=norm)
    # lines not antialiased: their shades of grey were 40 % of the PNG (and most of the GIF), crisp ones compress
    ax.contour(t["grid_x"], t["grid_y"], z, levels=levels if filled else levels[::2], colors="0.55" if filled else
               "0.72", linewidths=0.4 if filled else 0.6, norm=norm, antialiased=False)


def _panel(ax: Any, run: Any, t: dict[str, np.ndarray], two: bool, filled: bool = True) -> None:
    path, colour = t["path"], plots.REGIME_COLORS.get(run.regime, plots.REGIME_COLORS["none"])
    _contours(ax, t, filled)
    ax.plot(path[:, 0], path[:, 1], color=colour, lw=1.5, zorder=3)
    whole = np.isclose(t["epoch"], np.round(t["epoch"])) & (t["epoch"] > 0)
    ax.plot(path[whole, 0], path[whole, 1], ls="", marker="o", ms=2.6, color=colour, zorder=3)
    _arrows(ax, path, colour)
    ax.plot(*path[0], ls="", marker="o", ms=8, mfc="white", mec="0.1", mew=1.4, zorder=5)
    ax.plot(*path[-1], ls="", marker="*", ms=13, mfc="0.1", mec="white", mew=0.6, zorder=5)
    explained = float(t["explained"])
    ax.set_xlim(t["grid_x"][0], t["grid_x"][-1])
    ax.set_ylim(t["grid_y"][0], t["grid_y"][-1])
    label = run.regime if run.regime in REGIMES else "no regime"
    ax.set_title(f"{run.gd_variant}, {lr_words(run.lr, 6)}: {label}" + (" (diverged)" if run.diverged else "")
                 + ("\nthe plane is (w, b) itself" if two else f"\nplane: {explained:.1%} of the path's variance"),
                 color=colour, fontsize="medium")
    if two:
        ax.set(xlabel="w (slope)", ylabel="b (intercept)")
    else:
        spread = np.var(path, axis=0)
        share = explained * spread / spread.sum() if spread.sum() > 0 else [explained, 0.0]
        ax.set(xlabel=f"PCA direction 1 ({share[0]:.0%})", ylabel=f"PCA direction 2 ({share[1]:.0%})")
    ax.tick_params(labelsize="small")


def plot_landscape(report: Report, path: Path) -> Path | None:
    """`loss_landscape.png`: for each data set a block of panels, GD variants down and regimes across, each the
    run's path (in its regime's colour, arrows the way it went, a dot per epoch; start ○, end ★) on the contours of
    the training loss of its plane; None when no run recorded a trajectory."""
    import matplotlib
    from matplotlib.lines import Line2D

    shown = landscape_runs(report)
    if shown.empty:
        return None
    cases, variants = _cases(shown), variant_order(shown["gd_variant"])
    columns = ["run"] if report.single else list(REGIMES)
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        size = 7.0 if report.single else 3.6  # one run: a panel of its own, as wide as a report figure
        fig, axes, _, height = panels(len(variants), len(cases) * len(columns), panel=size, right=0.3, top=1.55,
                                      height=size - 0.1)
        fig.subplots_adjust(wspace=0.38, hspace=0.6, bottom=1.05 / height)
        for c, case in enumerate(cases):
            for r, variant in enumerate(variants):
                for k, column in enumerate(columns):
                    ax = axes[r][c * len(columns) + k]
                    found = shown[(shown["dataset"] == case) & (shown["gd_variant"] == variant)
                                  & ((shown["regime"] == column) | report.single)]
                    if found.empty:
                        ax.set_axis_off()
                        ax.text(0.5, 0.5, f"{variant}: no {column} run\nwith a trajectory", ha="center", va="center",
                                transform=ax.transAxes, color="0.5", fontsize="small")
                        continue
                    run = next(found.itertuples())
                    t = report.trajectories[run.run_id]
                    _panel(ax, run, t, two=t["path"].shape[1] == 2 and run.n_params == 2)
            left, right = axes[0][c * len(columns)], axes[0][(c + 1) * len(columns) - 1]
            middle = (left.get_position().x0 + right.get_position().x1) / 2
            n = shown.loc[shown["dataset"] == case, "n_params"].max()
            fig.text(middle, 1 - 0.95 / height, f"{case} ({n:,.0f} parameters)" if math.isfinite(n) else case,
                     ha="center", va="bottom", fontsize="large", weight="bold")
        planes = (["Linear regression: the plane is (w, b)"] if (shown["n_params"] == 2).any() else []) + (
            ["MLP: the plane of the path's top two PCA directions through its final weights (Li et al. 2018), not "
             "filter-normalised"] if (shown["n_params"] != 2).any() else [])
        text = (f"{report.name}: gradient descent's path on the training-loss surface (contours: training loss, "
                f"log-spaced, pale = low). {'; '.join(planes)}")
        fig.suptitle(textwrap.fill(text, min(140, int(fig.get_figwidth() * 12))), y=1 - 0.08 / height, va="top",
                     fontsize="medium")
        marks = [Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="0.1", mew=1.4, label="start"),
                 Line2D([], [], ls="", marker="*", ms=13, mfc="0.1", mec="white", label="end (the final weights)"),
                 *[Line2D([], [], color=plots.REGIME_COLORS[r], lw=1.5, marker="o", ms=2.6, label=f"{r} (a dot per "
                          "epoch)") for r in REGIMES if r in set(shown["regime"])]]
        fig.legend(handles=marks, loc="lower center", ncol=len(marks), frameon=False, fontsize="small",
                   bbox_to_anchor=(0.5, 0.0))
        return plots.save(fig, path)


def animate_steps(report: Report, path: Path, *, frames: int = FRAMES, dpi: int = 64) -> Path | None:
    """`loss_landscape.gif`: the linear-regression block of the landscape (GD variants down, regimes across), step
    by step: every path grows point by point, all at the same place in their runs (in epochs), so batch GD's one
    step an epoch plays beside stochastic GD's many noisy ones, and the order of a too-large run's jumps shows. The
    frames follow the recorded points, so the first epochs, where the steps zig-zag, get most of them; contour
    lines without fills keep the file small. A single run's report animates that run. None when no run with two
    parameters recorded a trajectory."""
    import matplotlib
    from matplotlib.animation import PillowWriter

    shown = landscape_runs(report)
    shown = shown[shown["n_params"] == 2]
    if shown.empty:
        return None
    variants = variant_order(shown["gd_variant"])
    columns = ["run"] if report.single else [r for r in REGIMES if r in set(shown["regime"])]
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, axes, _, height = panels(len(variants), len(columns), panel=3.4, right=0.3, top=0.9, height=3.3)
        fig.subplots_adjust(wspace=0.38, hspace=0.6)
        moving = []
        for r, variant in enumerate(variants):
            for k, column in enumerate(columns):
                ax = axes[r][k]
                found = shown[(shown["gd_variant"] == variant) & ((shown["regime"] == column) | report.single)]
                if found.empty:
                    ax.set_axis_off()
                    continue
                run = next(found.itertuples())
                t = report.trajectories[run.run_id]
                _panel(ax, run, t, two=True, filled=False)
                for arrow in list(ax.texts):
                    arrow.remove()
                line, dots, _, end = ax.lines[:4]
                head, = ax.plot([], [], ls="", marker="o", ms=6, color=line.get_color(), mec="0.1", zorder=6)
                moving.append((t, line, dots, end, head))
        when = np.unique(np.concatenate([t["epoch"] for t, *_ in moving]))
        when = when[np.unique(np.linspace(0, len(when) - 1, min(frames, len(when))).round().astype(int))]
        title = fig.suptitle("", y=1 - 0.1 / height, va="top")
        writer = PillowWriter(fps=6)
        with writer.saving(fig, str(path), dpi):
            for now in [*when, *[when[-1]] * 9]:  # the last frame held 1.5 s
                for t, line, dots, end, head in moving:
                    seen = t["epoch"] <= now
                    whole = seen & np.isclose(t["epoch"], np.round(t["epoch"])) & (t["epoch"] > 0)
                    line.set_data(t["path"][seen, 0], t["path"][seen, 1])
                    dots.set_data(t["path"][whole, 0], t["path"][whole, 1])
                    head.set_data(t["path"][seen][-1:, 0], t["path"][seen][-1:, 1])
                    end.set_visible(bool(seen.all()))
                title.set_text(f"{report.name}: linear regression's path in (w, b), step by step: epoch {now:.2f}")
                writer.grab_frame()
        return path


def _drawable(values: np.ndarray, ceiling: float) -> np.ndarray:
    """NaN where a value is not finite (matplotlib fails on an infinite one: an axis limit, a log scale), and
    none above `ceiling`, the axis top (float64's largest number still overflows a log axis)."""
    return np.minimum(np.where(np.isfinite(values), values, np.nan), ceiling)


def plot_cost(report: Report, path: Path) -> Path | None:
    """`cost.png`: per data set, the training loss against the examples the updates processed and against the
    seconds they took (both as the runs measured them), one line per GD variant, each update's batch loss faint
    behind; None when no run recorded its cost."""
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.ticker import StrMethodFormatter

    shown = cost_runs(report)
    if shown.empty:
        return None
    cases = _cases(shown)
    shown = shown.sort_values("gd_variant", key=lambda v: v.map(variant_order(shown["gd_variant"]).index),
                              kind="stable")
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, axes, _, height = panels(len(cases), 2, panel=5.6, right=3.0, top=1.0, height=3.9)
        capped = False
        for row, case in zip(axes, cases, strict=True):
            here = shown[shown["dataset"] == case]
            starts = [h for h in here["initial_train_loss"] if math.isfinite(h)]
            ceiling = CAP * max(starts) if starts else math.inf  # as loss_curves.png: past it, a triangle on top
            lows, highs = [], []
            for run in here.itertuples():
                cost, colour = report.costs[run.run_id], plots.VARIANT_COLORS.get(run.gd_variant, "0.4")
                marker = plots.VARIANT_MARKS.get(run.gd_variant, "D")
                rows = float(np.max(np.diff(cost.examples, prepend=0.0))) if len(cost.examples) else math.nan
                batch = rows if run.batch_size in ("", "None") else float(run.batch_size)
                updates = int(np.ceil(np.diff(cost.examples, prepend=0.0) / batch).sum()) if math.isfinite(rows) else 0
                regime = run.regime if run.regime in REGIMES else "no regime"
                label = (f"{run.gd_variant}, {lr_words(run.lr)} ({regime}):\n"
                         f"{updates:,} updates, {1e3 * cost.seconds[-1] / max(updates, 1):.3g} ms each")
                loss = _drawable(cost.loss, ceiling)  # NaN, inf: the line ends where it diverged
                if len(cost.updates) and math.isfinite(rows):
                    row[0].scatter(examples_at(cost.updates, rows, batch), _drawable(cost.batch_loss, ceiling),
                                   s=7, color=colour, alpha=0.3, linewidths=0, zorder=1, rasterized=True)
                over = cost.loss > ceiling  # inf included
                capped |= bool(over.any())
                for ax, x in zip(row, (cost.examples, cost.seconds), strict=True):
                    ax.plot(x, loss, color=colour, marker=marker, ms=3.5, lw=1.6, label=label, zorder=3,
                            markevery=None if len(loss) <= 60 else 0.05)  # 3,000 epochs: a mark per 5 %
                    if over.any():
                        ax.scatter(np.asarray(x)[over], np.full(int(over.sum()), ceiling), marker="^", s=34,
                                   color=colour, zorder=4, clip_on=False)
                lows.append(float(np.nanmin(loss)) if np.isfinite(loss).any() else math.nan)
                highs.append(float(np.nanmax(loss)) if np.isfinite(loss).any() else math.nan)
            for ax, what in zip(row, ("examples processed by the updates (rows of their batches, summed)",
                                      "seconds spent in the updates (update_time_s)"), strict=True):
                plots.log_x(ax)
                if ax is row[0]:  # counts: 1,000, not 1e+03
                    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
                if starts and plots.positive(lows + starts):
                    plots.log_y(ax)
                    ax.set_ylim(np.nanmin(lows + starts) / 3, np.nanmax(highs + starts) * 1.5)
                for initial in set(starts):
                    ax.axhline(initial, color="0.6", ls=":", lw=1)
                ax.set(xlabel=what, ylabel=f"{case}: training loss")
                ax.grid(True, alpha=0.3, which="both")
            row[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize="small",
                          title=f"{case}: GD variant", title_fontsize="small")
        handles = [Line2D([], [], color="0.3", lw=1.6, marker="o", ms=3.5, label="training loss after each epoch"),
                   Line2D([], [], ls="", marker="o", ms=3, color="0.3", alpha=0.35,
                          label="loss of an update's own batch (logged ones): the noise of its steps"),
                   Line2D([], [], color="0.6", ls=":", lw=1, label="loss before the first update")]
        if capped:
            handles.append(Line2D([], [], ls="", marker="^", ms=6, color="0.15",
                                  label=f"above {CAP:g}x the initial loss (drawn at that level)"))
        fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize="small",
                   bbox_to_anchor=(0.5, 1 - 0.45 / height))
        fig.suptitle(f"{report.name}: what each GD variant's updates cost, as the runs measured it",
                     y=1 - 0.08 / height, va="top")
        return plots.save(fig, path)
