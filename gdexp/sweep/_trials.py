"""One trial's accounting: what counts toward `sweep.n_trials`, its value, its pruning, and runs left behind."""

from __future__ import annotations

import math
import os
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from gdexp import stopping, store, train
from gdexp.sweep._labels import unlabelled


class SurplusTrialError(RuntimeError):
    """Another worker claimed the last slot of the total at the same moment; this trial is not run."""

def counted(t: FrozenTrial) -> bool:
    """Does this trial count toward `sweep.n_trials`? Interrupted, stale and surplus trials do not."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and "error" in t.user_attrs

def tally(trials: Sequence[FrozenTrial]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for t in trials:
        if counted(t):
            counts["done"] += 1
            counts[{TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")] += 1
            counts["diverged"] += bool(t.user_attrs.get("diverged"))
        elif t.state == TrialState.RUNNING:
            counts["active"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1  # enqueued: the next optimize() takes it
        else:
            counts["not counted"] += 1
    return counts

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"

def alive(pid: int) -> bool:
    """Is process `pid` of this host running? A zombie (dead, not yet reaped by its parent) is not:
    `os.kill(pid, 0)` succeeds on one, so a SIGKILLed forked worker looked alive until the command ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(pid, 0) is all there is
    return state != "Z"


def ray_nodes_alive() -> set[str] | None:
    """The ids of the Ray cluster's live nodes, or None where this process is not connected to one (the
    trial's own host, or the RDB heartbeat, then tells whether its worker is gone)."""
    ray = sys.modules.get("ray")  # connected only if imported: never imported for it
    if ray is None or not ray.is_initialized():
        return None
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


class Pruning(train.Callback):
    """Reports the sweep metric every epoch and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, history: train.History) -> None:
        row = history.epochs[-1]
        value = row.get(self.metric, math.nan)
        if not math.isfinite(value):
            return
        step = int(row["epoch"])
        with stopping.shielded():  # a journal record cut short (or its lock left behind) would stall every worker
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if prune:
            history.stop_reason = "pruned"
            history.note = f"pruned at epoch {step} with {self.metric}={value:.4g}"

def trial_value(history: train.History, metric: str, direction: str, factor: float) -> float:
    """The trial's objective: the metric's last value; for a diverged run a finite penalty worse than
    anything it reached (minimize: worst finite value x divergence factor; maximize: its worst value)."""
    values = history.curve(metric)
    finite = values[np.isfinite(values)]
    if not history.diverged and len(values) and math.isfinite(values[-1]):
        return float(values[-1])
    initial = history.initial.get(metric, math.nan)
    seen = np.concatenate([finite, [initial] if math.isfinite(initial) else []])
    if direction == "minimize":
        return float(np.max(np.abs(seen)) * factor) if seen.size else 1e30
    return float(np.min(seen)) if seen.size else -1e30

class EndStaleRun:
    """RDB heartbeat callback: end the MLflow run of a trial whose worker died, then retry it once."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        end_orphan_run(self.uri, trial, "its worker stopped sending heartbeats")
        self.retry(study, trial)

def end_orphan_run(uri: str, trial: FrozenTrial, why: str) -> None:
    """End FAILED the trial's MLflow run if it is still RUNNING (not asked of a store found unreachable:
    `end_left_runs` does it when the command runs again)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id or store.down(uri):
        return
    if store.get_run(uri, run_id).info.status == "RUNNING":
        store.set_tags(uri, run_id, {"optuna.state": "FAIL", "error": f"trial {trial.number} failed: {why}",
                                     **unlabelled(why)})
        store.end_run(uri, run_id, "FAILED")


def end_left_runs(uri: str, study: optuna.Study) -> None:
    """End the MLflow runs that finished trials left RUNNING: a trial that is not counted (its tracking store
    failed, or its command stopped) may have lost the write that ended its run."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if not counted(t):
            end_orphan_run(uri, t, str(t.user_attrs.get("store_failed", "its command stopped before it ended the run")))
