"""Optuna sweeps on a real journal storage and a real MLflow SQLite store, in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from gdexp import sweep
from gdexp.config import ConfigError
from gdexp.sweep import TrialRecord
from gdexp.sweep._labels import relabel
from gdexp.sweep._parent import parent_run
from tests.conftest import all_runs, child_env, counted, default_sigint, gdexp, store

pytestmark = pytest.mark.slow


def study(project: Path, name: str = "lr") -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(project / "sweeps" / name / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def children(project: Path) -> list:
    return [r for r in all_runs(project) if "mlflow.parentRunId" in r.data.tags]


def test_six_trials_one_parent_six_children(project: Path) -> None:
    result = gdexp("+sweep=lr", "sweep.n_trials=6", "train.epochs=2", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Study 'lr': 6 of 6 trials" in result.stdout
    assert "Open the UI: python -m gdexp.ui, then http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=" \
        "gdexp-lr" in result.stdout
    trials = study(project).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) + [t.state for t in trials].count(
        TrialState.PRUNED) == 6 and len(trials) == 6
    kids = children(project)
    parents = {r.data.tags["mlflow.parentRunId"] for r in kids}
    assert len(kids) == 6 and len(parents) == 1
    (parent,) = [r for r in all_runs(project) if r.info.run_id in parents]
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] + parent.data.metrics["n_pruned"] == 6
    assert "best_value" in parent.data.metrics and "sweep.params.optim.lr" in parent.data.params
    assert "optim.lr" not in parent.data.params and "model.hidden_size" not in parent.data.params, \
        "the searched keys' defaults, which no trial used, are not the parent's params"
    assert parent.data.params["optim.name"] == "sgd"
    plots = {a.path for a in store(project).list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "param_importances.png", "val_loss_vs_lr_hidden.png"} <= plots
    by_id = {r.info.run_id: r for r in kids}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial"] == str(t.number) and run.data.tags["optuna.study"] == "lr"
        assert run.data.tags["optuna.state"] == t.state.name and run.info.status == "FINISHED"
        assert run.data.tags["host"] == socket.gethostname() and run.data.tags["worker"].startswith("local:")
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])
        assert int(run.data.params["model.hidden_size"]) == t.params["model.hidden_size"]


def test_resume_completes_the_total_under_the_same_parent(project: Path) -> None:
    first = gdexp("+sweep=lr", "sweep.n_trials=3", "train.epochs=2", cwd=project)
    second = gdexp("+sweep=lr", "sweep.n_trials=6", "train.epochs=2", cwd=project)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert sorted(t.number for t in study(project).get_trials()) == [0, 1, 2, 3, 4, 5]
    assert len({r.data.tags["mlflow.parentRunId"] for r in children(project)}) == 1
    again = gdexp("+sweep=lr", "sweep.n_trials=6", "train.epochs=2", cwd=project)
    assert again.returncode == 0 and "6 of 6 trials" in again.stdout and len(study(project).get_trials()) == 6
    reasons = [r.data.tags["regime_reason"] for r in children(project)]
    placed = ("x sooner", "is the lowest of the", "within 2x of the fastest", "no sibling on the side")
    assert all(sum(reason.count(words) for words in placed) <= 1 for reason in reasons), \
        "relabelling a resumed sweep starts from each run's own label, not from the last relabelling"


def test_a_study_is_not_resumed_with_trials_of_another_config(project: Path) -> None:
    """README's second sweep after the main job, without a name of its own, would have added Adam full-batch
    trials to the SGD mini-batch study and labelled them as siblings: it is refused before any trial runs. How
    many trials, workers, sampler, pruner and the value of a searched key may change."""
    assert gdexp("+sweep=lr", "sweep.n_trials=2", "train.epochs=2", cwd=project).returncode == 0
    refused = gdexp("+sweep=lr", "optim=adam", "gd=batch", "sweep.n_trials=4", "train.epochs=3", cwd=project)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert ("study 'lr' holds trials run with gd.batch_size=32, gd.variant=minibatch, optim.name=sgd, train.epochs=2, "
            "not gd.batch_size=null, gd.variant=batch, optim.name=adam, train.epochs=3") in refused.stderr
    assert "sweep.name=lr-2" in refused.stderr and "Traceback" not in refused.stderr
    assert len(study(project).get_trials()) == 2 and len(children(project)) == 2
    extended = gdexp("+sweep=lr", "sweep.n_trials=4", "train.epochs=2", "sweep.sampler=random", "sweep.pruner=none",
                     "sweep.n_workers=2", "optim.lr=5", "train.threads=1", cwd=project)
    assert extended.returncode == 0, extended.stderr
    assert len(study(project).get_trials()) == 4 and len(children(project)) == 4
    other = gdexp("+sweep=lr", "optim=adam", "sweep.name=lr-adam", "sweep.n_trials=1", "train.epochs=2", cwd=project)
    assert other.returncode == 0 and len(children(project)) == 5, other.stderr


def _start_and_wait_for_trials(project: Path, args: list[str], n: int) -> tuple[subprocess.Popen[str], list]:
    """Start the sweep in its own session; return once `n` trials are mid-way: their MLflow runs exist (with
    `tracking.flush_every_s=0`, from the first epoch's flush on)."""
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-m", "gdexp", *args], cwd=project, env=env, start_new_session=True,
                            preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = project / "sweeps" / "lr" / "study.journal"
    deadline = time.time() + 120
    running: list = []
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            running = study(project).get_trials(states=(TrialState.RUNNING,)) if journal.exists() else []
        except KeyError:  # the journal exists, the study not yet
            continue
        running = [t for t in running if "mlflow_run_id" in t.user_attrs]
        if len(running) >= n:
            break
    assert len(running) >= n, f"{n} trials never ran at once"
    return proc, running


def test_sigint_during_a_trial_then_rerun(project: Path) -> None:
    args = ["+sweep=lr", "sweep.n_trials=2", "gd=stochastic", "train.epochs=12", "sweep.pruner=none",
            "tracking.flush_every_s=0"]
    proc, _running = _start_and_wait_for_trials(project, args, 1)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "run the same command again to resume" in err and "python -m gdexp +sweep=lr sweep.n_trials=2" in err
    assert all(r.info.status != "RUNNING" for r in all_runs(project))
    interrupted = [t for t in study(project).get_trials() if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    killed = [r for r in all_runs(project) if r.info.status == "KILLED"]
    assert {r.info.run_id for r in killed} >= {interrupted[0].user_attrs["mlflow_run_id"]}
    tags = store(project).get_run(interrupted[0].user_attrs["mlflow_run_id"]).data.tags
    assert tags["regime"] == "none" and tags["regime_reason"].startswith("interrupted"), tags
    kept = store(project).get_metric_history(interrupted[0].user_attrs["mlflow_run_id"], "val_loss")
    assert len(kept) >= 1 and [m.step for m in kept] == list(range(1, len(kept) + 1)), \
        "the interrupted run keeps its metrics up to the interrupt"
    rerun = gdexp(*args, cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    done = [t for t in study(project).get_trials() if counted(t)]
    assert len(done) == 2
    (again,) = [t for t in done if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert again.params == interrupted[0].params, "the interrupted trial's point is run again"
    tags = store(project).get_run(interrupted[0].user_attrs["mlflow_run_id"]).data.tags
    assert tags["regime"] == "none" and tags["regime_reason"] == "interrupted: not a regime sample"
    assert all(store(project).get_run(t.user_attrs["mlflow_run_id"]).data.tags["regime"] != "none" for t in done)
    assert len({r.data.tags["mlflow.parentRunId"] for r in children(project)}) == 1
    assert all(r.info.status != "RUNNING" for r in all_runs(project))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_on_two_workers_then_rerun(project: Path, signum: int) -> None:
    """Ctrl-C (or `kill` of the whole group) reaches every worker: each closes its trial, nothing stays RUNNING.
    (Trials of 40 epochs, so that both are mid-loop, not closing, when the signal comes.)"""
    args = ["+sweep=lr", "sweep.n_trials=2", "sweep.n_workers=2", "gd=stochastic", "train.epochs=40",
            "sweep.pruner=none", "tracking.flush_every_s=0"]
    proc, _running = _start_and_wait_for_trials(project, args, 2)
    os.killpg(proc.pid, signum)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err
    runs = {r.info.run_id: r.info.status for r in all_runs(project)}
    assert "RUNNING" not in runs.values()
    trials = study(project).get_trials()
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 2 and len({t.user_attrs["worker"] for t in interrupted}) == 2
    assert all(t.state == TrialState.FAIL and not counted(t) for t in interrupted)
    assert all(runs[t.user_attrs["mlflow_run_id"]] == "KILLED" for t in interrupted)
    assert not [t for t in trials if "error" in t.user_attrs]
    rerun = gdexp(*args[:-1], cwd=project)  # the same trials (a study takes no others), metrics buffered again
    assert rerun.returncode == 0, rerun.stderr
    assert len([t for t in study(project).get_trials() if counted(t)]) == 2
    assert all(r.info.status != "RUNNING" for r in all_runs(project))


def test_a_timeout_stops_the_sweep_says_so_and_the_same_command_goes_on(project: Path) -> None:
    """`sweep.timeout` counts from the first claim, as Optuna's from the start of optimize(), not the set-up (once a
    4 s timeout on a loaded machine ran no trial), and a sweep it stops says so (once silently)."""
    args = ["+sweep=lr", "sweep.n_trials=50", "sweep.timeout=2", "gd=stochastic", "train.epochs=5",
            "sweep.pruner=none"]
    counts = []
    for _ in range(2):
        result = gdexp(*args, cwd=project)
        counts.append(len([t for t in study(project).get_trials() if counted(t)]))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert f"gdexp: sweep.timeout=2 s reached after {counts[-1]} of 50 trials; run the same command again to " \
               "go on" in result.stderr, result.stderr
    assert 0 < counts[0] < counts[1] < 50, counts
    tiny = gdexp(*[a if a != "sweep.timeout=2" else "sweep.timeout=0.001" for a in args], cwd=project)
    assert tiny.returncode == 0 and "sweep.timeout=0.001 s reached" in tiny.stderr, tiny.stderr
    assert len([t for t in study(project).get_trials() if counted(t)]) > counts[1], \
        "however short the timeout, a run of the command makes progress (a trial), as Optuna's optimize() does"


def test_two_workers_exact_total(project: Path, tmp_path: Path) -> None:
    result = gdexp("+sweep=lr", "sweep.n_trials=8", "sweep.n_workers=2", "gd=stochastic", "train.epochs=2",
                   "sweep.pruner=none", cwd=project)
    assert result.returncode == 0, result.stderr
    # The store's file alone is whole once the command ended (its write-ahead log folded in): a copy of it, as a
    # user makes one, holds every run. (Once the runs stayed in mlflow.db-wal, and a copy held none.)
    assert not (project / "mlruns" / "mlflow.db-wal").exists()
    shutil.copy(project / "mlruns" / "mlflow.db", tmp_path / "copy.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] >= 9, "8 trials and their parent"
    trials = study(project).get_trials()
    done = [t for t in trials if counted(t)]
    assert len(done) == 8 and len({t.number for t in done}) == 8
    assert len({t.user_attrs["worker"] for t in done}) == 2, "both processes ran trials"
    assert len(children(project)) == len([t for t in trials if "mlflow_run_id" in t.user_attrs]) >= 8

@pytest.mark.slow  # a fresh interpreter, where MLflow's store modules are not imported yet
@pytest.mark.parametrize(("uri", "driver"), [("sqlite:///mlruns/mlflow.db", "sqlite3"),
                                             ("postgresql://postgres@127.0.0.1/test", "psycopg")])
def test_forked_workers_inherit_the_tracking_stores_imports_and_no_connection(tmp_path: Path, uri: str,
                                                                               driver: str) -> None:
    """Opening a SQL store imports MLflow's ORM and the driver (0.6 s): the workers are forked after that import,
    so each opens only its own connection, and before anything is opened, so none is shared."""
    code = f"""
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from gdexp.config import CONFIG_DIR
from gdexp.sweep import _workers, validate_sweep

def look(*args):
    seen = [m for m in ("mlflow.store.tracking.sqlalchemy_store", {driver!r}) if m in sys.modules]
    Path("seen").write_text(" ".join(seen) + (" opened" if Path("mlruns").exists() else ""))

_workers._worker_main = look
overrides = ["+sweep=lr", "sweep.n_workers=2", "tracking.uri={uri}"]
with initialize_config_dir(str(CONFIG_DIR), version_base=None):
    cfg = compose("config", overrides=overrides)
assert "mlflow.store.tracking.sqlalchemy_store" not in sys.modules
workers = _workers.Workers(cfg, overrides, validate_sweep(cfg, overrides))
workers.start(None, None)
workers.stop(interrupt=False)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=child_env(), check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "seen").read_text() == f"mlflow.store.tracking.sqlalchemy_store {driver}"



def test_diverging_learning_rates_are_recorded_and_the_best_is_sane(make_cfg, project: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["+sweep=lr", "sweep.sampler=grid", "sweep.n_trials=4", "train.epochs=3", "sweep.pruner=none"]
    cfg = make_cfg(*overrides)
    cfg.sweep.params = {"optim.lr": "choice(0.1, 0.3, 100.0, 5000.0)"}
    best = sweep.run(cfg, overrides)
    trials = study(project).get_trials()
    diverged = [t for t in trials if TrialRecord.of(t).outcome.diverged]
    assert len(trials) == 4 and {t.params["optim.lr"] for t in diverged} >= {5000.0}
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert study(project).best_trial.params["optim.lr"] in (0.1, 0.3) and best is not None and best < 1.0
    tags = {r.data.params["optim.lr"]: r.data.tags for r in children(project)}
    assert tags["5000.0"]["diverged"] == "true" and tags["5000.0"]["regime"] == "too_large"
    table = capsys.readouterr().out.split("Best: ")[1].splitlines()[2:8]  # the closing table: header, rule, rows
    assert table[0].split() == ["trial", "val_loss", "diverged", "optim.lr"], table
    assert {row.split()[-1]: "yes" in row.split() for row in table[2:]} == {
        "0.3": False, "0.1": False, "100": True, "5000": True}, table


def test_the_progress_is_shown_the_records_each_claim_read(make_cfg, project: Path) -> None:
    """The progress bar reads no trials of its own (a storage round trip a trial on PostgreSQL): it is shown the
    records each claim read, the last of them with every trial of the study done."""
    overrides = ["+sweep=lr", "sweep.n_trials=3", "train.epochs=1", "sweep.pruner=none"]
    cfg = make_cfg(*overrides)
    s = sweep.Sweep(cfg, overrides)
    s.parent_run_id = parent_run(cfg, s.study)
    shown: list[list[int]] = []
    s.work(on_trial=lambda records: shown.append([r.number for r in records if r.counted]))
    assert shown == [[], [0], [0, 1], [0, 1, 2]]


def test_pruner_stops_a_hopeless_trial(make_cfg, project: Path) -> None:
    overrides = ["+sweep=lr", "sweep.n_trials=6", "train.epochs=8", "sweep.pruner=median"]
    cfg = make_cfg(*overrides)
    s = sweep.Sweep(cfg, overrides)
    s.parent_run_id = parent_run(cfg, s.study)
    for lr in (0.1, 0.2, 0.15, 0.3, 0.12, 1e-4):
        s.study.enqueue_trial({"optim.lr": lr, "model.hidden_size": 64})  # taken as they are, in this order
    s.work()
    trials = s.study.get_trials()
    hopeless = next(t for t in trials if t.params["optim.lr"] == 1e-4)
    assert hopeless.state == TrialState.PRUNED and len(trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials if t is not hopeless)
    relabel(cfg.tracking.uri, s.records(), cfg.regimes)
    tags = store(project).get_run(hopeless.user_attrs["mlflow_run_id"]).data.tags
    stop = max(hopeless.intermediate_values)
    assert stop >= 2, "the pruner waits a third of the epochs"
    assert tags["regime"] == "too_small" and tags["sibling_group"] == "h64-127", tags
    assert f"where the pruner stopped it (epoch {stop})" in tags["regime_reason"]
    assert "still falling" in tags["regime_reason"] or "fell only" in tags["regime_reason"]


@pytest.mark.parametrize("params,message", [
    ({"optim.lrr": "interval(0.1, 1)"}, "sweep.params.optim.lrr"),
    ({"optim.lr": "interval(1, 0.1)"}, "is empty"),
    ({"model.hidden_size": "range(8, 64, 0)"}, r"range\(8, 64, 0\) has a step of 0"),
    ({"optim.lr": "tag(log, interval(0, 1))"}, "lower bound > 0"),
    ({"model.hidden_size": "choice()"}, "sweep.params.model.hidden_size"),
    ({"optim.lr": "interval(-1, 1)"}, r"sweep.params.optim.lr reaches -1.0, .*optim.lr=-1.0 is not allowed"),
    ({"optim.lr": "interval(1e-4, inf)"}, r"sweep.params.optim.lr reaches inf"),
    ({"model.hidden_size": "int(interval(0, 8))"}, r"model.hidden_size=0 is not allowed"),
    ({"gd": "choice(batch, bogus)"}, r"sweep.params.gd reaches 'bogus'.*gd=bogus is not an option of gd"),
])
def test_bad_search_space_fails_before_the_first_trial(make_cfg, project: Path, params, message: str) -> None:
    """Every bound and every choice is composed into a trial's config and validated before the study, the
    parent run or the study's folder exists."""
    cfg = make_cfg("+sweep=lr")
    cfg.sweep.params = params
    with pytest.raises(ConfigError, match=message):
        sweep.run(cfg, ["+sweep=lr"])
    assert all_runs(project) == [] and not (project / "sweeps" / "lr").exists()


@pytest.mark.parametrize("overrides,message", [
    (["data.val_fraction=0"], "sweep.metric=val_loss needs a validation split"),
    (["data=linear", "sweep.metric=val_accuracy", "sweep.direction=maximize"], "not allowed on a regression task"),
    (["data=file", "data.path=nan.npz"], "NaN"),
    (["sweep.metric=val_accuracy"], "sweep.direction=minimize with sweep.metric=val_accuracy searches for the "
                                    "worst run: give sweep.direction=maximize"),  # once it searched silently
    (["sweep.sampler=grid", "sweep.n_trials=7"], r"sweep.n_trials=7 is more than the grid's 6 points .* give "
                                                 "sweep.n_trials=6"),  # once a grid point ran twice, at random
])
def test_bad_data_or_settings_for_a_sweep_fail_before_the_study(make_cfg, project: Path, overrides,
                                                                message: str) -> None:
    np.savez(project / "nan.npz", X=np.array([[np.nan, 1.0], [1.0, 2.0], [0, 0]]), y=np.array([0, 1, 0]))
    cfg = make_cfg("+sweep=lr", *overrides)
    cfg.sweep.params = {"optim.lr": "choice(0.01,0.1,1)", "model.hidden_size": "choice(16,64)"}
    with pytest.raises(ConfigError, match=message):
        sweep.run(cfg, ["+sweep=lr", *overrides])
    assert all_runs(project) == [] and not (project / "sweeps" / "lr").exists()


def test_bad_search_space_on_the_command_line(project: Path) -> None:
    result = gdexp("+sweep=lr", "sweep.sampler=annealing", cwd=project)
    assert result.returncode == 2 and "sweep.sampler" in result.stderr and "tpe" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "line"), [
    (["optim.lr=0.1,-1,0.2"], "gdexp: config error: optim.lr=-1.0 is not allowed: it must be a number > 0.0"),
    (["gd=batch,bogus"], "gdexp: config error: gd=bogus is not an option of gd: choose one of batch, minibatch, "
                         "stochastic"),
    (["+sweep=regimes", "sweep.n_trials=21,22"], "gdexp: config error: sweep.n_trials=22 is more than the grid's 21 "
                                                 "points"),  # a sweep's own settings
    (["+sweep=lr", "sweep.n_trials=2", "optim=sgd,adam"], "gdexp: config error: the jobs +sweep=lr sweep.n_trials=2 "
     "optim=sgd train.epochs=1 and +sweep=lr sweep.n_trials=2 optim=adam train.epochs=1 would add trials of two "
     "configs to study 'lr' (they differ in optim.name, optim.amsgrad, optim.betas, optim.dampening and ")])
# the last: the second would be refused by the study after the first's 30 trials; optim.name, what the user changed,
# comes first (it was cut off behind four of the keys it brought along)
def test_a_multirun_with_one_bad_job_runs_none(project: Path, args: list[str], line: str) -> None:
    """Every job is checked before the first one runs, as a single run is before it trains: one line, exit code
    2, no run, no folder. (Once the first job trained and was recorded, the second was refused and the third
    never ran, leaving sweeps/hydra/multirun/ behind.)"""
    before = sorted(project.rglob("*"))
    result = gdexp("-m", "gdexp", "-m", *args, "train.epochs=1", cwd=project)
    assert result.returncode == 2 and result.stderr.startswith(line) and not result.stdout, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(project.rglob("*")) == before and all_runs(project) == []


def test_a_multirun_whose_first_job_fails_on_its_data_leaves_nothing(project: Path) -> None:
    """A job refused where only the job can see it (a mirror that refuses the download): Hydra's multirun.yaml and
    the job's folder go with it, as a single run's folder does (once multirun.yaml stayed)."""
    before = sorted(project.rglob("*"))
    result = gdexp("-m", "gdexp", "-m", "data=mnist", "data.urls=[http://127.0.0.1:9/]",
                   f"data.cache_dir={project / 'cache'}", "optim.lr=0.1,0.2", cwd=project)
    assert result.returncode == 2 and "could not download" in result.stderr, result.stderr
    assert sorted(project.rglob("*")) == before


def test_hydra_multirun_logs_one_run_per_job(project: Path) -> None:
    result = gdexp("-m", "gdexp", "-m", "optim.lr=0.01,0.1", "gd=batch,minibatch", "train.epochs=2",
                   "train.progress=false", cwd=project)
    assert result.returncode == 0, result.stderr
    runs = all_runs(project)
    assert sorted((r.data.params["optim.lr"], r.data.params["gd.variant"]) for r in runs) == [
        ("0.01", "batch"), ("0.01", "minibatch"), ("0.1", "batch"), ("0.1", "minibatch")]
    assert (project / "sweeps" / "hydra" / "multirun").is_dir()
    assert result.stdout.count("Open the UI") == 1 and "4 runs:" in result.stdout, result.stdout
    assert "Open the UI: python -m gdexp.ui, then http://127.0.0.1:5000/#/experiments/1/runs?" in result.stdout
    summary = result.stdout.split("4 runs:")[1]
    assert "optim.lr=0.1 gd=minibatch" in summary and summary.count("val_loss") == 4


def test_a_multirun_of_sweeps_ends_with_one_table_and_one_hint(project: Path) -> None:
    """Each sweep job prints its own summary; the multirun's end holds a line per sweep and the one UI hint (each
    job printed its own hint, and there was no table)."""
    result = gdexp("-m", "gdexp", "-m", "+sweep=lr", "sweep.name=a,b", "sweep.n_trials=2", "train.epochs=1",
                   cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Open the UI") == 1 and result.stdout.count("Study '") == 2, result.stdout
    table = result.stdout.split("2 sweeps:")[1]
    assert "+sweep=lr sweep.name=a sweep.n_trials=2 train.epochs=1  study 'a': 2 of 2 trials, best val_loss " \
        in table and "study 'b': 2 of 2 trials" in table, table
    assert "Open the UI: python -m gdexp.ui, then http://127.0.0.1:5000/#/experiments/1/runs?" in table


def test_a_trial_that_raises_is_fail_and_failed_and_the_sweep_goes_on(make_cfg, project: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: training raises for one learning rate (as a bug or a full disk would)."""
    from gdexp import train

    real_fit = train.fit

    def fit(model, optimizer, *args, **kwargs):
        if optimizer.lr == 0.3:
            raise RuntimeError("disk full")
        return real_fit(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    overrides = ["+sweep=lr", "sweep.sampler=grid", "sweep.n_trials=3", "train.epochs=2", "sweep.pruner=none"]
    cfg = make_cfg(*overrides)
    cfg.sweep.params = {"optim.lr": "choice(0.1, 0.3, 0.05)"}
    best = sweep.run(cfg, overrides)
    trials = study(project).get_trials()
    (failed,) = [t for t in trials if t.params["optim.lr"] == 0.3]
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"] == "RuntimeError: disk full"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2 and best is not None
    run = store(project).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: disk full"
    assert run.data.tags["optuna.state"] == "FAIL" and run.data.tags["regime"] == "none"
    assert run.data.tags["regime_reason"] == "training failed (RuntimeError: disk full): not a regime sample"


@pytest.mark.parametrize("sampler,pruner", [("tpe", "percentile"), ("random", "successive_halving"),
                                            ("cmaes", "hyperband"), ("qmc", "median"), ("gp", "none")])
def test_every_sampler_and_pruner_by_its_optuna_name(make_cfg, project: Path, sampler: str, pruner: str) -> None:
    import importlib.util

    overrides = ["+sweep=lr", f"sweep.name={sampler}", f"sweep.sampler={sampler}", f"sweep.pruner={pruner}",
                 "sweep.n_trials=4", "train.epochs=2", "tracking.artifacts=false"]
    cfg = make_cfg(*overrides)
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        with pytest.raises(ConfigError, match=r"sweep\.sampler=gp needs PyTorch"):
            sweep.run(cfg, overrides)
        return
    sweep.run(cfg, overrides)
    trials = study(project, sampler).get_trials()
    assert len(trials) == 4 and all(counted(t) for t in trials)
    assert all(t.state != TrialState.FAIL for t in trials), [t.user_attrs.get("error") for t in trials]


def test_param_importances_are_optunas_ped_anova_without_loading_scikit_learn() -> None:
    """The importances plot needs no scikit-learn: importing it cost every sweep 1 s at its end."""
    code = """
import math, sys, optuna
from gdexp.sweep._plots import param_importances
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
def objective(t):  # only the learning rate matters; h is searched but unused
    t.suggest_int("h", 8, 64)
    return math.log10(t.suggest_float("lr", 1e-4, 1, log=True) / 0.01) ** 2
study.optimize(objective, 40)
got = param_importances(study)
want = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
assert got == want and set(got) == {"lr", "h"} and got["lr"] > got["h"], got
assert "sklearn" not in sys.modules
import warnings
flat = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
flat.optimize(lambda t: t.suggest_float("lr", 1e-4, 1, log=True) * 0 + 1e7, 10)  # every trial diverged: one penalty
with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert param_importances(flat) == {}, "equal importances are no figure, and Optuna's warning is not printed"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    assert result.returncode == 0, result.stderr


def test_a_sigkilled_forked_worker_is_noticed_its_trial_failed_and_retried(project: Path) -> None:
    """`kill -9` on one forked worker of a journal sweep: the dead worker (a zombie until the command reaps it)
    is noticed, its trial failed (MLflow run FAILED) and retried with the same parameters, the totals exact."""
    args = ["+sweep=lr", "sweep.n_workers=2", "sweep.n_trials=4", "gd=stochastic", "train.epochs=8",
            "sweep.pruner=none", "tracking.flush_every_s=0"]
    proc, running = _start_and_wait_for_trials(project, args, 2)
    victim = next(t for t in running if not str(t.user_attrs["worker"]).endswith(f":{proc.pid}"))
    os.kill(int(str(victim.user_attrs["worker"]).rpartition(":")[2]), signal.SIGKILL)
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "Traceback" not in err, err
    trials = study(project).get_trials()
    assert len([t for t in trials if counted(t)]) == 4
    assert next(t for t in trials if t.number == victim.number).state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    runs = {r.info.run_id: r for r in all_runs(project)}
    # its MLflow run is made at its end (or its first flush): killed mid-training, it had none, or it is FAILED
    victim_run = next(t for t in trials if t.number == victim.number).user_attrs.get("mlflow_run_id")
    assert victim_run is None or runs[victim_run].info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in runs.values())


def test_a_stale_journal_lock_is_broken_within_its_grace_period(project: Path) -> None:
    """A lock left by a process killed while it held Optuna's journal lock: the rerun breaks it after
    LOCK_GRACE_S and says so, instead of spinning without a word."""
    assert gdexp("+sweep=lr", "sweep.n_trials=1", "train.epochs=1", cwd=project).returncode == 0
    journal = project / "sweeps" / "lr" / "study.journal"
    Path(f"{journal}.lock").symlink_to(journal.resolve())  # as Optuna's JournalFileSymlinkLock leaves it
    began = time.monotonic()
    result = gdexp("+sweep=lr", "sweep.n_trials=2", "train.epochs=1", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Forcibly releasing the lock file" in result.stderr
    assert time.monotonic() - began >= 10 and len([t for t in study(project).get_trials() if counted(t)]) == 2
