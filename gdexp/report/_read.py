"""Reading a sweep, or one run, from the MLflow store (through `gdexp.store`) into a `Report`: one row per run."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from gdexp import regimes, store
from gdexp.config import CONFIG_DIR, VARIANTS, UsageError, mask_secrets
from gdexp.regimes import NONE
from gdexp.store import DEFAULT_URI

LABELLED = ("COMPLETE", "PRUNED", "FINISHED")  # the trial states that have a regime (FINISHED: a run outside a sweep)
TRAJECTORY = ("path", "loss", "grid_x", "grid_y", "grid_loss", "explained", "epoch")  # what the figures draw of it


class ReportError(UsageError):
    """A report cannot be made (unknown sweep, no runs, unreachable store): the message says why."""


@dataclass(frozen=True)
class Cost:
    """What a run's updates cost, from its metrics: after each epoch (from 1) the examples processed so far, the
    seconds the updates took so far, and the training loss; and the loss of each update's own batch (`batch_loss`,
    thinned as the run logged it) by update number: the noise each GD variant's steps see."""

    examples: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray
    updates: np.ndarray
    batch_loss: np.ndarray


@dataclass
class Report:
    """What `build` read: the parent run (or the one run itself), one row per child, and each child's val_loss
    per epoch."""

    name: str
    parent_id: str
    experiment: str
    uri: str
    runs: pd.DataFrame
    curves: dict[str, np.ndarray]  # run id -> val_loss by epoch (epoch 0: before training)
    train_curves: dict[str, np.ndarray]  # run id -> train_loss by epoch (epoch 0: before training), what labels read
    range_test: dict[str, Any] | None  # the latest matching lr_range run's suggestion, if any
    fraction: float
    sharpness: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # run id -> (epochs, λmax)
    trajectories: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # run id -> trajectory.npz's arrays
    costs: dict[str, Cost] = field(default_factory=dict)  # run id -> what its updates cost
    single: bool = False  # one run outside any sweep: its report is its own figures

    @property
    def folder(self) -> Path:
        """Where its files go unless told: sweeps/<sweep>/report, or sweeps/runs/<run id>/report for one run."""
        return Path("sweeps", "runs", self.parent_id, "report") if self.single else Path("sweeps", self.name, "report")


def _find_parent(uri: str, experiment_id: str, name: str) -> Any:
    if re.fullmatch(r"[0-9a-f]{32}", name):
        from mlflow.exceptions import MlflowException

        try:
            return store.get_run(uri, name)
        except MlflowException:
            pass
    found = store.search_runs(uri, experiment_id,
                              f"tags.`gdexp.role` = 'sweep' and tags.`gdexp.sweep` = '{name}'",
                              ["attributes.start_time DESC"])
    if found:
        return found[0]
    from gdexp.config import close_match

    names = store.sweep_names(uri, experiment_id)
    held = (", ".join(names) + close_match(name, names)) if names else "none yet"
    hint = ""
    if "range" in name:  # `report lr_range`: the command's own name, but a range test is no sweep
        ranges = store.search_runs(uri, experiment_id, "tags.`gdexp.role` = 'lr_range'",
                                   ["attributes.start_time DESC"])
        hint = (f"; a range test (+sweep=lr_range) is one run, reported by its id: the latest is "
                f"{ranges[0].info.run_id}" if ranges else "")
    raise ReportError(f"no sweep named {name!r} (nor a run with that id): the experiment's sweeps: {held}{hint}")


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
    return {str(k): float(v) for k, v in OmegaConf.load(CONFIG_DIR / "regimes" / "default.yaml").items()
            if k != "defaults"}  # the YAML names its schema first


def _rules(params: dict[str, str]) -> dict[str, float]:
    """The regime rule's thresholds a run was labelled with (its params `regimes.*`; the defaults for a run
    that has none)."""
    return {k: _number(params.get(f"regimes.{k}", v)) for k, v in _default_rules().items()}


def _overshot(run: Any, train: np.ndarray) -> bool:
    """Did the run's own training-loss curve overshoot (`regimes.overshoot`)? Then it is too_large wherever its
    learning rate is, and the order check lets it be."""
    why = regimes.overshoot(float(train[0]), train[1:], diverged=run.data.tags.get("diverged") == "true",
                            rules=_rules(run.data.params))
    return why is not None


