"""Claiming a study's next trial: one process at a time (the study's lock), so that every rule below holds
however many workers, commands and hosts share the study.

1. Reap: every RUNNING trial whose owner is gone (`_liveness.gone`) is failed, with the reason in its record
   (`lost`), and its MLflow run ended (`on_lost`). A lost trial does not count toward the total.
2. Stop or wait: nothing is created once the counted trials reach `sweep.n_trials`, nor while those in flight
   would reach it (a worker then waits, to replace one whose owner dies).
3. Rerun: a trial that did not count through no fault of its point (interrupted, its store failed, lost:
   `TrialRecord.owed_rerun`) is run again at the same point (`retry_of` names it), exactly once: the rerun exists,
   or it does not, when the next claimer looks under the lock. So a resumed sweep evaluates what an uninterrupted
   one would. A rerun that is lost is not run again (a point that kills its worker would kill them all).
4. Otherwise a trial enqueued by hand (Optuna's `enqueue_trial`) is taken, or a new one is created.

A trial is created RUNNING with its owner in one storage write (`_record.template`): a process killed at any
instant leaves either no trial or a trial whose owner can be judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from gdexp.sweep._accounting import tally
from gdexp.sweep._liveness import gone, me, ray_nodes_alive
from gdexp.sweep._record import TrialRecord, study_records, template, write
from gdexp.sweep._storage import Storage

__all__ = ["Claim", "claim", "reap"]

LostHandler = Callable[[TrialRecord, str], None]  # (the lost trial, why): end its MLflow run


@dataclass(frozen=True)
class Claim:
    """What a worker got: a trial to run, or none (`done`: the study holds its total; else: wait), and the study's
    records as the claim read them (before its own trial), for the progress shown."""

    trial: optuna.Trial | None = None
    trial_id: int = -1
    done: bool = False
    records: tuple[TrialRecord, ...] = ()


def reap(study: optuna.Study, storage: Storage, records: list[TrialRecord], *, grace: float,
         on_lost: LostHandler) -> list[TrialRecord]:
    """Fail the RUNNING trials whose owner is gone; return the records as they are now."""
    running = [r for r in records if r.state == TrialState.RUNNING]
    if not running:
        return records
    nodes = ray_nodes_alive() if any(r.owner is not None and r.owner.ray_node for r in running) else None
    changed = False
    for r in running:
        why = gone(r, grace=grace, nodes=nodes)
        if why is None:
            continue
        try:
            write(storage.optuna, r.trial_id, lost=why)
            study.tell(r.number, state=TrialState.FAIL, skip_if_finished=True)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # it ended meanwhile: its owner was alive after all
        on_lost(TrialRecord.of(storage.optuna.get_trial(r.trial_id)), why)
        changed = True
    return study_records(study) if changed else records


def claim(study: optuna.Study, storage: Storage, study_id: int, *, total: int, grace: float, on_lost: LostHandler,
          ray_node: str | None = None) -> Claim:
    """Under the study's lock: reap, then claim the next trial by the rules of the module docstring."""
    with storage.lock():
        records = reap(study, storage, study_records(study), grace=grace, on_lost=on_lost)
        counts = tally(records)
        running = sum(r.state == TrialState.RUNNING for r in records)
        if counts["done"] >= total:
            return Claim(done=True, records=tuple(records))
        if counts["done"] + running >= total:
            return Claim(records=tuple(records))
        owner = me(ray_node)
        retried = {r.retry_of for r in records if r.retry_of is not None}
        owed = next((r for r in records if r.owed_rerun and r.number not in retried), None)
        waiting = next((r for r in records if r.state == TrialState.WAITING), None)
        if owed is None and waiting is not None and storage.optuna.set_trial_state_values(
                waiting.trial_id, state=TrialState.RUNNING):
            write(storage.optuna, waiting.trial_id, owner=owner, worker=owner.label)
            trial_id = waiting.trial_id
        else:
            trial_id = storage.optuna.create_new_trial(study_id, template_trial=template(
                owner, rerun=storage.optuna.get_trial(owed.trial_id) if owed else None))
    # The trial is this worker's now: Optuna's Trial object (the trial read back, the sampler's `before_trial`)
    # is made after the lock is let go, a fifth of the time a claim held it on PostgreSQL, waited by the others.
    return Claim(optuna.Trial(study, trial_id), trial_id, records=tuple(records))
