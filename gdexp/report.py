"""`python -m gdexp.report NAME`: a sweep's runs, read from MLflow, as the tables and plots a report needs.

NAME is a sweep's name (`sweep.name`) or its parent run id. The report reads only the MLflow store
(a SQLite file or a tracking server): the parent run, its child runs with their params, final metrics
and tags, and each child's `val_loss` history. It writes under `sweeps/<name>/report/` (or `--out`)
and logs the same files to the sweep's parent run (folder `report/`):

- `runs.csv`: one row per run, raw numbers as stored;
- `regimes.{csv,md,tex,html,json}`: learning rate down, GD variant across, each cell the final
  validation loss (accuracy) and regime, plus the best run per variant and a caption saying which
  runs the table covers -- and, when the experiment holds a learning-rate range test on the same data,
  GD variant and optimizer, its suggestion beside the sweep's best learning rates;
- `loss_curves.png`, `final_loss_vs_lr.png`, `lr_hidden_heatmap.png` (the last when the sweep varied
  the hidden size).
"""

from __future__ import annotations

import argparse
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

from gdexp import plots, stopping
from gdexp.config import mask_secrets
from gdexp.regimes import REGIMES
from gdexp.store import DEFAULT_URI, local_store_missing
from gdexp.store import _client as client_for  # until the report reads through the store module

__all__ = ["Report", "ReportError", "build", "main", "write"]

FORMATS = ("csv", "md", "tex", "html", "json", "png")
VARIANTS = ("batch", "minibatch", "stochastic")
REGIME_COLORS = {"too_small": "tab:blue", "just_right": "tab:green", "too_large": "tab:red", "": "tab:gray"}
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


def epochs_to(curve: np.ndarray, fraction: float) -> float:
    """The first epoch at which the loss had made `fraction` of its total decrease (initial -> best);
    NaN when it never decreased."""
    finite = curve[np.isfinite(curve)]
    if len(curve) < 2 or not np.isfinite(curve[0]) or finite.min() >= curve[0]:
        return math.nan
    target = curve[0] - fraction * (curve[0] - finite.min())
    return float(np.argmax(np.where(np.isfinite(curve), curve, np.inf) <= target))


def _row(run: Any, curve: np.ndarray, fraction: float, train_losses: Sequence[float]) -> dict[str, Any]:
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    epochs = curve[1:]
    finite = epochs[np.isfinite(epochs)]
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "trial": int(t["optuna.trial"]) if t.get("optuna.trial", "").isdigit() else None,
        "state": t.get("optuna.state", run.info.status),
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
        f"epochs_to_{round(100 * fraction)}pct": epochs_to(curve, fraction),
        "diverged": t.get("diverged", "") == "true",
        "regime": t.get("regime", ""),
        "regime_reason": t.get("regime_reason", ""),
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
    runs = pd.DataFrame([_row(r, curves[r.info.run_id], fraction, trn[r.info.run_id]) for r in children])
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
    """Per (learning rate, variant): the run with the lowest final val loss (a diverged one only if
    every run there diverged). The lr is rounded to 3 significant digits to form the rows."""
    finished = runs[runs["state"] != "FAIL"].copy()
    finished["lr_key"] = finished["lr"].map(lambda x: float(f"{x:.3g}") if math.isfinite(x) else x)
    finished["_rank"] = finished["final_val_loss"].where(np.isfinite(finished["final_val_loss"]), np.inf)
    finished = finished.sort_values(["lr_key", "gd_variant", "_rank", "run_id"], kind="stable")
    return finished.groupby(["lr_key", "gd_variant"], sort=False).head(1).drop(columns="_rank")


