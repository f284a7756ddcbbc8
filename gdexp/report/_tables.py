"""The report's tables: the regime table (learning rate down, GD variant across), the best runs, the caption."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gdexp import regimes
from gdexp.regimes import REGIMES
from gdexp.report._read import Report, several_datasets, variant_order


def fmt_count(n: int, noun: str) -> str:
    """`1 run`, `3 runs`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def fmt_lr(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else "—"


def lr_words(x: float, digits: int = 3) -> str:
    """A run's learning rate for a title or a legend: `lr 0.1`; none for a range test, whose rate rose every
    update (`_read` leaves its unused `optim.lr` out)."""
    return f"lr {x:.{digits}g}" if math.isfinite(x) else "lr raised every update, a range test"


def fmt_loss(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("diverged" if x != x or math.isinf(x) else "—")


def fmt_ratios(start: float, end: float) -> str:
    """The stability ratio η·λmax before training and at the end: `0.51 → 2.00`, `0.00043 → 0.00051` (two
    significant digits below 0.01, where two decimals read 0.00); — where not measured."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return "—"
    return " → ".join(f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}" for x in (start, end))


def fmt_acc(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "—"


def representatives(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the regime tables and figures show: per (data set, learning rate, hidden size, variant), among
    the runs that have a regime, the finished run with the lowest final val loss (a pruned or diverged one
    only if there is nothing better there). The lr is rounded to 3 significant digits to form the rows."""
    shown = runs[runs["regime"].isin(REGIMES)].copy()
    shown["lr_key"] = shown["lr"].map(lambda x: float(f"{x:.3g}") if math.isfinite(x) else x)
    shown["_pruned"] = shown["state"] != "COMPLETE"
    shown["_rank"] = shown["final_val_loss"].where(np.isfinite(shown["final_val_loss"]), np.inf)
    keys = ["dataset", "lr_key", "hidden_size", "gd_variant"]
    shown = shown.sort_values([*keys, "_pruned", "_rank", "run_id"], kind="stable")
    return shown.groupby(keys, sort=False, dropna=False).head(1).drop(columns=["_pruned", "_rank"])


def _cell(run: Any) -> str:
    if run.diverged:
        return f"diverged {run.regime}"
    accuracy = f" ({fmt_acc(run.val_accuracy)})" if math.isfinite(run.val_accuracy) else ""
    return (f"train {fmt_loss(run.final_train_loss)}, val {fmt_loss(run.final_val_loss)}{accuracy} {run.regime}"
            + (", pruned" if run.state == "PRUNED" else ""))


def pivot(report: Report) -> pd.DataFrame:
    """Learning rate down, then the hidden size; per GD variant, a cell `train <loss>, val <loss> (val_acc)
    regime` (`, pruned` when the pruner stopped the run, its losses then where it stopped) and the epochs it
    ran. The training loss is what the label reads; the validation loss what the sweep minimised."""
    reps = representatives(report.runs)
    reps["cell"] = [_cell(r) for r in reps.itertuples()]
    reps["epochs"] = reps["epochs_run"].map(lambda x: f"{x:.0f}" if math.isfinite(x) else "—")
    reps["ratio"] = [fmt_ratios(r.ratio_start, r.ratio_end) for r in reps.itertuples()]
    measured = bool(np.isfinite(reps["ratio_start"]).any())  # then each variant gains a column η·λmax start → end
    reps["hidden_size"] = reps["hidden_size"].fillna(-1.0)  # no hidden layer (or unknown): "—"
    wide = reps.pivot(index=["dataset", "lr_key", "hidden_size"], columns="gd_variant",
                      values=["cell", "epochs", "ratio"]).sort_index()
    table = pd.DataFrame({"hidden size": [f"{h:.0f}" if h >= 0 else "—" for _, _, h in wide.index]})
    if several_datasets(reps):
        table.insert(0, "data set", [d for d, _, _ in wide.index])
    for variant in variant_order(reps["gd_variant"]):
        table[variant] = wide[("cell", variant)].to_numpy()
        table[f"{variant} epochs"] = wide[("epochs", variant)].to_numpy()
        if measured:
            table[f"{variant} η·λmax"] = wide[("ratio", variant)].to_numpy()
    table = table.fillna("—")
    table.index = pd.Index([fmt_lr(lr) for _, lr, _ in wide.index], name="learning rate")
    return table


def best_per_variant(report: Report) -> pd.DataFrame:
    """The run with the lowest final validation loss (the sweep's objective) of each GD variant (and data set,
    when the report holds several: losses of different data sets do not compare)."""
    ok = report.runs[(report.runs["state"] == "COMPLETE") & ~report.runs["diverged"]
                     & np.isfinite(report.runs["final_val_loss"])]
    best = (ok.sort_values(["final_val_loss", "run_id"], kind="stable")
            .groupby(["dataset", "gd_variant"], sort=False).head(1))
    order = {v: i for i, v in enumerate(variant_order(best["gd_variant"]))}
    best = best.sort_values(["dataset", "gd_variant"], key=lambda s: s.map(order.get) if s.name == "gd_variant" else s,
                            kind="stable")
    several = {"data set": best["dataset"]} if several_datasets(report.runs) else {}
    return pd.DataFrame({
        **several,
        "GD variant": best["gd_variant"], "learning rate": best["lr"].map(fmt_lr),
        "hidden size": best["hidden_size"].map(lambda x: f"{x:.0f}" if math.isfinite(x) else "—"),
        "val loss": best["final_val_loss"].map(fmt_loss), "val accuracy": best["val_accuracy"].map(fmt_acc),
        "test accuracy": best["test_accuracy"].map(fmt_acc), "regime": best["regime"],
        "η·λmax start → end": [fmt_ratios(a, b) for a, b in zip(best["ratio_start"], best["ratio_end"], strict=True)],
        "run": best["run_id"],
    })


def caption(report: Report) -> list[str]:
    """What the tables cover: the runs that have a regime (finished and pruned); interrupted and failed
    runs are counted apart, as not counted, the way the sweep counts them."""
    runs = report.runs
    shown = runs[runs["regime"].isin(REGIMES)]
    states = ", ".join(f"{n} {word}" for n, word in (((shown["state"] == "COMPLETE").sum(), "finished"),
                                                     ((shown["state"] == "PRUNED").sum(), "pruned"),
                                                     (shown["diverged"].sum(), "diverged")))
    rest = runs[~runs["regime"].isin(REGIMES)]
    interrupted, running = (int((rest["status"] == status).sum()) for status in ("KILLED", "RUNNING"))
    apart = ", ".join(f"{n} {word}" for n, word in ((interrupted, "interrupted"), (running, "running"),
                                                    (len(rest) - interrupted - running, "failed")) if n)
    lrs = shown["lr"][np.isfinite(shown["lr"])]
    span = f"{fmt_lr(lrs.min())} to {fmt_lr(lrs.max())}" if len(lrs) else "—"
    covered = (f"Sweep {report.name!r} (MLflow parent run {report.parent_id}, experiment {report.experiment!r}): "
               f"{len(shown)} runs with a regime ({states})" + (f"; {apart}, not counted and left out" if apart else "")
               + f"; learning rates {span}, GD variants {', '.join(variant_order(shown['gd_variant']))}.")
    several = len(shown) > len(representatives(runs))
    cells = ("Cells: final training loss (what the label reads), final validation loss (validation accuracy, for a "
             "classification) and the regime label"
             + (" of the best run at that learning rate, hidden size and variant" if several else "")
             + ("; a pruned run's losses are where the pruner stopped it." if (shown["state"] == "PRUNED").any()
                else "."))
    counts = shown["regime"].value_counts()
    return [covered, cells, "Regimes: " + ", ".join(f"{counts.get(r, 0)} {r}" for r in REGIMES) + ".",
            *_range_line(report)]


def _range_line(report: Report) -> list[str]:
    """The range test's suggestion beside the sweep's best learning rates (none when there is no range test)."""
    rt = report.range_test
    if rt is None:
        return []
    best = best_per_variant(report)
    found = "; ".join(f"{v} {lr}" for v, lr in zip(best["GD variant"], best["learning rate"], strict=True))
    return [f"Learning-rate range test (run {rt['run_id']}, {rt['gd_variant']}): suggests "
            f"{fmt_lr(rt['suggested_lr'])}, just-right window {fmt_lr(rt['window_low'])} to "
            f"{fmt_lr(rt['window_high'])}, divergence from {fmt_lr(rt['divergence_lr'])}; "
            f"the sweep's best: {found or 'none'}."]


def order_problems(runs: pd.DataFrame) -> list[str]:
    """Where the labels break the order invariant (`regimes.order_violations`), per GD variant and sibling group.
    Whether a run overshot is read from its own training-loss curve, not from its label."""
    problems = []
    shown = runs[runs["regime"].isin(REGIMES)]
    for _, group in shown.groupby(["gd_variant", "sibling_group"], sort=False, dropna=False):
        members = [regimes.Sibling(
            r.lr, r.initial_train_loss, (r.final_train_loss,), "too_large" if r.overshot else "", "",
            name=f"trial {r.trial} (run {r.run_id})" if pd.notna(r.trial) else f"run {r.run_id}",
            pruned=r.state == "PRUNED") for r in group.itertuples()]
        problems += regimes.order_violations(members, list(group["regime"]))
    return problems
