"""`python -m gdexp.report NAME`: a sweep's runs, read from MLflow, as the tables and plots a report needs.

NAME is a sweep's name (`sweep.name`) or its parent run id. The report reads only the MLflow store
(a SQLite file or a tracking server): the parent run, its child runs with their params, final metrics
and tags, and each child's `val_loss` history. It writes under `sweeps/<name>/report/` (or `--out`)
and logs the same files to the sweep's parent run (folder `report/`):

- `runs.csv`: one row per run, raw numbers as stored;
- `regimes.{csv,md,tex,html,json}`: learning rate (and hidden size) down, GD variant across, each cell
  the final validation loss (accuracy) and regime, with the epochs each run ran, plus the best run per
  variant and a caption saying which runs the table covers -- and, when the experiment holds a
  learning-rate range test on the same data, GD variant and optimizer, its suggestion beside the
  sweep's best learning rates;
- `loss_curves.png`, `final_loss_vs_lr.png`, `lr_hidden_heatmap.png` (the last when the sweep varied
  the hidden size).

The regime tables and figures hold the runs that have a regime: finished and pruned trials. An
interrupted or failed trial (`regime=none`) is listed in `runs.csv` and counted apart in the caption.
Before it writes anything, the report checks the order invariant of the labels
(`regimes.order_violations`) and refuses, naming the runs, when they break it.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from gdexp import plots, regimes, stopping
from gdexp.config import CONFIG_DIR, mask_secrets
from gdexp.regimes import NONE, REGIMES
from gdexp.tracking import DEFAULT_URI, client_for, local_store_missing

__all__ = ["Report", "ReportError", "build", "main", "write"]

FORMATS = ("csv", "md", "tex", "html", "json", "png")
VARIANTS = ("batch", "minibatch", "stochastic")
VARIANT_MARKS = {"batch": ("s", "-"), "minibatch": ("o", "--"), "stochastic": ("^", "-.")}  # marker, line style
LABELLED = ("COMPLETE", "PRUNED")  # the trial states that have a regime
PAGE = 1000  # runs per search request


class ReportError(RuntimeError):
    """A report cannot be made (unknown sweep, no runs, unreachable store): the message says why."""


@dataclass
class Report:
    """What `build` read: the parent run, one row per child, and each child's val_loss per epoch."""

    name: str
    parent_id: str
    experiment: str
    uri: str
    runs: pd.DataFrame
    curves: dict[str, np.ndarray]  # run id -> val_loss by epoch (epoch 0: before training)
    range_test: dict[str, Any] | None  # the latest matching lr_range run's suggestion, if any
    fraction: float


# ------------------------------------------------------------------------------------------ reading
def _client(uri: str) -> Any:
    if local_store_missing(uri):
        raise ReportError(f"no MLflow store at {uri}: run a sweep first, or pass --uri")
    return client_for(uri)


def _search(client: Any, experiment_id: str, query: str, order: Sequence[str] = ()) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=PAGE, order_by=list(order), page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _find_parent(client: Any, experiment_id: str, name: str) -> Any:
    if re.fullmatch(r"[0-9a-f]{32}", name):
        from mlflow.exceptions import MlflowException

        try:
            return client.get_run(name)
        except MlflowException:
            pass
    found = _search(client, experiment_id, f"tags.`gdexp.role` = 'sweep' and tags.`gdexp.sweep` = '{name}'",
                    ["attributes.start_time DESC"])
    if found:
        return found[0]
    sweeps = sorted({r.data.tags.get("gdexp.sweep", "") for r in
                     _search(client, experiment_id, "tags.`gdexp.role` = 'sweep'")} - {""})
    known = f"sweeps in this experiment: {', '.join(sweeps)}" if sweeps else "this experiment holds no sweep yet"
    raise ReportError(f"no sweep named {name!r} (nor a run with that id): {known}")