def pivot(report: Report) -> pd.DataFrame:
    """Learning rate down, GD variant across; cells `val_loss (val_acc) regime`."""
    reps = _representatives(report.runs)
    reps["cell"] = [
        f"{fmt_loss(r.final_val_loss if not r.diverged else math.nan)}"
        + (f" ({fmt_acc(r.val_accuracy)})" if math.isfinite(r.val_accuracy) and not r.diverged else "")
        + (f" {r.regime}" if r.regime else "")
        for r in reps.itertuples()
    ]
    table = reps.pivot(index="lr_key", columns="gd_variant", values="cell").sort_index()
    table = table[[v for v in (*VARIANTS, *sorted(table.columns)) if v in table.columns]
                  if len(table.columns) else table.columns]
    table = table.loc[:, ~table.columns.duplicated()].fillna("—")
    table.index = [fmt_lr(x) for x in table.index]
    table.index.name = "learning rate"
    table.columns.name = None
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
    runs = report.runs
    counts = runs["state"].value_counts()
    states = ", ".join(f"{counts[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL") if s in counts)
    regimes = runs["regime"].value_counts()
    lrs = runs["lr"][np.isfinite(runs["lr"])]
    lines = [
        f"Sweep {report.name!r} (MLflow parent run {report.parent_id}, experiment {report.experiment!r}): "
        f"{len(runs)} runs ({states}; {int(runs['diverged'].sum())} diverged), learning rates "
        f"{fmt_lr(lrs.min()) if len(lrs) else '—'} to {fmt_lr(lrs.max()) if len(lrs) else '—'}, GD variants "
        f"{', '.join(v for v in dict.fromkeys(runs['gd_variant']))}.",
        "Cells: final validation loss (validation accuracy) and the regime label"
        + (" of the best run at that learning rate and variant." if len(runs) > len(_representatives(runs))
           else "."),
        "Regimes: " + ", ".join(f"{regimes.get(r, 0)} {r}" for r in REGIMES) + ".",
    ]
    rt = report.range_test
    if rt is not None:
        best = best_per_variant(report)
        found = "; ".join(f"{v} {lr}" for v, lr in zip(best["GD variant"], best["learning rate"], strict=True))
        lines.append(f"Learning-rate range test (run {rt['run_id']}, {rt['gd_variant']}): suggests "
                     f"{fmt_lr(rt['suggested_lr'])}, just-right window {fmt_lr(rt['window_low'])} to "
                     f"{fmt_lr(rt['window_high'])}, divergence from {fmt_lr(rt['divergence_lr'])}; "
                     f"the sweep's best: {found or 'none'}.")
    return lines


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
def plot_loss_curves(report: Report, path: Path) -> Path:
    """Validation loss per epoch, log scale, coloured by regime, one panel per GD variant."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    variants = list(dict.fromkeys(report.runs["gd_variant"]))
    fig = Figure(figsize=(4.2 * len(variants) + 0.6, 4), dpi=100)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.13, wspace=0.25)
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
    every = np.concatenate([c[np.isfinite(c)] for c in report.curves.values()] or [np.ones(1)])
    for ax, variant in zip(axes, variants, strict=True):
        runs = report.runs[report.runs["gd_variant"] == variant]
        for regime, group in runs.groupby("regime", sort=False):  # one collection per colour: fast at 1,000 runs
            lines = [np.column_stack([np.arange(len(c)), np.where(np.isfinite(c), c, np.nan)])
                     for c in (report.curves[run_id] for run_id in group["run_id"])]
            ax.add_collection(LineCollection(lines, colors=REGIME_COLORS.get(str(regime), "tab:gray"), lw=1,
                                             alpha=0.7))
        ax.autoscale_view()
        ax.set(title=variant, xlabel="epoch")
        ax.grid(True, alpha=0.3)
    if plots.positive(every):
        plots.log_y(axes[0])
        axes[0].set_ylim(every.min() / 1.5, min(every.max(), 20 * np.median(every)) * 1.5)
    axes[0].set_ylabel("validation loss")
    fig.legend([Line2D([], [], color=REGIME_COLORS[r]) for r in REGIMES], REGIMES, loc="upper center", ncol=3,
               frameon=False)
    return plots.save(fig, path)


def plot_final_loss_vs_lr(report: Report, path: Path) -> Path:
    """Final validation loss over learning rate (log-log), one line per variant; regime bands shaded
    (the label most runs at that learning rate share), and the range test's suggestion if there is one."""
    reps = _representatives(report.runs)
    fig, ax = plots.axes(7, 4.5)
    lrs = np.array(sorted(set(reps["lr_key"][np.isfinite(reps["lr_key"])])))
    if len(lrs):
        edges = np.concatenate([[lrs[0] / 2], np.sqrt(lrs[1:] * lrs[:-1]), [lrs[-1] * 2]]) if len(lrs) > 1 else \
            np.array([lrs[0] / 2, lrs[0] * 2])
        majority = reps.groupby("lr_key")["regime"].agg(lambda r: r.value_counts().index[0])
        labels = [str(majority.get(lr, "")) for lr in lrs]
        start = 0
        for i in range(1, len(lrs) + 1):  # one band per stretch of equal labels
            if i == len(lrs) or labels[i] != labels[start]:
                ax.axvspan(edges[start], edges[i], color=REGIME_COLORS.get(labels[start], "tab:gray"), alpha=0.12,
                           lw=0)
                start = i
    top = np.nanmax(np.where(np.isfinite(reps["final_val_loss"]), reps["final_val_loss"], np.nan)) \
        if np.isfinite(reps["final_val_loss"]).any() else 1.0
    for i, (variant, group) in enumerate(reps.groupby("gd_variant", sort=False)):
        group = group.sort_values("lr_key")
        y = np.where(group["diverged"] | ~np.isfinite(group["final_val_loss"]), np.nan, group["final_val_loss"])
        ax.plot(group["lr_key"], y, marker="o" if len(group) <= 50 else None, color=f"C{i}", label=variant)
        gone = group[group["diverged"]]
        ax.scatter(gone["lr_key"], np.full(len(gone), top * 1.5), marker="x", color=f"C{i}")
    rt = report.range_test
    if rt is not None and math.isfinite(rt["suggested_lr"]):
        ax.axvline(rt["suggested_lr"], color="k", ls="--", lw=1, label="range test suggestion")
    ax.set_xscale("log")
    if plots.positive(reps["final_val_loss"]):
        plots.log_y(ax)
    ax.set(xlabel="learning rate", ylabel="final validation loss (x: diverged)",
           title=f"{report.name}: final loss vs learning rate (bands: regime)")
    ax.legend(fontsize="small")
    return plots.save(fig, path)