def _row(run: Any, curve: np.ndarray, fraction: float, train: np.ndarray, ratios: Sequence[float]) -> dict[str, Any]:
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    epochs = curve[1:]
    finite = epochs[np.isfinite(epochs)]
    # a run not ended (still training, or cut while it was written) is no sample, whatever tags it holds so far
    state = "RUNNING" if run.info.status == "RUNNING" else t.get("optuna.state", run.info.status)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "trial": int(t["optuna.trial"]) if t.get("optuna.trial", "").isdigit() else None,
        "state": state,
        "status": run.info.status,
        "dataset": t.get("dataset", p.get("data.name", "")),
        "gd_variant": p.get("gd.variant", t.get("gd.variant", "")),
        "batch_size": p.get("gd.batch_size", ""),
        "optimizer": p.get("optim.name", t.get("optimizer", "")),
        # a range test's optim.lr is the config's, unused: its rate rises every update
        "lr": math.nan if t.get("gdexp.role") == "lr_range" else _number(p.get("optim.lr")),
        "hidden_size": _number(p.get("model.hidden_size")) if p.get("model.hidden_layers") != "0" else math.nan,
        "hidden_layers": _number(p.get("model.hidden_layers")),
        "n_params": m.get("n_params", math.nan),
        "epochs_run": m.get("epochs_run", float(len(epochs))),
        "initial_train_loss": float(train[0]),
        "final_train_loss": m.get("train_loss", math.nan),
        "best_train_loss": float(np.nanmin(train[1:])) if np.isfinite(train[1:]).any() else math.nan,
        "final_val_loss": m.get("val_loss", math.nan),
        "best_val_loss": float(finite.min()) if finite.size else math.nan,
        "val_accuracy": m.get("val_accuracy", math.nan),
        "test_loss": m.get("test_loss", math.nan),
        "test_accuracy": m.get("test_accuracy", math.nan),
        f"epochs_to_{round(100 * fraction)}pct": epochs_to(curve, fraction, _rules(p)["min_progress"]),
        "diverged": t.get("diverged", "") == "true",
        "overshot": _overshot(run, train),
        "regime": t.get("regime", "") if state in LABELLED else NONE,
        "regime_reason": t.get("regime_reason", ""),
        "sibling_group": t.get("sibling_group", ""),
        "ratio_start": ratios[0] if ratios else math.nan,  # η·λmax before training
        "ratio_end": ratios[-1] if ratios else math.nan,
        "lr_edge": m.get("lr_edge", math.nan),  # the learning rate with η·λmax = 2 at initialisation
        "edge": 2 * m.get("sharpness_initial", math.nan) / ratios[0] if ratios and ratios[0] > 0 else math.nan,
        "edge_of_stability": t.get("edge_of_stability", ""),
        "train_time_s": m.get("train_time_s", math.nan),
    }


COUNTS = ("trial", "batch_size", "hidden_size", "hidden_layers", "n_params", "epochs_run")  # whole numbers