def histories(client: Any, run_ids: Sequence[str], key: str, threads: int = 8) -> dict[str, list[float]]:
    """Each run's values of metric `key`, in step order. A database store answers for 500 runs per query
    (its bulk read); a tracking server is asked run by run, `threads` requests at a time."""
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    store: Any = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk"):  # MLflow's SqlAlchemyStore (SQLite, PostgreSQL, ...)
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i : i + 500])
            for point in store.get_metric_history_bulk(chunk, key, max_results=10**9):
                found[point.run_id].append((point.step, point.value))
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            answers = pool.map(lambda run_id: client.get_metric_history(run_id, key), run_ids)
            for run_id, points in zip(run_ids, answers, strict=True):
                found[run_id] = [(m.step, m.value) for m in points]
    return {run_id: [v for _, v in sorted(points)] for run_id, points in found.items()}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def epochs_to(curve: np.ndarray, fraction: float, min_progress: float = 0.0) -> float:
    """The first epoch at which the loss had made `fraction` of its total decrease (initial -> best);
    NaN when the run did not learn: the loss never decreased, or it ended less than `min_progress` of its
    initial value below it (the regime rule's bar for a loss that barely moved). A run whose loss fell 1 %
    makes 90 % of that 1 % at some epoch, and the number would read as a speed."""
    finite = curve[np.isfinite(curve)]
    if len(curve) < 2 or not np.isfinite(curve[0]) or finite.min() >= curve[0]:
        return math.nan
    if curve[0] - finite[-1] < min_progress * abs(curve[0]):
        return math.nan
    target = curve[0] - fraction * (curve[0] - finite.min())
    return float(np.argmax(np.where(np.isfinite(curve), curve, np.inf) <= target))


@functools.cache
def _default_rules() -> dict[str, float]:
    return {str(k): float(v) for k, v in OmegaConf.load(CONFIG_DIR / "regimes" / "default.yaml").items()}


def _rules(params: dict[str, str]) -> dict[str, float]:
    """The regime rule's thresholds a run was labelled with (its params `regimes.*`; the defaults for a run
    that has none)."""
    return {k: _number(params.get(f"regimes.{k}", v)) for k, v in _default_rules().items()}


def _overshot(run: Any, train_losses: Sequence[float]) -> bool:
    """Did the run's own training-loss curve diverge or rise (`regimes.overshoot`)? Then it is too_large
    wherever its learning rate is, and the order check lets it be."""
    why = regimes.overshoot(run.data.metrics.get("initial_train_loss", math.nan), train_losses,
                            diverged=run.data.tags.get("diverged") == "true", rules=_rules(run.data.params))
    return why is not None


def _row(run: Any, curve: np.ndarray, fraction: float, train_losses: Sequence[float], *, overshot: bool,
         group: str) -> dict[str, Any]:
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    epochs = curve[1:]
    finite = epochs[np.isfinite(epochs)]
    state = t.get("optuna.state", run.info.status)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "trial": int(t["optuna.trial"]) if t.get("optuna.trial", "").isdigit() else None,
        "state": state,
        "status": run.info.status,
        "gd_variant": p.get("gd.variant", t.get("gd.variant", "")),
        "batch_size": p.get("gd.batch_size", ""),
        "optimizer": p.get("optim.name", t.get("optimizer", "")),
        "lr": _number(p.get("optim.lr")),
        "hidden_size": _number(p.get("model.hidden_size")),
        "hidden_layers": _number(p.get("model.hidden_layers")),
        "epochs_run": m.get("epochs_run", float(len(epochs))),
        "final_train_loss": m.get("train_loss", math.nan),
        "best_train_loss": min((v for v in train_losses if math.isfinite(v)), default=math.nan),
        "final_val_loss": m.get("val_loss", math.nan),
        "best_val_loss": float(finite.min()) if finite.size else math.nan,
        "val_accuracy": m.get("val_accuracy", math.nan),
        "test_loss": m.get("test_loss", math.nan),
        "test_accuracy": m.get("test_accuracy", math.nan),
        f"epochs_to_{round(100 * fraction)}pct": epochs_to(curve, fraction, _rules(p)["min_progress"]),
        "diverged": t.get("diverged", "") == "true",
        "overshot": overshot,
        "regime": t.get("regime", "") if state in LABELLED else NONE,
        "regime_reason": t.get("regime_reason", ""),
        "sibling_group": group,
        "train_time_s": m.get("train_time_s", math.nan),
    }


