"""The sweep's pure parts, in milliseconds, on a real journal in a temporary folder: the typed trial record, what
counts, whose owner is gone, and the claiming rules (one rerun per lost or interrupted trial, at its point; never
more trials than the total)."""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from gdexp.sweep import TrialRecord, tally
from gdexp.sweep._claim import claim
from gdexp.sweep._journal import open_journal
from gdexp.sweep._liveness import gone, me
from gdexp.sweep._record import Outcome, Owner, place, study_records, template, write
from gdexp.sweep._samplers import make_sampler
from gdexp.sweep._storage import Storage


@pytest.fixture
def study(tmp_path: Path) -> tuple[optuna.Study, Storage, int]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = tmp_path / "study.journal"
    storage = Storage(open_journal(path), str(path), "", "s", path)
    made = optuna.create_study(study_name="s", storage=storage.optuna)
    return made, storage, storage.optuna.get_study_id_from_name("s")


def records(s: optuna.Study) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in s.get_trials()]


def dead_owner() -> Owner:
    """This host's own identity, with a start time no live process has: a worker that is gone."""
    here = me()
    return Owner(here.host, here.boot, here.pidns, here.pid, here.start + 1, time.time())


def test_a_trial_is_created_running_with_its_owner_in_one_write(study) -> None:
    s, storage, study_id = study
    got = claim(s, storage, study_id, total=3, grace=20, on_lost=lambda r, why: None)
    (record,) = records(s)
    assert got.trial is not None and record.state == TrialState.RUNNING
    assert record.owner is not None and record.owner.pid == os.getpid() and record.owner.host == socket.gethostname()
    assert record.worker == f"{socket.gethostname()}:{os.getpid()}"
    lines = Path(storage.where).read_text().splitlines()
    created = [line for line in lines if '"op_code":4' in line]
    assert len(created) == 1 and '"owner"' in created[0], "the owner is in the record that creates the trial"


def test_study_records_follow_a_running_trial_and_read_a_finished_one_once(study) -> None:
    """A claim reads every trial's record: a finished trial's is parsed once and kept (its attributes can no longer
    change), a running trial's is read anew each time."""
    s, storage, study_id = study
    got = claim(s, storage, study_id, total=2, grace=20, on_lost=lambda r, why: None)
    assert study_records(s)[0].run_id is None
    write(storage.optuna, got.trial_id, run_id="abc")
    assert study_records(s)[0].run_id == "abc", "a running trial's record is not kept"
    s.tell(got.trial, 0.5)
    second = claim(s, storage, study_id, total=2, grace=20, on_lost=lambda r, why: None)
    first, again = study_records(s), study_records(s)
    assert first == records(s) and [r.state for r in first] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert first[0] is again[0] and first[1] is not again[1]
    s.tell(second.trial, 0.25)
    assert study_records(s) == records(s)


def test_the_outcome_reads_back_as_written(study) -> None:
    s, storage, study_id = study
    got = claim(s, storage, study_id, total=1, grace=20, on_lost=lambda r, why: None)
    outcome = Outcome(0.1, 64.0, "h64-127", 2.3, (1.0, math.nan, 0.5), "just_right", "why", False, math.inf)
    write(storage.optuna, got.trial_id, outcome=outcome, run_id="abc")
    (record,) = records(s)
    assert record.run_id == "abc" and record.outcome is not None
    assert record.outcome.losses[0] == 1.0 and math.isnan(record.outcome.losses[1])
    assert math.isnan(record.outcome.final_val_loss), "not finite: kept as null, read back as NaN"
    assert record.outcome.group == "h64-127" and record.outcome.regime == "just_right"


def test_what_counts_toward_the_total(study) -> None:
    s, storage, study_id = study
    for _ in range(5):
        claim(s, storage, study_id, total=10, grace=20, on_lost=lambda r, why: None)
    s.tell(0, 1.0)
    s.tell(1, state=TrialState.PRUNED)
    write(storage.optuna, 2, error="RuntimeError: boom")
    s.tell(2, state=TrialState.FAIL)
    write(storage.optuna, 3, interrupted=True)
    s.tell(3, state=TrialState.FAIL)
    counts = tally(records(s))
    assert (counts["done"], counts["complete"], counts["pruned"], counts["failed"], counts["not counted"],
            counts["active"]) == (3, 1, 1, 1, 1, 1)


