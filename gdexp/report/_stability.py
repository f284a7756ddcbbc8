"""Why a learning rate is too large, in the report: sharpness per epoch against 2/η (the figure of Cohen et al.,
ICLR 2021), and a recommended learning rate per GD variant set beside the range test and 2/λmax(0).

The recommendation is the largest learning rate whose run is just right and whose final validation loss is
within `regimes.sibling_tolerance` of the variant's best: the fastest step that still trains as well as
the best one, which is what a user sets next. Beside it stand two estimates that need no sweep: the range
test's suggestion and `lr_edge`, the learning rate at which η·λmax at initialisation is 2 (plain GD's
stability bound at the start; the sharpness usually rises during training, so good steps lie below it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gdexp import plots
from gdexp.config import VARIANTS
from gdexp.report._figures import _lr_colours, panels
from gdexp.report._read import Report
from gdexp.report._tables import fmt_lr

__all__ = ["plot_sharpness", "recommend"]


def recommend(report: Report) -> pd.DataFrame:
    """One row per GD variant: the recommended learning rate and its reason, the range test's suggestion and
    the median `lr_edge` (2/λmax at initialisation) of the variant's runs."""
    runs = report.runs
    rows = []
    for variant in [v for v in (*VARIANTS, *sorted(set(runs["gd_variant"]) - set(VARIANTS)))
                    if v in set(runs["gd_variant"])]:
        mine = runs[(runs["gd_variant"] == variant) & (runs["state"] == "COMPLETE") & ~runs["diverged"]
                    & np.isfinite(runs["final_val_loss"])]
        edges = runs.loc[runs["gd_variant"] == variant, "lr_edge"].dropna()
        edge = float(edges.median()) if len(edges) else math.nan
        rt = report.range_test
        rt_lr = rt["suggested_lr"] if rt is not None and rt.get("gd_variant") == variant else math.nan
        if mine.empty:
            rows.append((variant, math.nan, rt_lr, edge, "no run of this variant finished without diverging"))
            continue
        best = mine.loc[mine["final_val_loss"].idxmin()]
        tolerance = float(best["sibling_tolerance"])
        near = mine[(mine["regime"] == "just_right")
                    & (mine["final_val_loss"] <= best["final_val_loss"] * (1 + tolerance))]
        if near.empty:
            pick, why = best, (f"no run is just right; the lowest final val_loss, {best['final_val_loss']:.4g}, "
                               f"is at lr {best['lr']:.3g} ({best['regime']})")
        else:
            pick = near.loc[near["lr"].idxmax()]
            why = (f"the largest learning rate whose run is just right with a final val_loss of "
                   f"{pick['final_val_loss']:.4g}, within {100 * tolerance:.3g} % of the best "
                   f"{best['final_val_loss']:.4g} (lr {best['lr']:.3g})")
        if math.isfinite(edge):
            why += f"; {pick['lr'] / edge:.2g} x the edge 2/λmax(0) = {edge:.3g}"
        rows.append((variant, float(pick["lr"]), rt_lr, edge, why))
    table = pd.DataFrame(rows, columns=["GD variant", "recommended lr", "range test", "2/λmax(0)", "reason"])
    for column in ("recommended lr", "range test", "2/λmax(0)"):
        table[column] = table[column].map(fmt_lr)
    return table


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
    cmap, norm = _lr_colours(runs["lr"])
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, axes, width, height = panels(len(variants), panel=max(4.0, 7.0 / len(variants)), right=1.65, top=1.0)
        top = 0.0
        for ax, variant in zip(axes, variants, strict=True):
            for run in runs[runs["gd_variant"] == variant].sort_values("lr").itertuples():
                steps, values = report.sharpness[run.run_id]
                colour = cmap(norm(run.lr))
                ax.plot(steps, values, color=colour, lw=1.6)
                if math.isfinite(run.edge):
                    ax.axhline(run.edge, color=colour, ls="--", lw=1.1)
                    top = max(top, run.edge)
                finite = values[np.isfinite(values)]
                top = max(top, float(finite.max()) if finite.size else 0.0)
            ax.set(title=variant, xlabel="epoch", ylabel="sharpness λmax")
            ax.grid(True, alpha=0.3)
        for ax in axes:
            ax.set_ylim(0, top * 1.1 if top > 0 else 1)
        fig.colorbar(ScalarMappable(norm, cmap), label="learning rate",
                     cax=fig.add_axes((1 - 1.35 / width, 0.62 / height, 0.16 / width, 1 - 1.62 / height)))
        handles = [Line2D([], [], color="0.2", lw=1.6, label="sharpness"),
                   Line2D([], [], color="0.2", lw=1.1, ls="--", label="2/η: η·λmax = 2, the edge of stability")]
        fig.suptitle(f"{report.name}: sharpness per epoch (colour: learning rate)", y=1 - 0.08 / height, va="top")
        fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1 - 0.4 / height))
        return plots.save(fig, path)