def plot_lr_hidden_heatmap(report: Report, path: Path) -> Path | None:
    """Validation loss over learning rate x hidden size (best run per cell; half-decade lr bins,
    powers-of-two hidden bins); None when the sweep used one hidden size."""
    from matplotlib.colors import LogNorm

    runs = report.runs[np.isfinite(report.runs["lr"]) & np.isfinite(report.runs["hidden_size"])]
    if runs["hidden_size"].nunique() < 2:
        return None
    loss = np.where(runs["diverged"] | ~np.isfinite(runs["final_val_loss"]), np.nan, runs["final_val_loss"])
    lr_bin = np.floor(np.log10(runs["lr"].to_numpy()) * 2) / 2
    h_bin = np.floor(np.log2(runs["hidden_size"].to_numpy()))
    xs, ys = np.unique(lr_bin), np.unique(h_bin)
    grid = np.full((len(ys), len(xs)), np.nan)
    for x, y, v in zip(np.searchsorted(xs, lr_bin), np.searchsorted(ys, h_bin), loss, strict=True):
        if math.isfinite(v):
            grid[y, x] = v if not math.isfinite(grid[y, x]) else min(grid[y, x], v)
    fig, ax = plots.axes(7, 4.5)
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(finite.min(), finite.max()) if finite.size and plots.positive(finite) and \
        finite.min() < finite.max() else None
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
    fig.colorbar(image, label="best final validation loss (blank: none or diverged)")
    ax.set_xticks(range(len(xs)), [f"1e{x:g}" if x == int(x) else f"3e{math.floor(x):g}" for x in xs],
                  rotation=45, fontsize="small")
    ax.set_yticks(range(len(ys)), [f"{2 ** int(y)}-{2 ** int(y + 1) - 1}" for y in ys], fontsize="small")
    ax.set(xlabel="learning rate (bin from)", ylabel="hidden size", title=f"{report.name}: val loss over lr x hidden")
    return plots.save(fig, path)


# ------------------------------------------------------------------------------------------ output
def write(report: Report, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the report files into `out`; return their paths."""
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