def test_a_lost_trial_is_failed_and_retried_exactly_once_whoever_claims(study) -> None:
    s, storage, study_id = study
    lost_id = storage.optuna.create_new_trial(study_id, template_trial=template(dead_owner()))
    optuna.Trial(s, lost_id).suggest_float("x", 0, 1)
    ended: list[tuple[int, str]] = []
    first = claim(s, storage, study_id, total=3, grace=20, on_lost=lambda r, why: ended.append((r.number, why)))
    second = claim(s, storage, study_id, total=3, grace=20, on_lost=lambda r, why: ended.append((r.number, why)))
    rs = {r.number: r for r in records(s)}
    assert rs[0].state == TrialState.FAIL and rs[0].lost is not None and "is gone" in rs[0].lost
    assert len(ended) == 1 and ended[0][0] == 0, "its MLflow run is ended once"
    assert [r.retry_of for r in rs.values()] == [None, 0, None], "one retry, then a new trial"
    assert first.trial is not None and first.trial.suggest_float("x", 0, 1) == rs[0].params["x"]
    assert second.trial is not None and not rs[0].counted


def test_a_lost_retry_is_not_retried_again(study) -> None:
    s, storage, study_id = study
    first = storage.optuna.create_new_trial(study_id, template_trial=template(dead_owner()))
    s.tell(first, state=TrialState.FAIL)
    write_lost = storage.optuna.create_new_trial(study_id, template_trial=template(
        dead_owner(), rerun=storage.optuna.get_trial(first)))
    assert write_lost == 1
    claim(s, storage, study_id, total=5, grace=20, on_lost=lambda r, why: None)
    rs = records(s)
    assert rs[1].lost is not None and rs[2].retry_of is None, "trial 1, itself a retry, is not retried"


GRID = {"lr": [0.001, 0.01, 0.1, 1.0], "hidden_size": [8, 32, 128]}


def _journal_study(folder: Path, sampler: str) -> tuple[optuna.Study, Storage, int]:
    """A study as a sweep makes it: on a journal, with the sampler `sweep.sampler` names (seed 7)."""
    folder.mkdir()
    path = folder / "study.journal"
    storage = Storage(open_journal(path), str(path), "", "s", path)
    space = {key: CategoricalDistribution(values) for key, values in GRID.items()}
    made = optuna.create_study(study_name="s", storage=storage.optuna, sampler=make_sampler(sampler, 7, space))
    return made, storage, storage.optuna.get_study_id_from_name("s")


def _sweep(study: tuple[optuna.Study, Storage, int], sampler: str, total: int, stop: int | None = None,
           before_suggesting: bool = False) -> None:
    """Claim and tell trials as a worker does until the study holds `total`, on a loss of the point; at trial
    number `stop` the command is interrupted as Ctrl-C leaves a trial (after its suggestions, or before them)."""
    s, storage, study_id = study
    while (got := claim(s, storage, study_id, total=total, grace=20, on_lost=lambda r, why: None)).trial:
        trial = got.trial
        if trial.number == stop and before_suggesting:
            write(storage.optuna, got.trial_id, interrupted=True)
            s.tell(trial.number, state=TrialState.FAIL)
            return
        if sampler == "grid":
            lr, hidden = trial.suggest_categorical("lr", GRID["lr"]), trial.suggest_categorical("hidden_size",
                                                                                              GRID["hidden_size"])
        else:
            lr, hidden = trial.suggest_float("lr", 1e-4, 10, log=True), trial.suggest_int("hidden_size", 8, 128)
        if trial.number == stop:
            write(storage.optuna, got.trial_id, interrupted=True)
            s.tell(trial.number, state=TrialState.FAIL)
            return
        s.tell(trial.number, (math.log10(lr) + 1.3) ** 2 + (math.log2(hidden) - 5) ** 2 / 10)


def _points(s: optuna.Study) -> list[tuple[float, int]]:
    return [(t.params["lr"], t.params["hidden_size"]) for t in s.get_trials() if t.state == TrialState.COMPLETE]


@pytest.mark.parametrize(("sampler", "total", "stop", "before_suggesting"), [
    ("tpe", 14, 11, False), ("tpe", 14, 11, True), ("random", 6, 2, False), ("grid", 12, 11, False),
    ("grid", 12, 5, True)])
