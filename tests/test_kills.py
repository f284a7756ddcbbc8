"""SIGKILL at chosen instants and at random ones: whatever instant a process of a sweep dies at, the sweep does
not hang, the same command finishes the study to its exact total, each lost or interrupted trial is run again
exactly once, and MLflow agrees with the study (no run RUNNING, every run's end says what its trial became).

The chosen instants (tests/faultpoints.py): right after a trial is created (inside the study's lock), while the
lock is held, a forked worker before it has the parent run's id, while the trial's MLflow run is being ended,
and while the study is told the trial's state; on a journal and on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gdexp.config import database_url
from gdexp.sweep import TrialRecord
from tests.conftest import ROOT, all_runs, child_env, gdexp
from tests.faultpoints import POINTS

pytestmark = pytest.mark.slow

ARGS = ["+sweep=lr", "sweep.n_trials=6", "sweep.n_workers=2", "gd=stochastic", "train.epochs=2",
        "sweep.pruner=none", "sweep.heartbeat_s=2", "tracking.artifacts=false"]


def journal(project: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(project / "sweeps" / "lr" / "study.journal")))
    return optuna.load_study(study_name="lr", storage=storage)


def armed(point: str, project: Path, *args: str) -> subprocess.Popen[str]:
    """The sweep command with `point` armed, in a process group of its own."""
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "faultpoints.py"), point,
                             str(project / f".{point}.fired"), *args], cwd=project, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def group_ends(pgid: int, timeout: float = 180) -> None:
    """Wait until no process of group `pgid` is left (a worker outlives a killed command until the study is
    done); fail, and kill them, if they are still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail(f"processes of the sweep were still running {timeout:.0f} s after the kill")


