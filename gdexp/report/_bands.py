"""The just-right band of each sibling group, and the learning rate the report recommends per GD variant.

A band is the contiguous range of learning rates labelled just_right in one sibling group (one GD variant and
capacity, `regimes.sibling_group`); its recommendation is the largest stable step with a margin of two below
the smallest too-large rate (`regimes.band` says why). Per GD variant the report recommends from the group
with the widest band (the most just-right runs; a tie goes to the group of the variant's best run), and sets
beside it two estimates that need no sweep: the range test's suggestion and `lr_edge`, the learning rate at
which η·λmax at initialisation is 2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gdexp import regimes
from gdexp.report._read import Report, several_datasets, variant_panels
from gdexp.report._tables import fmt_count

__all__ = ["bands", "recommend"]

BAND_COLUMNS = ["GD variant", "sibling group", "band low", "band high", "just-right runs", "smallest too-large lr",
                "recommended lr", "reason"]


def bands(report: Report, *, every_data_set: bool = False) -> pd.DataFrame:
    """One row per (GD variant, sibling group) with a just-right run: the band's ends and size, the edge above it,
    the recommended learning rate and why (numbers, not text); a first column `data set` when there are several
    (or `every_data_set`: always, for a caller that looks rows up by it)."""
    runs = report.runs[report.runs["regime"].isin(regimes.REGIMES)]
    rows = []
    for dataset, variant, _label in variant_panels(runs):
        mine = runs[(runs["dataset"] == dataset) & (runs["gd_variant"] == variant)]
        for group in sorted(set(mine["sibling_group"]), key=_capacity_first):
            points = mine[mine["sibling_group"] == group]
            found = regimes.band(list(zip(points["lr"], points["regime"], strict=True)))
            if found is not None:
                rows.append((dataset, variant, group, found.low, found.high, found.runs, found.edge, found.recommended,
                             found.reason))
    return _data_set_column(pd.DataFrame(rows, columns=["data set", *BAND_COLUMNS]), runs, every_data_set)


def _data_set_column(table: pd.DataFrame, runs: pd.DataFrame, keep: bool) -> pd.DataFrame:
    """The `data set` column kept where the runs hold several, or when asked."""
    return table if keep or several_datasets(runs) else table.drop(columns="data set")


def _capacity_first(group: str) -> tuple[float, str]:
    """Groups by the capacity bin at their end (`h64-127`): smaller networks first."""
    last = group.rsplit(" ", 1)[-1]
    low = last[1:].split("-")[0] if last.startswith("h") else ""
    return (float(low) if low.isdigit() else math.inf, group)


def recommend(report: Report, *, every_data_set: bool = False) -> pd.DataFrame:
    """One row per GD variant (and data set, when there are several, or `every_data_set`): the recommended learning
    rate, its group and reason, the range test's suggestion and the median `lr_edge` (2/λmax at initialisation) of
    the variant's runs (numbers; NaN where there is none)."""
    runs, table = report.runs, bands(report, every_data_set=True)
    rt = report.range_test
    rows = []
    for dataset, variant, _label in variant_panels(runs[runs["regime"].isin(regimes.REGIMES)]):
        here = (runs["dataset"] == dataset) & (runs["gd_variant"] == variant)
        edges = runs.loc[here, "lr_edge"].dropna()
        edge = float(edges.median()) if len(edges) else math.nan
        rt_lr = (rt["suggested_lr"] if rt is not None and rt.get("gd_variant") == variant
                 and rt.get("dataset", dataset) == dataset else math.nan)
        mine = table[(table["GD variant"] == variant) & (table["data set"] == dataset)]
        if mine.empty:
            rows.append((dataset, variant, math.nan, "", rt_lr, edge, "no run of this variant is just right: no band"))
            continue
        best = _best_group(runs[here])
        pick = mine.assign(_best=mine["sibling group"] == best).sort_values(
            ["just-right runs", "_best"], ascending=False, kind="stable").iloc[0]
        why = (f"{pick['reason']}; the band of {pick['sibling group']}: {pick['band low']:.3g} to "
               f"{pick['band high']:.3g} ({fmt_count(int(pick['just-right runs']), 'just-right run')})")
        if math.isfinite(edge):
            why += f"; {pick['recommended lr'] / edge:.2g} x the edge 2/λmax(0) = {edge:.3g}"
        rows.append((dataset, variant, float(pick["recommended lr"]), pick["sibling group"], rt_lr, edge, why))
    return _data_set_column(pd.DataFrame(rows, columns=["data set", "GD variant", "recommended lr", "sibling group",
                                                        "range test", "2/λmax(0)", "reason"]), runs,
                            every_data_set)


def _best_group(runs: pd.DataFrame) -> str:
    ok = runs[(runs["state"] == "COMPLETE") & np.isfinite(runs["final_val_loss"])]
    return "" if ok.empty else str(ok.loc[ok["final_val_loss"].idxmin(), "sibling_group"])