def test_a_resumed_sweep_evaluates_the_points_of_an_uninterrupted_one(tmp_path: Path, sampler: str, total: int,
                                                                        stop: int, before_suggesting: bool) -> None:
    """An interrupted trial is run again at its point (its grid point, when it stopped before suggesting), and the
    trials after it draw as the uninterrupted sweep's did: TPE's model (past its 10 start-up trials) and random
    sampling in the same order, a grid every point once. (Once, an interrupted trial was replaced by a new draw:
    a grid ran one point twice and another never, TPE drew points the uninterrupted sweep never tried.)"""
    whole = _journal_study(tmp_path / "whole", sampler)
    _sweep(whole, sampler, total)
    cut = _journal_study(tmp_path / "cut", sampler)
    _sweep(cut, sampler, total, stop=stop, before_suggesting=before_suggesting)
    _sweep(_journal_study_again(tmp_path / "cut", sampler), sampler, total)
    rs = records(cut[0])
    assert [r.retry_of for r in rs if r.retry_of is not None] == [stop], "the interrupted trial is run again, once"
    if sampler == "grid":
        assert sorted(_points(cut[0])) == sorted(_points(whole[0])) and len(set(_points(whole[0]))) == total
    else:
        assert _points(cut[0]) == _points(whole[0])


def _journal_study_again(folder: Path, sampler: str) -> tuple[optuna.Study, Storage, int]:
    """The study of `_journal_study(folder, ...)` opened again, as the same command run again opens it."""
    path = folder / "study.journal"
    storage = Storage(open_journal(path), str(path), "", "s", path)
    space = {key: CategoricalDistribution(values) for key, values in GRID.items()}
    again = optuna.load_study(study_name="s", storage=storage.optuna, sampler=make_sampler(sampler, 7, space))
    return again, storage, storage.optuna.get_study_id_from_name("s")


def test_a_trials_place_skips_the_reruns_before_it() -> None:
    """`place`: what seeds a trial's sampler. A rerun (of a rerun, too) takes its original's place."""
    records = [TrialRecord(number, number, TrialState.FAIL, retry_of=r)
               for number, r in enumerate((None, None, 1, None, 2, None))]
    assert [place(records, n) for n in range(6)] == [0, 1, 1, 2, 1, 3]


def test_an_interrupted_or_store_failed_trial_is_run_again_and_a_lost_rerun_is_not(study) -> None:
    s, storage, study_id = study
    fields = ({"interrupted": True}, {"store_failed": "the store is unreachable"}, {"error": "RuntimeError"})
    for field, got in zip(fields, [claim(s, storage, study_id, total=9, grace=20, on_lost=lambda r, why: None)
                                   for _ in fields], strict=True):
        assert got.trial is not None
        got.trial.suggest_float("x", 0, 1)
        write(storage.optuna, got.trial_id, **field)
        s.tell(got.trial.number, state=TrialState.FAIL)
    reruns = [claim(s, storage, study_id, total=9, grace=20, on_lost=lambda r, why: None) for _ in range(3)]
    rs = records(s)
    assert [r.retry_of for r in rs[3:]] == [0, 1, None], "the interrupted and store-failed ones; a failed one counts"
    assert [reruns[i].trial.suggest_float("x", 0, 1) for i in (0, 1)] == [rs[0].params["x"], rs[1].params["x"]]
    write(storage.optuna, rs[3].trial_id, interrupted=True)
    s.tell(3, state=TrialState.FAIL)
    write(storage.optuna, rs[4].trial_id, lost="its process is gone")
    s.tell(4, state=TrialState.FAIL)
    claim(s, storage, study_id, total=9, grace=20, on_lost=lambda r, why: None)
    claim(s, storage, study_id, total=9, grace=20, on_lost=lambda r, why: None)
    assert [r.retry_of for r in records(s)[6:]] == [3, None], "an interrupted rerun runs again; a lost one does not"


def test_never_more_trials_than_the_total(study) -> None:
    s, storage, study_id = study
    got = [claim(s, storage, study_id, total=2, grace=20, on_lost=lambda r, why: None) for _ in range(3)]
    assert [g.trial is not None for g in got] == [True, True, False] and not got[2].done, "the third waits"
    s.tell(0, 1.0)
    s.tell(1, 1.0)
    assert claim(s, storage, study_id, total=2, grace=20, on_lost=lambda r, why: None).done
    assert len(s.get_trials()) == 2


def test_an_enqueued_trial_is_taken_with_an_owner(study) -> None:
    s, storage, study_id = study
    s.enqueue_trial({"x": 0.25})
    got = claim(s, storage, study_id, total=2, grace=20, on_lost=lambda r, why: None)
    (record,) = records(s)
    assert got.trial is not None and got.trial.suggest_float("x", 0, 1) == 0.25
    assert record.state == TrialState.RUNNING and record.owner is not None