def consistent(study: optuna.Study, runs: list, total: int) -> list[TrialRecord]:
    """The invariants a kill must not break; returns the records."""
    records = [TrialRecord.of(t) for t in study.get_trials()]
    done = [r for r in records if r.counted]
    assert len(done) == total and len({r.number for r in done}) == total, [(r.number, r.state) for r in records]
    assert not [r for r in records if r.state in (TrialState.RUNNING, TrialState.WAITING)]
    for r in records:
        retries = [x.number for x in records if x.retry_of == r.number]
        if r.owed_rerun:
            assert len(retries) == 1, f"trial {r.number} lost or interrupted: run again {len(retries)} times"
        else:
            assert retries == [], f"trial {r.number} was neither lost nor interrupted, yet run again by {retries}"
    status = {run.info.run_id: run for run in runs if "mlflow.parentRunId" in run.data.tags}
    assert not [run_id for run_id, run in status.items() if run.info.status == "RUNNING"]
    for r in records:
        if r.run_id is None:
            continue
        run = status[r.run_id]
        expected = "FINISHED" if r.counted and r.error is None else "KILLED" if r.interrupted else "FAILED"
        assert run.info.status == expected, (r.number, r.state, r.lost, run.info.status)
        assert run.data.tags["optuna.state"] == ("FAIL" if not r.counted else r.state.name)
    owned = {r.run_id for r in records}
    unrecorded = {str(r.number) for r in records if r.run_id is None}  # the run made, its id never written
    for run_id, run in status.items():
        if run_id not in owned:
            tags = run.data.tags
            assert tags.get("optuna.state") == "GONE" or (
                tags["optuna.trial"] in unrecorded and tags["optuna.state"] == "FAIL"
                and run.info.status == "FAILED"), (run_id, tags.get("optuna.state"), run.info.status)
    parents = [run for run in runs if run.data.tags.get("gdexp.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return records


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_instant_on_a_journal_then_the_same_command_finishes(project: Path, point: str) -> None:
    first = armed(point, project, *ARGS)
    _out, err = first.communicate(timeout=240)
    group_ends(first.pid)
    assert (project / f".{point}.fired").exists(), f"the sweep never reached {point}"
    assert first.returncode in (0, -signal.SIGKILL) and "Traceback" not in err, err
    again = gdexp(*ARGS, cwd=project, timeout=240)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    runs = all_runs(project)
    records = consistent(journal(project), runs, 6)
    if point in ("after_create", "before_run_recorded", "during_mlflow_write", "during_tell"):
        assert [r for r in records if r.lost], "a trial died with its worker"
    assert not [r for r in runs if r.data.tags.get("optuna.state") == "GONE"], \
        "no trial left the study: a run whose id its trial never recorded is that trial's, not a gone one's"


@pytest.mark.parametrize("point", ["after_create", "during_tell"])
def test_on_postgresql_the_other_command_finishes_alone(project: Path, database: str, point: str) -> None:
    """Two commands share a PostgreSQL study; one dies at `point`. The other fails its trial at once (its
    owner's process is gone), retries it, and ends the study to its exact total: no wait for a heartbeat that
    never came, no rerun needed."""
    args = [*ARGS, "sweep.n_workers=1", f"sweep.storage={database}"]
    victim = armed(point, project, *args)
    deadline = time.monotonic() + 120
    while not (project / f".{point}.fired").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the other command starts once the victim died at the point
    other = subprocess.run([sys.executable, "-m", "gdexp", *args], cwd=project, env=child_env(), capture_output=True,
                           text=True, timeout=240, check=False)
    victim.communicate(timeout=240)
    group_ends(victim.pid)
    assert other.returncode == 0, other.stderr
    assert (project / f".{point}.fired").exists() and victim.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="lr", storage=database_url(database))
    records = consistent(study, all_runs(project), 6)
    assert [r for r in records if r.lost]


def test_thirty_random_kills_lose_nothing(project: Path) -> None:
    """Kill the command, a worker, or the whole group, at a random moment of a sweep, 30 times; then run the
    command to its end. (A seeded generator: the same moments on every run of the test.)"""
    rng = random.Random(20261202)
    args = [*ARGS, "sweep.n_trials=40", "gd=minibatch", "sweep.heartbeat_s=1"]
    kills = 0
    while kills < 30:
        proc = subprocess.Popen([sys.executable, "-m", "gdexp", *args], cwd=project, env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(rng.uniform(0.6, 3.0))
        members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _group(int(p)) == proc.pid]
        target = rng.choice(["command", "worker", "group"])
        worker = [p for p in members if p != proc.pid]
        if target == "group" or (target == "worker" and not worker):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(worker[0] if target == "worker" else proc.pid, signal.SIGKILL)
        kills += 1
        time.sleep(rng.uniform(0.0, 1.0))
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever survived: a second kill, at another moment
            kills += 1
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        group_ends(proc.pid, timeout=30)
    final = gdexp(*args, cwd=project, timeout=300)
    assert final.returncode == 0 and "Traceback" not in final.stderr, final.stderr
    consistent(journal(project), all_runs(project), 40)


def _group(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_a_single_run_killed_while_running_is_ended_by_the_next_run(project: Path) -> None:
    """SIGKILL leaves a single run's MLflow run RUNNING (nothing of the process is left to end it), and it stayed
    so for ever (a helper's fault-injection run); a sweep's trials have their reapers. The next run on the store
    ends it KILLED, knowing its process gone by `gdexp.process` (host, boot, PID namespace, pid, start time); a
    run whose process still runs is left alone."""
    args = [sys.executable, "-m", "gdexp", "train.epochs=500", "train.progress=false", "tracking.flush_every_s=0"]
    victim = subprocess.Popen(args, cwd=project, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    alive = subprocess.Popen(args, cwd=project, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len([r for r in all_runs(project) if r.info.status == "RUNNING"]) < 2:
            assert time.monotonic() < deadline and victim.poll() is None and alive.poll() is None
            time.sleep(0.2)
        victim.kill()
        victim.wait()
        (killed,) = [r for r in all_runs(project) if r.data.tags["gdexp.process"].split()[3] == str(victim.pid)]
        assert killed.info.status == "RUNNING", "nothing of the killed process ended it"
        result = gdexp("train.epochs=1", "train.progress=false", cwd=project)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == (f"gdexp: run {killed.info.run_id} was left RUNNING by a process that is "
                                         "gone (killed before it could end it): ended KILLED"), result.stderr
        status = {r.data.tags["gdexp.process"].split()[3]: r.info.status for r in all_runs(project)}
        assert status[str(victim.pid)] == "KILLED" and status[str(alive.pid)] == "RUNNING"
    finally:
        for proc in (victim, alive):
            proc.kill()
            proc.wait()