def with_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with its counts as whole numbers, empty where a run has none (batch GD's batch size, a linear
    model's hidden size): as runs.csv and regimes.json give them. The frame itself keeps floats, NaN for none,
    which its figures and tables compute with."""
    counts = [*COUNTS, *(key for key in runs if key.startswith("epochs_to_"))]  # epochs_to_90pct: an epoch too
    return runs.assign(**{key: pd.to_numeric(runs[key], errors="coerce").astype("Int64")
                          for key in counts if key in runs})


def build(name: str, *, uri: str = DEFAULT_URI, experiment: str = "gdexp", fraction: float = 0.9,
          threads: int = 8) -> Report:
    """Read a sweep's parent and children from MLflow into a `Report`; given the id of a run that is no sweep's
    parent (a `python -m gdexp` run, or one trial of a sweep), that run alone (`Report.single`)."""
    if not 0 < fraction <= 1:
        raise ReportError(f"--fraction={fraction} is not allowed: a share in (0, 1]")
    if store.local_store_missing(uri):
        raise ReportError(f"no MLflow store at {uri}: run a sweep first, or pass --uri")
    experiment_id = store.find_experiment(uri, experiment)
    if experiment_id is None:
        names = ", ".join(store.experiment_names(uri)) or "none"
        raise ReportError(f"no experiment {experiment!r} in {mask_secrets(uri)} (experiments there: {names})")
    parent = _find_parent(uri, experiment_id, name)
    single = parent.data.tags.get("gdexp.role") != "sweep"
    children = [parent] if single else store.search_runs(
        uri, experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    sweep_name = parent.info.run_name if single else parent.data.tags.get("gdexp.sweep", name)
    if not children:
        raise ReportError(f"sweep {sweep_name!r} (parent run {parent.info.run_id}) has no runs yet")

    ids = [r.info.run_id for r in children]
    val = store.metric_histories(uri, ids, "val_loss", threads)
    trn = store.metric_histories(uri, ids, "train_loss", threads)

    def with_start(run: Any, key: str, values: Sequence[float]) -> np.ndarray:
        return np.array([run.data.metrics.get(f"initial_{key}", math.nan), *values], dtype=float)

    curves = {r.info.run_id: with_start(r, "val_loss", val[r.info.run_id]) for r in children}
    train = {r.info.run_id: with_start(r, "train_loss", trn[r.info.run_id]) for r in children}
    measured = [r.info.run_id for r in children if "sharpness_initial" in r.data.metrics]
    ratios = store.metric_histories(uri, measured, "stability_ratio", threads)
    sharpness = {run_id: (np.array([s for s, _ in points], dtype=float), np.array([v for _, v in points], dtype=float))
                 for run_id, points in store.metric_points(uri, measured, "sharpness", threads).items()}
    runs = pd.DataFrame([_row(r, curves[r.info.run_id], fraction, train[r.info.run_id],
                              ratios.get(r.info.run_id, [])) for r in children])
    runs = sort_runs(runs)
    return Report(sweep_name, parent.info.run_id, experiment, uri, runs, curves, train,
                  None if single else _range_test(uri, experiment_id, parent), fraction, sharpness,
                  _trajectories(uri, children), _costs(uri, children, train, threads), single)


def _trajectories(uri: str, runs: Sequence[Any]) -> dict[str, dict[str, np.ndarray]]:
    """The arrays the figures draw of each run's trajectory.npz, for the runs that recorded one."""
    found = {}
    for run in runs:
        if run.data.params.get("diagnostics.trajectory") == "True" and run.info.status == "FINISHED":
            arrays = store.read_artifact(uri, run.info.run_id, "trajectory.npz", TRAJECTORY)
            if arrays is not None:
                found[run.info.run_id] = arrays
    return found


def _costs(uri: str, runs: Sequence[Any], train: dict[str, np.ndarray], threads: int) -> dict[str, Cost]:
    """What each run's updates cost (`Cost`; `train`: the training-loss curves read already), for the runs that
    recorded it (older runs have no `examples_processed`)."""
    ids = [r.info.run_id for r in runs if "examples_processed" in r.data.metrics]
    read = {key: store.metric_points(uri, ids, key, threads)
            for key in ("examples_processed", "update_time_s", "batch_loss")}

    def column(key: str, run_id: str, at: int) -> np.ndarray:
        return np.array([point[at] for point in read[key][run_id]], dtype=float)

    return {run_id: Cost(column("examples_processed", run_id, 1), column("update_time_s", run_id, 1),
                         train[run_id][1:], column("batch_loss", run_id, 0), column("batch_loss", run_id, 1))
            for run_id in ids}


def variant_order(names: Any) -> list[str]:
    """GD variants in their usual order (batch, minibatch, stochastic), others after them: the one order of every
    table and figure."""
    present = list(dict.fromkeys(names))
    return [v for v in VARIANTS if v in present] + sorted(v for v in present if v not in VARIANTS)


def several_datasets(runs: pd.DataFrame) -> bool:
    """Does the report hold runs of more than one data set (`+sweep=landscape`)? Its tables and figures then
    say which: losses of two data sets never share a column or an axis."""
    return runs["dataset"].nunique() > 1


def variant_panels(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(data set, GD variant, label) of every panel and table row per variant, in the one order: by data set,
    then `variant_order`. The label is the variant, prefixed by the data set when the report holds several."""
    several = several_datasets(runs)
    return [(dataset, variant, f"{dataset}, {variant}" if several else variant)
            for dataset in sorted(set(runs["dataset"]))
            for variant in variant_order(runs.loc[runs["dataset"] == dataset, "gd_variant"])]


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows by GD variant (`variant_order`), then learning rate, hidden size, trial."""
    order = pd.Categorical(runs["gd_variant"], variant_order(runs["gd_variant"]))
    return (runs.assign(_v=order).sort_values(["_v", "lr", "hidden_size", "trial", "run_id"], kind="stable")
            .drop(columns="_v").reset_index(drop=True))


def _range_test(uri: str, experiment_id: str, parent: Any) -> dict[str, Any] | None:
    """The newest lr_range run on the sweep's data set, GD variant and optimizer."""
    t = parent.data.tags
    query = (f"tags.`gdexp.role` = 'lr_range' and tags.dataset = '{t.get('dataset', '')}' and "
             f"tags.optimizer = '{t.get('optimizer', '')}'")
    found = [r for r in store.search_runs(uri, experiment_id, query, ["attributes.start_time DESC"])
             if r.data.params.get("gd.variant") == t.get("gd.variant") or "gd" in _searched(parent)]
    if not found:
        return None
    p = found[0].data.params
    keys = ("suggested_lr", "window_low", "window_high", "divergence_lr")
    return {"run_id": found[0].info.run_id, "gd_variant": p.get("gd.variant", ""),
            **{k: _number(p.get(f"lr_range.{k}")) for k in keys}}


def _searched(parent: Any) -> set[str]:
    return {k.removeprefix("sweep.params.") for k in parent.data.params if k.startswith("sweep.params.")}