def test_whose_owner_is_gone() -> None:
    alive = TrialRecord(0, 0, TrialState.RUNNING, owner=me())
    assert gone(alive, grace=20, nodes=None) is None
    assert "worker process" in (gone(TrialRecord(0, 0, TrialState.RUNNING, owner=dead_owner()), grace=20,
                                     nodes=None) or "")
    elsewhere = Owner("other-host", "boot", 1, 42, 7, time.time() - 100)
    assert "no heartbeat for 100 s" in (gone(TrialRecord(0, 0, TrialState.RUNNING, owner=elsewhere), grace=20,
                                             nodes=None) or "")
    beating = TrialRecord(0, 0, TrialState.RUNNING, owner=elsewhere, beat=time.time() - 5)
    assert gone(beating, grace=20, nodes=None) is None, "a recent heartbeat: alive, wherever it runs"
    on_ray = Owner("other-host", "boot", 1, 42, 7, time.time(), ray_node="n1")
    assert "Ray node n1 is gone" in (gone(TrialRecord(0, 0, TrialState.RUNNING, owner=on_ray), grace=20,
                                          nodes={"n2"}) or "")


@pytest.mark.parametrize("stopped,status,state", [
    (None, "FINISHED", "COMPLETE"), ("pruned", "FINISHED", "PRUNED"), ("diverged", "FINISHED", "COMPLETE"),
    ("pruned", "FAILED", "FAIL"), (None, "FAILED", "FAIL"), ("pruned", "KILLED", "FAIL"),
])
def test_a_trials_run_ends_with_the_state_its_trial_gets(stopped: str | None, status: str, state: str) -> None:
    """A pruned trial whose artifacts could not be written fails: its run says FAIL, as the study does, not
    PRUNED; a run that did not finish carries regime=none."""
    import numpy as np

    from gdexp.history import History
    from gdexp.sweep._study import _end_tags

    history = History(batch_loss=np.zeros(3), lr=np.zeros(3), epochs=[{"epoch": 1.0}], stop_reason=stopped)
    tags = _end_tags(history, status)
    assert tags["optuna.state"] == state
    assert (tags.get("regime") == "none") == (status != "FINISHED")


@pytest.mark.parametrize("values", [[0.1, 0.3, 2.0, 3.0e6], [-0.5, 0.2, 0.9, 1.0e6]])
def test_a_diverged_trials_penalty_is_drawn_along_the_top_not_on_the_scale(values: list[float]) -> None:
    """The parent's plots: a penalty of 1e6 would stretch the value axis over seven decades and squash the rest;
    the axis spans the others (log when they are positive) and the diverged trial is a triangle above them."""
    import numpy as np

    from gdexp import plots
    from gdexp.sweep._plots import _penalties_on_top

    _, ax = plots.axes()
    kept = np.array(values[:3])
    _penalties_on_top(ax, np.arange(4.0), np.array(values), np.array([False, False, False, True]))
    low, high = ax.get_ylim()
    assert low < kept.min() and kept.max() < high < 10 * kept.max()
    assert ax.get_yscale() == ("log" if (kept > 0).all() else "linear")
    (diverged,) = ax.collections
    ((x, y),) = diverged.get_offsets()
    assert x == 3 and kept.max() < y < high and diverged.get_label().startswith("diverged")


def test_a_study_past_its_n_trials_says_so(make_cfg) -> None:
    """`+sweep=lr sweep.n_trials=5` on a study that holds 30 trials runs none and said 'Study 'lr': 30 of 5
    trials'; the line now says why there are more."""
    from gdexp.sweep._parent import summary_table

    study = optuna.create_study(direction="minimize")
    for x in (0.3, 0.2, 0.1):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": CategoricalDistribution(
            [0.1, 0.2, 0.3])}, value=x))
    line = summary_table(make_cfg("+sweep=lr", "sweep.n_trials=2"), study, "here", "ui").splitlines()[0]
    assert line.startswith("Study 'lr': 3 trials, more than sweep.n_trials=2, which the study held already (3 "
                           "complete"), line
    assert summary_table(make_cfg("+sweep=lr", "sweep.n_trials=3"), study, "here", "ui").startswith(
        "Study 'lr': 3 of 3 trials")
