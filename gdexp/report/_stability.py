"""Why a learning rate is too large, in the report: sharpness per epoch against 2/η (the figure of Cohen et al.,
ICLR 2021)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gdexp import plots
from gdexp.report._figures import lr_colours, panels
from gdexp.report._read import Report

__all__ = ["plot_sharpness"]

DECADES = 1.5  # a log y axis when the values drawn span more than this many decades


def plot_sharpness(report: Report, path: Path) -> Path | None:
    """Sharpness per epoch for each learning rate, one panel per GD variant, with each run's edge 2/η (the
    sharpness at which η·λmax = 2) dashed in the same colour; None when no run measured its sharpness."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    runs = report.runs[report.runs["run_id"].isin(list(report.sharpness))]
    if runs.empty:
        return None
    variants = [v for v in dict.fromkeys(runs["gd_variant"])]
    cmap, norm = lr_colours(runs["lr"])
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, grid, width, height = panels(1, len(variants), panel=max(4.0, 7.0 / len(variants)), right=1.65, top=1.0,
                                          height=4.3)
        axes = grid[0]
        shown = np.array([*runs["edge"], *(v for r in runs["run_id"] for v in report.sharpness[r][1])], dtype=float)
        shown = shown[np.isfinite(shown)]  # every sharpness value and edge to draw, for the y scale
        log = _log_scale(shown)
        for ax, variant in zip(axes, variants, strict=True):
            for run in runs[runs["gd_variant"] == variant].sort_values("lr").itertuples():
                steps, values = report.sharpness[run.run_id]
                colour = cmap(norm(run.lr))
                ax.plot(steps, np.where(values > 0, values, np.nan) if log else values, color=colour, lw=1.6)
                if math.isfinite(run.edge):
                    ax.axhline(run.edge, color=colour, ls="--", lw=1.1)
            ax.set(title=variant, xlabel="epoch", ylabel="sharpness λmax")
            ax.grid(True, alpha=0.3, which="both")
            if log:
                plots.log_y(ax)
                ax.set_ylim(float(shown[shown > 0].min()) / 1.5, float(shown.max()) * 1.5)
            else:
                ax.set_ylim(0, float(shown.max()) * 1.1 if shown.size and shown.max() > 0 else 1)
        fig.colorbar(ScalarMappable(norm, cmap), label="learning rate",
                     cax=fig.add_axes((1 - 1.35 / width, 0.62 / height, 0.16 / width, 1 - 1.62 / height)))
        handles = [Line2D([], [], color="0.2", lw=1.6, label="sharpness"),
                   Line2D([], [], color="0.2", lw=1.1, ls="--", label="2/η: η·λmax = 2, the edge of stability")]
        fig.suptitle(f"{report.name}: sharpness per epoch (colour: learning rate)", y=1 - 0.08 / height, va="top")
        fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1 - 0.4 / height))
        return plots.save(fig, path)


def _log_scale(shown: np.ndarray) -> bool:
    """Log when the values drawn span more than `DECADES` decades: learning rates a decade apart put their edges
    2/η a decade apart, and a linear axis flattens every sharpness curve onto 0 (the edge of stability sweep, a
    sharpness of 25 to 100 against edges of 40 to 100, stays linear from 0). A sharpness at or below 0 (a saddle's,
    or noise) has no place on a log axis: its line breaks there."""
    positive = shown[shown > 0]
    return bool(positive.size) and float(shown.max()) / float(positive.min()) > 10**DECADES
