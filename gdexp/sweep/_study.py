"""One process's view of a study: its storage, search space, parent run, and the loop that claims and runs
trials until the study holds `sweep.n_trials`."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence

import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from gdexp import errors, regimes, stopping, train
from gdexp.callbacks import callbacks_for
from gdexp.config import mask_secrets
from gdexp.history import History
from gdexp.sweep._accounting import trial_value
from gdexp.sweep._claim import Claim, claim, reap
from gdexp.sweep._liveness import Heartbeat
from gdexp.sweep._reconcile import end_lost_run, unlabelled
from gdexp.sweep._record import Outcome, TrialRecord, study_records, write
from gdexp.sweep._samplers import make_sampler
from gdexp.sweep._space import TrialConfigs, first_report, make_pruner, suggest, validate_sweep
from gdexp.sweep._storage import open_storage
from gdexp.tracking import MlflowTracker

__all__ = ["POLL_S", "Progress", "Sweep"]

POLL_S = 0.5  # how often a worker with nothing to claim looks again
Progress = Callable[[Sequence[TrialRecord]], None]  # shown the study's trial records as they are now


class Sweep:
    """One process's view of a study: its storage, search space, parent run and trial loop."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], *, parent_run_id: str | None = None,
                 space: dict[str, BaseDistribution] | None = None, placement: dict[str, str] | None = None) -> None:
        """`space`: what `validate_sweep(cfg)` returned, when the caller validated `cfg` already;
        `placement`: the tags `host` and `worker` of its runs (default: this host, `local:<pid>`)."""
        self.cfg, self.overrides = cfg, list(overrides)
        self.placement = placement
        self.space = validate_sweep(cfg, overrides) if space is None else space
        self.storage = open_storage(cfg)
        self.where = self.storage.where
        self.parent_run_id = parent_run_id
        self.store_error: BaseException | None = None  # the tracking store was unreachable: stop, count nothing
        self.configs = TrialConfigs(cfg, self.overrides)
        self.study = optuna.create_study(  # seeded per trial: processes sharing the study draw apart (_samplers.py)
            study_name=cfg.sweep.name, storage=self.storage.optuna, direction=cfg.sweep.direction,
            sampler=make_sampler(cfg.sweep.sampler, cfg.train.seed, self.space),
            pruner=make_pruner(cfg.sweep.pruner, cfg.train.epochs), load_if_exists=True,
        )
        self.study_id = self.storage.optuna.get_study_id_from_name(cfg.sweep.name)

    @property
    def grace(self) -> float:
        """Seconds without a heartbeat after which a trial's owner (on another host) counts as gone."""
        return 2.0 * float(self.cfg.sweep.heartbeat_s)

    def records(self) -> list[TrialRecord]:
        return study_records(self.study)

    def _lost(self, record: TrialRecord, why: str) -> None:
        end_lost_run(self.cfg.tracking.uri, record, why)

    def reap(self) -> None:
        """Fail the RUNNING trials whose owner is gone (their runs ended FAILED); each is retried once later."""
        with self.storage.lock():
            reap(self.study, self.storage, self.records(), grace=self.grace, on_lost=self._lost)

    def work(self, deadline: float | None = None, on_trial: Progress | None = None) -> None:
        """Claim and run trials until the study holds `sweep.n_trials` counted trials (or the deadline passes);
        `on_trial` is given the study's records at each claim (those the claim read: no read of its own).

        A trial that found the tracking store unreachable is not counted and ends the loop (`store_error`)."""
        node = (self.placement or {}).get("worker", "").removeprefix("ray:") or None
        heartbeat = Heartbeat(self.storage.optuna, float(self.cfg.sweep.heartbeat_s))
        try:
            claimed = False  # each worker claims once however short the timeout, as Optuna's optimize() runs a trial
            while not claimed or deadline is None or time.time() < deadline:
                claimed = True
                with stopping.shielded():
                    got = claim(self.study, self.storage, self.study_id, total=self.cfg.sweep.n_trials,
                                grace=self.grace, on_lost=self._lost, ray_node=node)
                if on_trial is not None:
                    on_trial(got.records)
                if got.done:
                    return
                if got.trial is None:
                    with stopping.interruptible():
                        time.sleep(POLL_S)  # the rest is in flight; stay to replace a trial whose owner dies
                    continue
                heartbeat.follow(got.trial_id)
                try:
                    self._run(got)
                finally:
                    heartbeat.follow(None)
                if self.store_error is not None:
                    return
        finally:
            heartbeat.close()

    def _run(self, got: Claim) -> None:
        """Run one claimed trial to its end and tell the study: its value, PRUNED, or FAIL with the reason in its
        record (interrupted: not counted, then raised again; the store unreachable: not counted, the loop stops;
        anything else the trial raised: counted as failed, the sweep goes on)."""
        trial, tid = got.trial, got.trial_id
        assert trial is not None
        storage = self.storage.optuna
        ran: list[tuple[History, DictConfig]] = []
        with errors.captured() as failure:
            ran.append(self._train(trial, tid))
        if failure.interrupted:
            with stopping.shielded():
                write(storage, tid, interrupted=True)
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise failure.interrupted
        if failure.error is not None:
            text = mask_secrets(f"{type(failure.error).__name__}: {failure.error}"[:1000])
            with stopping.shielded():
                if failure.store:  # the store's fault, not the trial's: not counted, and the sweep stops
                    write(storage, tid, store_failed=text)
                    self.store_error = failure.error
                else:
                    write(storage, tid, error=text)
                    errors.say(f"trial {trial.number} failed: {text}")
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return
        history, cfg = ran[0]
        with stopping.shielded():
            write(storage, tid, outcome=self._outcome(trial, cfg, history))
            if history.stop_reason == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                s = self.cfg.sweep
                self.study.tell(trial, trial_value(history, s.metric, s.direction, self.cfg.train.divergence_factor),
                                skip_if_finished=True)

    def _train(self, trial: optuna.Trial, tid: int) -> tuple[History, DictConfig]:
        params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        cfg = self.configs.of(params)
        name = self.cfg.sweep.name
        placement = self.placement or {"host": socket.gethostname(), "worker": f"local:{os.getpid()}"}
        tracker = MlflowTracker(
            cfg, parent_run_id=self.parent_run_id, end_tags=_end_tags,
            tags={"optuna.study": name, "optuna.trial": str(trial.number), "gdexp.sweep": name, **placement},
            on_run=lambda run_id: write(self.storage.optuna, tid, run_id=run_id),
        )
        first = first_report(self.cfg.sweep.pruner, cfg.train.epochs)
        pruned = None if first is None else Reporting(trial, first)
        return train.run(cfg, callbacks_for(cfg, tracker=tracker, trial=pruned)), cfg

    def _outcome(self, trial: optuna.Trial, cfg: DictConfig, history: History) -> Outcome:
        val = history.curve("val_loss")
        searched = {**trial.params, "model.hidden_size": cfg.model.hidden_size,
                    "model.hidden_layers": cfg.model.hidden_layers}
        hidden = float(cfg.model.hidden_size) if cfg.model.hidden_layers else 0.0  # a linear model has no hidden unit
        return Outcome(float(cfg.optim.lr), hidden, regimes.sibling_group(searched, self.space),
                       history.initial.get("train_loss", math.nan), tuple(history.curve("train_loss").tolist()),
                       history.regime, history.regime_reason, history.diverged,
                       float(val[-1]) if len(val) else math.nan)


class Reporting:
    """A trial as the pruning callback reports to it: from epoch `first` on, the epochs its pruner reads."""

    def __init__(self, trial: optuna.Trial, first: int) -> None:
        self.trial, self.first = trial, first

    def report(self, value: float, step: int) -> None:
        if step >= self.first:
            self.trial.report(value, step)

    def should_prune(self) -> bool:
        return self.trial.should_prune()


def _end_tags(history: History, status: str) -> dict[str, str]:
    """The tags a trial's run ends with: Optuna's state, and for a run that did not finish, why it has no regime."""
    state = "FAIL" if status != "FINISHED" else "PRUNED" if history.stop_reason == "pruned" else "COMPLETE"
    if status == "FINISHED":
        return {"optuna.state": state}
    why = "interrupted" if status == "KILLED" else "training failed"
    n = len(history.epochs)
    return {"optuna.state": state, **unlabelled(f"{why} after {n} epoch{'s' * (n != 1)}")}


