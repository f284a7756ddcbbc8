"""One process's view of a study: trial configs, the objective, and the loop that pulls trials until the total."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from gdexp import stopping, store, train
from gdexp.config import mask_secrets, validate
from gdexp.sweep._labels import unlabelled
from gdexp.sweep._samplers import make_sampler
from gdexp.sweep._space import make_pruner, suggest, trial_config, validate_sweep
from gdexp.sweep._storage import open_storage
from gdexp.sweep._trials import (
    Pruning,
    SurplusTrialError,
    alive,
    counted,
    end_orphan_run,
    ray_nodes_alive,
    tally,
    trial_value,
    worker_id,
)
from gdexp.tracking import MlflowTracker

POLL_S = 0.5


class Sweep:
    """One process's view of a study: its storage, search space, parent run and trial loop."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], *, worker: int = 0, lock: Any = None,
                 parent_run_id: str | None = None, space: dict[str, BaseDistribution] | None = None,
                 placement: dict[str, str] | None = None) -> None:
        """`space`: what `validate_sweep(cfg)` returned, when the caller validated `cfg` already;
        `placement`: the tags `host` and `worker` of its runs (default: this host, `local:<pid>`)."""
        self.cfg, self.overrides, self.worker, self.lock = cfg, list(overrides), worker, lock
        self.placement = placement
        self.space = validate_sweep(cfg, overrides) if space is None else space
        self.storage, self.where = open_storage(cfg)
        self.parent_run_id = parent_run_id
        self._held = False
        self._store_error: BaseException | None = None  # the tracking store was unreachable: stop, count nothing
        self.study = optuna.create_study(  # seeded per trial: processes sharing the study draw apart (_samplers.py)
            study_name=cfg.sweep.name, storage=self.storage, direction=cfg.sweep.direction,
            sampler=make_sampler(cfg.sweep.sampler, cfg.train.seed, self.space),
            pruner=make_pruner(cfg.sweep.pruner), load_if_exists=True,
        )

    # ------------------------------------------------------------------------ trial configuration
    # --------------------------------------------------------------------------------- objective
    def _objective(self, trial: optuna.Trial) -> float:
        self._release()
        trials = self.study.get_trials(deepcopy=False)
        ahead = sum(1 for t in trials if t.number < trial.number
                    and (counted(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)))
        if ahead >= self.cfg.sweep.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrialError(f"trial {trial.number} is beyond sweep.n_trials={self.cfg.sweep.n_trials}")
        placement = self.placement or {"host": socket.gethostname(), "worker": f"local:{os.getpid()}"}
        trial.set_user_attr("worker", worker_id())  # host:pid, and the Ray node: how reap_stale finds it dead
        if placement["worker"].startswith("ray:"):
            trial.set_user_attr("ray_node", placement["worker"].removeprefix("ray:"))
        name, metric = self.cfg.sweep.name, self.cfg.sweep.metric
        try:  # from here on every error is the trial's own: counted as failed, so the sweep always ends
            params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
            cfg = trial_config(self.cfg, self.overrides, params)
            validate(cfg)

            def end_tags(history: train.History, status: str) -> dict[str, str]:
                state = "PRUNED" if history.stop_reason == "pruned" else "COMPLETE" if status == "FINISHED" else "FAIL"
                if status == "FINISHED":
                    return {"optuna.state": state}
                why = "interrupted" if status == "KILLED" else "training failed"
                return {"optuna.state": state, **unlabelled(f"{why} after {len(history.epochs)} epochs")}

            tracker = MlflowTracker(
                cfg, parent_run_id=self.parent_run_id, end_tags=end_tags,
                tags={"optuna.study": name, "optuna.trial": str(trial.number), "gdexp.sweep": name, **placement},
                on_run=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
            )
            history = train.run(cfg, [tracker, Pruning(trial, metric)])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            stop = stopping.requested()
            if stop is not None:  # a library turned the Ctrl-C into an error of its own: still an interruption
                trial.set_user_attr("interrupted", True)
                raise stop from exc
            text = mask_secrets(f"{type(exc).__name__}: {exc}"[:1000])
            if store.unreachable(exc):  # the store's fault, not the trial's: not counted, and the sweep stops
                trial.set_user_attr("store_failed", text)
                self._store_error = exc
                raise
            trial.set_user_attr("error", text)
            raise
        val = history.curve("val_loss")
        trial.set_user_attr("diverged", history.diverged)
        trial.set_user_attr("final_val_loss", float(val[-1]) if len(val) else math.nan)
        trial.set_user_attr("lr", float(cfg.optim.lr))
        trial.set_user_attr("hidden_size", int(cfg.model.hidden_size))
        trial.set_user_attr("regime", history.regime)  # its own curve's label: relabelling starts from it
        trial.set_user_attr("regime_reason", history.regime_reason)
        if history.stop_reason == "pruned":
            raise optuna.TrialPruned(history.note)
        return trial_value(history, metric, self.cfg.sweep.direction, self.cfg.train.divergence_factor)

    def _take(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
            self._held = True

    def _release(self) -> None:
        if self._held:
            self._held = False
            self.lock.release()

    # ------------------------------------------------------------------------------------- loop
    def reap_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone: by heartbeat (RDB storages), by a dead process id on
        this host (process ids repeat across hosts: only the host's own are judged), or by a Ray node the
        cluster lost; their MLflow runs are ended too, and each is retried once with the same parameters."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        host = socket.gethostname()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        nodes = ray_nodes_alive() if any("ray_node" in t.user_attrs for t in running) else None
        for t in running:
            whose, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
            node = t.user_attrs.get("ray_node")
            if nodes is not None and node is not None and node not in nodes:
                why = f"its Ray node {node} is gone"
            elif whose == host and pid.isdigit() and not alive(int(pid)):
                why = f"its worker process {pid} is gone"
            else:
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except (ValueError, RuntimeError):
                continue
            end_orphan_run(self.cfg.tracking.uri, t, why)
            if "retry_of" not in t.user_attrs:  # retried once with the same parameters, as the heartbeat does
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)

    def work(self, deadline: float | None = None, on_trial: Any = None) -> None:
        """Run trials until the study holds `sweep.n_trials` counted trials (or the deadline passes).

        A trial that found the tracking store unreachable is not counted and ends the loop: the command
        (worker 0) raises the store's error; a worker beside it returns, and the command reports."""
        n = self.cfg.sweep.n_trials
        callbacks = [_report_failure, *([on_trial] if on_trial else [])]
        while True:
            with stopping.shielded():
                self.reap_stale()
            counts = tally(self.study.get_trials(deepcopy=False))
            if counts["done"] >= n or (deadline is not None and time.time() >= deadline):
                return
            if counts["done"] + counts["active"] >= n:
                time.sleep(POLL_S)  # the rest is in flight; stay to replace a trial whose worker dies
                continue
            self._take()
            try:  # Optuna's writes run whole; the trial's training is interruptible (train.run)
                with stopping.shielded():
                    self.study.optimize(self._objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            finally:
                self._release()
            if self._store_error is not None:
                if self.worker:
                    return
                raise self._store_error

def _report_failure(study: optuna.Study, trial: FrozenTrial) -> None:
    """One line for a trial whose training raised (Optuna's own warning would print a traceback)."""
    if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
        from tqdm.auto import tqdm

        tqdm.write(f"trial {trial.number} failed: {trial.user_attrs['error']}", file=sys.stderr)