def build(name: str, *, uri: str = DEFAULT_URI, experiment: str = "gdexp", fraction: float = 0.9,
          threads: int = 8) -> Report:
    """Read a sweep's parent and children from MLflow into a `Report`."""
    if not 0 < fraction <= 1:
        raise ReportError(f"--fraction={fraction} is not allowed: a share in (0, 1]")
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReportError(f"no experiment {experiment!r} in {mask_secrets(uri)} (experiments there: {names})")
    parent = _find_parent(client, exp.experiment_id, name)
    sweep_name = parent.data.tags.get("gdexp.sweep", name)
    children = _search(client, exp.experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    if not children:
        raise ReportError(f"sweep {sweep_name!r} (parent run {parent.info.run_id}) has no runs yet")

    ids = [r.info.run_id for r in children]
    val = histories(client, ids, "val_loss", threads)
    # The best train loss is the final one unless the loss went up: only those runs' histories are read.
    rose = [r.info.run_id for r in children if r.data.tags.get("regime") not in ("too_small", "just_right")
            or r.data.tags.get("diverged") == "true"]
    trn = {r.info.run_id: [r.data.metrics.get("train_loss", math.nan)] for r in children}
    trn.update(histories(client, rose, "train_loss", threads))
    curves = {r.info.run_id: np.array([r.data.metrics.get("initial_val_loss", math.nan), *val[r.info.run_id]],
                                      dtype=float) for r in children}
    read = set(rose)  # a run labelled too_small or just_right did not overshoot: its curve is not needed
    overshot = {r.info.run_id: _overshot(r, trn[r.info.run_id]) for r in children if r.info.run_id in read}
    fixed = sorted(k for k in _searched(parent) if k not in regimes.SIBLING_FREE)
    runs = pd.DataFrame([_row(r, curves[r.info.run_id], fraction, trn[r.info.run_id],
                              overshot=overshot.get(r.info.run_id, False),
                              group=" ".join(f"{k}={r.data.params[k]}" for k in fixed if k in r.data.params))
                         for r in children])
    order = pd.Categorical(runs["gd_variant"], [*VARIANTS, *sorted(set(runs["gd_variant"]) - set(VARIANTS))])
    runs = (runs.assign(_v=order).sort_values(["_v", "lr", "hidden_size", "trial", "run_id"], kind="stable")
            .drop(columns="_v").reset_index(drop=True))
    return Report(sweep_name, parent.info.run_id, experiment, uri, runs, curves,
                  _range_test(client, exp.experiment_id, parent), fraction)


def _range_test(client: Any, experiment_id: str, parent: Any) -> dict[str, Any] | None:
    """The newest lr_range run on the sweep's data set, GD variant and optimizer."""
    t = parent.data.tags
    query = (f"tags.`gdexp.role` = 'lr_range' and tags.dataset = '{t.get('dataset', '')}' and "
             f"tags.optimizer = '{t.get('optimizer', '')}'")
    found = [r for r in _search(client, experiment_id, query, ["attributes.start_time DESC"])
             if r.data.params.get("gd.variant") == t.get("gd.variant") or "gd" in _searched(parent)]
    if not found:
        return None
    p = found[0].data.params
    keys = ("suggested_lr", "window_low", "window_high", "divergence_lr")
    return {"run_id": found[0].info.run_id, "gd_variant": p.get("gd.variant", ""),
            **{k: _number(p.get(f"lr_range.{k}")) for k in keys}}


def _searched(parent: Any) -> set[str]:
    return {k.removeprefix("sweep.params.") for k in parent.data.params if k.startswith("sweep.params.")}


# ------------------------------------------------------------------------------------------ tables
def fmt_lr(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else "—"


def fmt_loss(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("diverged" if x != x or math.isinf(x) else "—")


def fmt_acc(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "—"


def _representatives(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the regime tables and figures show: per (learning rate, hidden size, variant), among the
    runs that have a regime, the finished run with the lowest final val loss (a pruned or diverged one
    only if there is nothing better there). The lr is rounded to 3 significant digits to form the rows."""
    shown = runs[runs["regime"].isin(REGIMES)].copy()
    shown["lr_key"] = shown["lr"].map(lambda x: float(f"{x:.3g}") if math.isfinite(x) else x)
    shown["_pruned"] = shown["state"] != "COMPLETE"
    shown["_rank"] = shown["final_val_loss"].where(np.isfinite(shown["final_val_loss"]), np.inf)
    shown = shown.sort_values(["lr_key", "hidden_size", "gd_variant", "_pruned", "_rank", "run_id"], kind="stable")
    return (shown.groupby(["lr_key", "hidden_size", "gd_variant"], sort=False, dropna=False).head(1)
            .drop(columns=["_pruned", "_rank"]))


def _variants(names: Any) -> list[str]:
    """GD variants in their usual order (batch, minibatch, stochastic), others after them."""
    present = list(dict.fromkeys(names))
    return [v for v in VARIANTS if v in present] + sorted(v for v in present if v not in VARIANTS)


def _cell(run: Any) -> str:
    loss = fmt_loss(run.final_val_loss if not run.diverged else math.nan)
    accuracy = f" ({fmt_acc(run.val_accuracy)})" if math.isfinite(run.val_accuracy) and not run.diverged else ""
    return f"{loss}{accuracy} {run.regime}" + (", pruned" if run.state == "PRUNED" else "")


def pivot(report: Report) -> pd.DataFrame:
    """Learning rate down, then the hidden size; per GD variant, a cell `val_loss (val_acc) regime`
    (`, pruned` when the pruner stopped the run, its loss then where it stopped) and the epochs it ran."""
    reps = _representatives(report.runs)
    reps["cell"] = [_cell(r) for r in reps.itertuples()]
    reps["epochs"] = reps["epochs_run"].map(lambda x: f"{x:.0f}" if math.isfinite(x) else "—")
    reps["hidden_size"] = reps["hidden_size"].fillna(-1.0)
    wide = reps.pivot(index=["lr_key", "hidden_size"], columns="gd_variant", values=["cell", "epochs"]).sort_index()
    table = pd.DataFrame({"hidden size": [f"{h:.0f}" if h >= 0 else "—" for _, h in wide.index]})
    for variant in _variants(reps["gd_variant"]):
        table[variant] = wide[("cell", variant)].to_numpy()
        table[f"{variant} epochs"] = wide[("epochs", variant)].to_numpy()
    table = table.fillna("—")
    table.index = pd.Index([fmt_lr(lr) for lr, _ in wide.index], name="learning rate")
    return table


def best_per_variant(report: Report) -> pd.DataFrame:
    ok = report.runs[(report.runs["state"] == "COMPLETE") & ~report.runs["diverged"]
                     & np.isfinite(report.runs["final_val_loss"])]
    best = ok.sort_values(["final_val_loss", "run_id"], kind="stable").groupby("gd_variant", sort=False).head(1)
    order = {v: i for i, v in enumerate(VARIANTS)}
    best = best.sort_values("gd_variant", key=lambda s: s.map(lambda v: order.get(v, len(order))), kind="stable")
    return pd.DataFrame({
        "GD variant": best["gd_variant"], "learning rate": best["lr"].map(fmt_lr),
        "hidden size": best["hidden_size"].map(lambda x: f"{x:.0f}" if math.isfinite(x) else "—"),
        "val loss": best["final_val_loss"].map(fmt_loss), "val accuracy": best["val_accuracy"].map(fmt_acc),
        "test accuracy": best["test_accuracy"].map(fmt_acc), "regime": best["regime"], "run": best["run_id"],
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
    interrupted = int((rest["status"] == "KILLED").sum())
    apart = ", ".join(f"{n} {word}" for n, word in ((interrupted, "interrupted"), (len(rest) - interrupted, "failed"))
                      if n)
    lrs = shown["lr"][np.isfinite(shown["lr"])]
    span = f"{fmt_lr(lrs.min())} to {fmt_lr(lrs.max())}" if len(lrs) else "—"
    covered = (f"Sweep {report.name!r} (MLflow parent run {report.parent_id}, experiment {report.experiment!r}): "
               f"{len(shown)} runs with a regime ({states})" + (f"; {apart}, not counted and left out" if apart else "")
               + f"; learning rates {span}, GD variants {', '.join(_variants(shown['gd_variant']))}.")
    several = len(shown) > len(_representatives(runs))
    cells = ("Cells: final validation loss (validation accuracy) and the regime label"
             + (" of the best run at that learning rate, hidden size and variant" if several else "")
             + ("; a pruned run's loss is where the pruner stopped it, and its label compares it with its siblings "
                "at that epoch." if (shown["state"] == "PRUNED").any() else "."))
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
    """Where the labels break the order invariant (`regimes.order_violations`), per sibling group: runs
    that differ only in the learning rate and the hidden size. The best run is recomputed from the final
    losses, and whether a run overshot from its own training-loss curve, not read from the labels."""
    problems = []
    shown = runs[runs["regime"].isin(REGIMES)]
    keys = ["gd_variant", "batch_size", "optimizer", "sibling_group"]
    for _, group in shown.groupby(keys, sort=False, dropna=False):
        members = [regimes.Sibling(
            r.lr, r.final_val_loss, "too_large" if r.overshot else "", "", hidden=r.hidden_size,
            name=f"trial {r.trial} (run {r.run_id})" if pd.notna(r.trial) else f"run {r.run_id}",
            pruned_at=int(r.epochs_run) if r.state == "PRUNED" else None) for r in group.itertuples()]
        problems += regimes.order_violations(members, list(group["regime"]))
    return problems


def _markdown(report: Report, table: pd.DataFrame, best: pd.DataFrame) -> str:
    from tabulate import tabulate

    return "\n".join([
        f"## Learning-rate regimes: sweep `{report.name}`", "",
        *(f"> {line}" for line in caption(report)), "",
        tabulate(table, headers="keys", tablefmt="pipe", disable_numparse=True), "",
        "### Best run per GD variant", "",
        tabulate(best, headers="keys", tablefmt="pipe", showindex=False, disable_numparse=True), "",
    ])


def _latex(report: Report, table: pd.DataFrame, best: pd.DataFrame) -> str:
    from tabulate import tabulate

    def esc(text: str) -> str:
        return tabulate([[text]], tablefmt="latex").splitlines()[2].removesuffix("\\\\").strip()

    label = re.sub(r"[^A-Za-z0-9]+", "-", report.name)
    return "\n".join([
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[htbp]", "\\centering", "\\small",
        tabulate(table, headers="keys", tablefmt="latex_booktabs", disable_numparse=True),
        f"\\caption{{{' '.join(esc(line) for line in caption(report))}}}",
        f"\\label{{tab:regimes-{label}}}", "\\end{table}", "",
        "\\begin{table}[htbp]", "\\centering", "\\small",
        tabulate(best.drop(columns="run"), headers="keys", tablefmt="latex_booktabs", showindex=False,
                 disable_numparse=True),
        f"\\caption{{Best run per GD variant, sweep {esc(report.name)}.}}",
        f"\\label{{tab:best-{label}}}", "\\end{table}", "",
    ])


def _html(report: Report, table: pd.DataFrame, best: pd.DataFrame) -> str:
    import html

    from tabulate import tabulate

    style = ("body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "th,td{border-bottom:1px solid #ccc;padding:.3em .8em;text-align:right}th:first-child,"
             "td:first-child{text-align:left}")
    return "\n".join([
        "<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
        f"<title>gdexp: sweep {html.escape(report.name)}</title><style>{style}</style></head><body>",
        f"<h1>Learning-rate regimes: sweep {html.escape(report.name)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in caption(report)),
        tabulate(table, headers="keys", tablefmt="html", disable_numparse=True),
        "<h2>Best run per GD variant</h2>",
        tabulate(best, headers="keys", tablefmt="html", showindex=False, disable_numparse=True),
        "</body></html>", "",
    ])


# ------------------------------------------------------------------------------------------- plots
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
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    reps = _representatives(report.runs)
    variants = _variants(reps["gd_variant"])
    curves = {run_id: report.curves[run_id] for run_id in reps["run_id"]}
    values = np.concatenate([c[np.isfinite(c)] for c in curves.values()] or [np.ones(1)])
    starts = np.array([c[0] for c in curves.values() if len(c) and np.isfinite(c[0])] or [values.max()])
    cap = min(values.max(), 30 * starts.max())
    cmap, norm = _lr_colours(reps["lr"])
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        panel, height = max(3.6, 6.4 / len(variants)), 5.0
        width = panel * len(variants) + 1.7
        fig = Figure(figsize=(width, height), dpi=plots.REPORT["dpi"])
        fig.subplots_adjust(left=0.8 / width, right=1 - 1.35 / width, top=1 - 1.2 / height, bottom=0.62 / height,
                            wspace=0.32)
        axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
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
                     cax=fig.add_axes((1 - 1.05 / width, 0.62 / height, 0.16 / width, 1 - 1.82 / height)))
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

    reps = _representatives(report.runs)
    done = ~reps["diverged"] & np.isfinite(reps["final_val_loss"])
    top = float(reps["final_val_loss"][done].max()) * 1.6 if done.any() else 1.0
    with matplotlib.rc_context({"font.size": plots.REPORT["font.size"]}):
        fig, ax = plots.axes(9.6, 5.4, left=0.085, bottom=0.11, top=0.91, dpi=int(plots.REPORT["dpi"]))
        fig.subplots_adjust(right=0.7)
        variant_handles = []
        for variant in _variants(reps["gd_variant"]):
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


# ------------------------------------------------------------------------------------------ output
def write(report: Report, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the report files into `out`; return their paths."""
    if not report.runs["regime"].isin(REGIMES).any():
        raise ReportError(f"sweep {report.name!r} has no finished or pruned run yet: nothing has a regime")
    problems = order_problems(report.runs)
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ReportError(f"the regime labels of sweep {report.name!r} break the order invariant, so no table was "
                          f"written: {'; '.join(problems[:10])}{more}. Run the sweep's command again: it labels "
                          "the runs of a finished sweep anew")
    out.mkdir(parents=True, exist_ok=True)
    table, best = pivot(report), best_per_variant(report)
    written = []
    if "csv" in formats:
        report.runs.to_csv(out / "runs.csv", index=False)
        table.to_csv(out / "regimes.csv")
        written += [out / "runs.csv", out / "regimes.csv"]
    text = {"md": _markdown, "tex": _latex, "html": _html}
    for ext, render in text.items():
        if ext in formats:
            (out / f"regimes.{ext}").write_text(render(report, table, best), encoding="utf-8")
            written.append(out / f"regimes.{ext}")
    if "json" in formats:
        doc = {"sweep": report.name, "parent_run_id": report.parent_id, "caption": caption(report),
               "regimes": json.loads(table.reset_index().to_json(orient="records")),
               "best_per_variant": json.loads(best.to_json(orient="records")), "range_test": report.range_test}
        (out / "regimes.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        written.append(out / "regimes.json")
    if "png" in formats:
        written += [plot_loss_curves(report, out / "loss_curves.png"),
                    plot_final_loss_vs_lr(report, out / "final_loss_vs_lr.png")]
        heatmap = plot_lr_hidden_heatmap(report, out / "lr_hidden_heatmap.png")
        written += [heatmap] if heatmap else []
    return written


def log_to_parent(report: Report, out: Path) -> None:
    """The same files on the parent run, under `report/` (a finished parent stays finished)."""
    client_for(report.uri).log_artifacts(report.parent_id, str(out), artifact_path="report")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdexp.report",
        description="Turn a sweep's MLflow runs into tables (csv, md, tex, html, json) and plots for a report. "
                    "Reads only the MLflow store; writes sweeps/<name>/report/ and logs the files to the "
                    "sweep's parent run under report/.")
    parser.add_argument("name", help="the sweep's name (sweep.name, e.g. lr or regimes) or its parent run id")
    parser.add_argument("--uri", default=DEFAULT_URI,
                        help=f"MLflow tracking URI: a SQLite store or http://host:port (default {DEFAULT_URI})")
    parser.add_argument("--experiment", default="gdexp", help="MLflow experiment holding the sweep (default gdexp)")
    parser.add_argument("--out", type=Path, help="output folder (default sweeps/<name>/report)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (default all)")
    parser.add_argument("--fraction", type=float, default=0.9,
                        help="runs.csv's epochs_to_<N>pct: epochs until the val loss made this share of its "
                             "decrease from the initial to the best value (default 0.9)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        parser.error(f"--formats={args.formats!r}: choose from {', '.join(FORMATS)}")
    try:
        report = build(args.name, uri=args.uri, experiment=args.experiment, fraction=args.fraction)
        out = args.out or Path("sweeps") / report.name / "report"
        written = write(report, out, formats)
        if not args.no_log:
            log_to_parent(report, out)
    except ReportError as exc:
        print(f"gdexp.report: {exc}", file=sys.stderr)
        return 2
    print("\n".join(caption(report)))
    print(f"\n{len(written)} files in {out}" + ("" if args.no_log else
                                                  f", also on MLflow run {report.parent_id} under report/"))
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    code = main()
    stopping.spare_exit_collection()
    sys.exit(code)
