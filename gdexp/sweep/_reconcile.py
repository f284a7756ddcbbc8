"""MLflow brought in line with the study: the runs of trials that are lost, interrupted or gone.

The study is the truth about trials; MLflow holds a run per trial. They can drift apart: a worker killed
between ending its run and telling the study (the run FINISHED, the trial later failed as lost), a journal cut
back to its whole records (runs of trials the study no longer has), a store that failed mid-write. `reconcile`
runs at every start of a sweep and when it ends: each child run of the sweep's parent whose trial is FAIL and
not counted is ended FAILED (KILLED when interrupted) with `regime=none` and the reason; a run whose trial is
gone from the study is ended FAILED and tagged `optuna.state=GONE`; a run whose trial never recorded it (cut
between the two writes) is its trial's. So every RUNNING run belongs to a running trial, and the report, which
counts trials, never counts a run twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import TrialState

from gdexp import regimes, store
from gdexp.sweep._record import TrialRecord

__all__ = ["GONE", "end_lost_run", "reconcile", "unlabelled"]

GONE = "GONE"  # the `optuna.state` tag of a run whose trial the study no longer holds


def unlabelled(why: str) -> dict[str, str]:
    """The tags of a run that is no regime sample (interrupted, failed, lost): `regime=none` and why."""
    return {"regime": regimes.NONE, "regime_reason": f"{why}: not a regime sample"}


def end_lost_run(uri: str, record: TrialRecord, why: str) -> None:
    """End FAILED the MLflow run of a trial whose owner died (not asked of a store found unreachable: the next
    start reconciles it)."""
    if record.run_id is None or store.down(uri):
        return
    if store.get_run(uri, record.run_id).info.status in ("RUNNING", "FINISHED"):
        _end(uri, record.run_id, "FAILED", {"optuna.state": "FAIL", "error": f"trial {record.number} failed: {why}",
                                            **unlabelled(why)})


def _end(uri: str, run_id: str, status: str, tags: dict[str, str]) -> None:
    store.set_tags(uri, run_id, tags)
    store.end_run(uri, run_id, status)


def reconcile(uri: str, parent_run_id: str, records: Sequence[TrialRecord]) -> int:
    """Bring the parent's child runs in line with the study (module docstring); return how many were changed."""
    experiment = store.get_run(uri, parent_run_id).info.experiment_id
    runs = store.search_runs(uri, experiment, f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    owners = {r.run_id: r for r in records if r.run_id}
    # a trial whose run was made but whose record of it never reached the study (its process stopped, or the
    # study's storage refused the write, in between): the run is found by its trial's number
    unrecorded = {str(r.number): r for r in records if not r.run_id}
    changed = 0
    for run in runs:
        run_id, status, tags = run.info.run_id, run.info.status, run.data.tags
        record = owners.get(run_id) or unrecorded.get(tags.get("optuna.trial", ""))
        if record is not None and record.run_id is None and record.active:
            continue  # its worker made the run a moment ago and is writing its id to the study
        if record is None:
            if tags.get("optuna.state") != GONE:
                trial = tags.get("optuna.trial", "?")
                why = f"its trial {trial} is gone from the study (its records were cut from the storage)"
                _end(uri, run_id, "FAILED" if status in ("RUNNING", "FINISHED") else status,
                     {"optuna.state": GONE, **unlabelled(why)})
                changed += 1
        elif record.state == TrialState.FAIL and not record.counted and status in ("RUNNING", "FINISHED"):
            ended = "KILLED" if record.interrupted else "FAILED"
            extra = {} if record.interrupted else {"error": f"trial {record.number} failed: {record.unfinished}"}
            _end(uri, run_id, ended, {"optuna.state": "FAIL", **extra, **unlabelled(record.unfinished)})
            changed += 1
    return changed
