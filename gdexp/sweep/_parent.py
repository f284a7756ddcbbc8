"""The sweep's MLflow parent run: created with the study, reopened on resume, ended with counts and plots."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from gdexp import store
from gdexp.config import UsageError, as_dict, flatten, mask_secrets
from gdexp.sweep._accounting import tally
from gdexp.sweep._labels import relabel
from gdexp.sweep._plots import study_plots
from gdexp.sweep._reconcile import reconcile
from gdexp.sweep._record import study_records

__all__ = ["PARENT_ATTR", "best_trial", "best_value", "finish_parent", "parent_run", "summary_table"]

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute that names its parent run


def parent_run(cfg: DictConfig, study: optuna.Study) -> str:
    """The sweep's MLflow parent run: created with the study, found again (same id) when it resumes. Call it
    under the study's lock: one process creates it."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        if store.get_run(cfg.tracking.uri, str(run_id)).info.lifecycle_stage == "deleted":  # MLflow refuses writes
            raise UsageError(f"the parent run of sweep '{cfg.sweep.name}' ({run_id}) was deleted in MLflow: restore "
                             f"it (mlflow runs restore --run-id {run_id}), or give the sweep a new sweep.name")
        return str(run_id)
    uri = cfg.tracking.uri
    experiment_id = store.ensure_experiment(uri, cfg.tracking.experiment)
    name = cfg.sweep.name
    tags = {"gdexp.sweep": name, "optuna.study": name, "gdexp.role": "sweep",
            "dataset": cfg.data.name, "optimizer": cfg.optim.name, "gd.variant": cfg.gd.variant}
    run_id = store.create_run(uri, experiment_id, f"sweep-{name}", tags)
    # the config but the keys the sweep searches (they are `sweep.params.*`): their defaults, which no trial used,
    # would match a filter such as params.optim.lr = '0.1'
    searched = tuple(flatten(as_dict(cfg.sweep.params)))
    store.log_params(uri, run_id, {key: value for key, value in store.config_params(cfg).items()
                                   if not any(key == s or key.startswith(f"{s}.") for s in searched)})
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def finish_parent(cfg: DictConfig, study: optuna.Study, run_id: str, status: str) -> None:
    """Counts, best value and params, every trial's label among its siblings, and the study's plots on the
    parent run; then end it, FAILED if any of that could not be written (a full disk, say): the next run of the
    command finds the study done and the parent not FINISHED, and finishes it again, plots and all. Not on a store
    found unreachable: the next run of the command ends it."""
    uri = cfg.tracking.uri
    if store.down(uri):
        return
    ended = "FAILED" if status == "FINISHED" else status
    try:
        records = study_records(study)
        reconcile(uri, run_id, records)
        counts = tally(records)
        now = int(time.time() * 1000)
        metrics = [store.metric(f"n_{k}", float(counts[k]), 0, now)
                   for k in ("complete", "pruned", "failed", "diverged")]
        tags: dict[str, str] = {}
        best = best_trial(study)
        if best is not None:
            metrics.append(store.metric("best_value", float(best.value), 0, now))  # type: ignore[arg-type]
            tags = {"best_trial": str(best.number), **{f"best.{k}": str(v) for k, v in best.params.items()}}
        store.log_metrics(uri, run_id, metrics)
        store.set_tags(uri, run_id, tags)
        relabel(uri, records, cfg.regimes)  # also when interrupted: the report reads the labels of what finished
        if status == "FINISHED":
            with tempfile.TemporaryDirectory(prefix="gdexp-sweep-") as tmp:
                study_plots(cfg, study, Path(tmp))
                store.log_artifacts(uri, run_id, Path(tmp))
        ended = status
    finally:
        store.end_run(uri, run_id, ended)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def best_value(study: optuna.Study) -> float | None:
    best = best_trial(study)
    return None if best is None else float(best.value)  # type: ignore[arg-type]


def trials_done(done: int, n_trials: int) -> str:
    """`12 of 30 trials`; a study that holds more than `sweep.n_trials` (lowered after it ran) says so."""
    if done <= n_trials:
        return f"{done} of {n_trials} trials"
    return f"{done} trials, more than sweep.n_trials={n_trials}, which the study held already"


def summary_table(cfg: DictConfig, study: optuna.Study, where: str, ui: str) -> str:
    """The console's closing table: best trial, top five, counts by state, where things live, the UI's address."""
    from tabulate import tabulate

    records = study_records(study)
    counts = tally(records)
    done = [r for r in records if r.state == TrialState.COMPLETE and r.value is not None]
    sign = 1.0 if cfg.sweep.direction == "minimize" else -1.0
    done.sort(key=lambda r: sign * float(r.value or 0.0))
    top = done[:5]
    diverged = ["yes" if r.outcome is not None and r.outcome.diverged else "" for r in top]
    shown = any(diverged)  # a diverged column only when one of the rows diverged
    rows = [[r.number, f"{r.value:.4g}", *([mark] if shown else []),
             *(f"{v:.3g}" if isinstance(v, float) else v for v in r.params.values())]
            for r, mark in zip(top, diverged, strict=True)]
    keys = (["diverged"] if shown else []) + (list(top[0].params) if top else [])
    lines = [f"Study {cfg.sweep.name!r}: {trials_done(counts['done'], cfg.sweep.n_trials)} "
             f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed, "
             f"{counts['diverged']} diverged; {counts['not counted']} interrupted or lost, not counted)"]
    if done:
        lines += [f"Best: trial {done[0].number}, {cfg.sweep.metric} = {done[0].value:.4g}", "",
                  tabulate(rows, headers=["trial", cfg.sweep.metric, *keys], tablefmt="simple"), ""]
    lines += [f"Study storage: {where}",
              f"MLflow: experiment {cfg.tracking.experiment!r} in {mask_secrets(cfg.tracking.uri)}"]
    if ui:  # a multirun's jobs leave it to the multirun's end
        lines.append(f"Open the UI: {ui}")
    return "\n".join(lines)
