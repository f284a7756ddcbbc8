"""A trial's record in the study: the one reader and writer of the user attributes gdexp keeps on a trial.

Every other module asks a `TrialRecord` (`TrialRecord.of(frozen_trial)`, or `study_records(study)` for them all) and
writes through `write`; no attribute name appears anywhere else. What the record holds, by the moment it is written:

- at creation, in the same storage write as the trial itself (`template`): its `owner` (the process that runs
  it: host, boot, PID namespace, PID and start time, the Ray node), `worker` (`host:pid`, for people) and, for a
  retry, `retry_of`; so no trial is ever RUNNING without an owner a reaper can judge;
- when its MLflow run exists: `mlflow_run_id` (a contract: README);
- while it runs: `beat`, the time of its owner's last heartbeat;
- at its end: `outcome` (what the run measured: the labels and the report read it) or why it did not finish:
  `interrupted` (Ctrl-C, SIGTERM: not counted, run again), `error` (training raised: the trial counts, as FAIL),
  `store_failed` (the tracking store was unreachable: not counted, run again) or `lost` (its owner died: not
  counted, run again once).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gdexp import compat

__all__ = ["Outcome", "Owner", "TrialRecord", "place", "study_records", "template", "write"]

# field -> user attribute; `write` and `TrialRecord.of` are the only code that reads this table
KEYS = {"owner": "owner", "worker": "worker", "retry_of": "retry_of", "run_id": "mlflow_run_id", "beat": "beat",
        "outcome": "outcome", "interrupted": "interrupted", "error": "error", "store_failed": "store_failed",
        "lost": "lost"}


@dataclass(frozen=True)
class Owner:
    """The process that runs a trial, as precisely as a reaper on another host or in another container needs to
    judge it: a process id means something only on its own host, boot and PID namespace, and a start time tells a
    recycled id from the owner."""

    host: str
    boot: str  # /proc/sys/kernel/random/boot_id
    pidns: int  # inode of /proc/self/ns/pid
    pid: int
    start: int  # the process's start time, in clock ticks since boot (/proc/<pid>/stat)
    at: float  # when it claimed the trial (seconds since the epoch, its own clock)
    ray_node: str | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    @classmethod
    def parse(cls, value: Any) -> Owner | None:  # alike in shape to Outcome.parse: each reads its own fields
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(str(value["host"]), str(value["boot"]), int(value["pidns"]), int(value["pid"]),
                       int(value["start"]), float(value["at"]), value.get("ray_node"))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Outcome:
    """What a finished or pruned trial's run measured, as the labels, the console and the report need it."""

    lr: float
    hidden_size: float  # 0 for a linear model (no hidden layer)
    group: str  # its sibling group (`regimes.sibling_group`)
    initial: float  # training loss before the first update
    losses: tuple[float, ...]  # training loss after each epoch, to where it stopped
    regime: str  # the label of its own curve (`regimes.classify`); siblings refine it
    reason: str
    diverged: bool = False
    final_val_loss: float = math.nan

    @classmethod
    def parse(cls, value: Any) -> Outcome | None:
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(float(value["lr"]), float(value["hidden_size"]), str(value["group"]), _float(value["initial"]),
                       tuple(_float(v) for v in value["losses"]), str(value["regime"]), str(value["reason"]),
                       bool(value.get("diverged", False)), _float(value.get("final_val_loss")))
        except (KeyError, TypeError, ValueError):
            return None

    def attr(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities as None (a journal is JSON; RDB storages JSON-encode too)."""
        plain = asdict(self)
        plain["losses"] = [_json(v) for v in self.losses]
        plain["initial"], plain["final_val_loss"] = _json(self.initial), _json(self.final_val_loss)
        return plain


def _json(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True)
class TrialRecord:
    """A trial of the study with gdexp's attributes, typed."""

    number: int
    trial_id: int
    state: TrialState
    params: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    owner: Owner | None = None
    worker: str | None = None
    retry_of: int | None = None
    run_id: str | None = None
    beat: float | None = None
    outcome: Outcome | None = None
    interrupted: bool = False
    error: str | None = None
    store_failed: str | None = None
    lost: str | None = None
    value: float | None = None

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        retry = a.get(KEYS["retry_of"])
        return cls(t.number, compat.trial_id(t), t.state, dict(t.params), dict(t.intermediate_values),
                   Owner.parse(a.get(KEYS["owner"])), _text(a.get(KEYS["worker"])),
                   int(retry) if isinstance(retry, int) else None, _text(a.get(KEYS["run_id"])),
                   float(a[KEYS["beat"]]) if isinstance(a.get(KEYS["beat"]), int | float) else None,
                   Outcome.parse(a.get(KEYS["outcome"])), bool(a.get(KEYS["interrupted"], False)),
                   _text(a.get(KEYS["error"])), _text(a.get(KEYS["store_failed"])), _text(a.get(KEYS["lost"])),
                   t.value)

    @property
    def counted(self) -> bool:
        """Does this trial count toward `sweep.n_trials`? Finished, pruned, or failed because training raised.
        Interrupted, lost (owner died) and store-failed trials do not: they are replaced."""
        if self.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        return self.state == TrialState.FAIL and self.error is not None

    @property
    def owed_rerun(self) -> bool:
        """Is this trial run again with its own parameters (`_claim`)? One that did not count through no fault of its
        parameters: interrupted, its store failed, or lost (its owner died) -- so that a resumed sweep evaluates
        the points an uninterrupted one would (a grid its every point once). A lost retry is not run again: a trial
        that kills its worker would otherwise take every worker down in turn."""
        if self.state != TrialState.FAIL or self.counted:
            return False
        if self.lost is not None:
            return self.retry_of is None
        return self.interrupted or self.store_failed is not None

    @property
    def active(self) -> bool:
        return self.state in (TrialState.RUNNING, TrialState.WAITING)

    @property
    def unfinished(self) -> str:
        """Why a trial that failed has no result, in a few words (its run's `regime_reason` and `error` say it)."""
        if self.interrupted:
            return "interrupted"
        if self.error:
            return f"training failed ({self.error})"
        if self.lost:
            return f"its worker stopped ({self.lost})"
        if self.store_failed:
            return f"the tracking store failed ({self.store_failed})"
        return "its command stopped before it ended the run"


_finished: weakref.WeakKeyDictionary[optuna.Study, dict[int, TrialRecord]] = weakref.WeakKeyDictionary()


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """The records of the study's trials, as its storage holds them now. A finished trial's record is read once
    per study object and kept: its attributes can no longer change (Optuna refuses the write), and reading every
    trial anew at each claim and progress update made a trial's cost grow with the sweep's length (5 ms a trial
    at 400 trials, all of it here)."""
    kept = _finished.setdefault(study, {})
    out = []
    for t in study.get_trials(deepcopy=False):
        tid = compat.trial_id(t)
        record = kept.get(tid)
        if record is None:
            record = TrialRecord.of(t)
            if t.state.is_finished():
                kept[tid] = record
        out.append(record)
    return out


def place(records: Sequence[TrialRecord], number: int) -> int:
    """Trial `number`'s place in the sweep as if nothing had been rerun: a rerun takes its original's place, and
    any other trial counts the trials before it that are not reruns. A trial's sampler is seeded by it
    (`_samplers`), so that a resumed sweep draws what an uninterrupted one would have drawn."""
    rerun_of = {r.number: r.retry_of for r in records if r.retry_of is not None}
    while number in rerun_of:
        number = rerun_of[number]
    return number - sum(1 for n in rerun_of if n < number)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def template(owner: Owner, *, rerun: FrozenTrial | None = None) -> FrozenTrial:
    """A RUNNING trial with its owner for `storage.create_new_trial` (and, to run trial `rerun` again, its number and
    its point, where Optuna's own `enqueue_trial` puts parameters, so the trial's suggestions return them): the
    trial and its owner are one write, so a process killed right after it leaves a trial whose owner a reaper can
    judge."""
    attrs: dict[str, Any] = {KEYS["owner"]: asdict(owner), KEYS["worker"]: owner.label}
    if rerun is not None:
        attrs[KEYS["retry_of"]] = rerun.number
    return optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs,
                                     system_attrs=compat.replay(rerun) if rerun is not None else None)


def write(storage: optuna.storages.BaseStorage, trial_id: int, **fields: Any) -> None:
    """Set record fields of a trial that is still running (`run_id=...`, `outcome=Outcome(...)`, `lost=...`)."""
    for name, value in fields.items():
        if isinstance(value, Outcome):
            value = value.attr()
        elif isinstance(value, Owner):
            value = asdict(value)
        storage.set_trial_user_attr(trial_id, KEYS[name], value)
