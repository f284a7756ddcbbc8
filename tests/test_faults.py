"""Bad input and broken state: each either works or fails with a clear message, and nothing stored is lost.

Property-based tests (hypothesis) push random config values and random small data sets through
validation and training; the others break a study journal and run two sweeps into one store at once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from omegaconf import OmegaConf

from gdexp import sweep, train
from gdexp.config import CONFIG_DIR, ConfigError, validate
from gdexp.config._errors import explain
from tests.conftest import all_runs, child_env, counted, gdexp, store

# derandomize: CI explores the same examples on every machine; a new failure shows up in development, not at random
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1000, 1000),
                   st.sampled_from([10**6, 10**9, -(10**9)]),
                   st.text(max_size=8), st.booleans(), st.none())
keys = st.sampled_from(["optim.lr", "optim.momentum", "optim.weight_decay", "gd.batch_size", "model.hidden_size",
                        "model.hidden_layers", "model.activation", "model.init", "train.epochs", "train.dtype",
                        "train.divergence_factor", "data.val_fraction", "data.task", "data.standardize"])


def attempt(cfg) -> train.History | None:
    """Validate then train; None when refused with a ConfigError (whose message names a key)."""
    try:
        validate(cfg)
        return train.run(cfg, [])
    except ConfigError as exc:
        assert "=" in str(exc) or "data." in str(exc), str(exc)
        return None


def override(key: str, value) -> str:
    """`key=value` as a user would type it (strings quoted, so that Hydra reads them as strings)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, str):
        return f"{key}='{value}'"
    return f"{key}={value!r}"


@PROPERTY
@given(changes=st.dictionaries(keys, values, min_size=1, max_size=3))
def test_random_config_values_train_or_are_refused(make_cfg, changes: dict) -> None:
    """Random values through the real path (Hydra's composition against the schema, then `validate`): each
    either trains to a result or is refused with one `ConfigError` that names a changed key."""
    changes = {k: v for k, v in changes.items()
               if not (k == "train.epochs" and isinstance(v, int) and v > 1000)}  # a long run, not bad input
    args = [override(k, v) for k, v in changes.items()]
    try:
        cfg = make_cfg("data=blobs", "data.n=60", "train.epochs=2", "tracking.enabled=false", *args)
        validate(cfg)
    except Exception as exc:
        refused = exc if isinstance(exc, ConfigError) else explain(exc, CONFIG_DIR)
        assert refused is not None, f"{type(exc).__name__}: {exc}"
        assert any(key in str(refused) for key in changes), str(refused)
        return
    history = train.run(cfg, [])  # accepted: the run goes to its end, or stops as a diverged result
    assert len(history.epochs) == cfg.train.epochs or history.diverged
    assert history.diverged or np.all(np.isfinite(history.curve("train_loss")))


special = st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, np.nan, np.inf, -np.inf, 1e-30])
cells = st.one_of(st.floats(-1e3, 1e3, width=32), special)


@PROPERTY
@given(X=arrays(np.float64, st.tuples(st.integers(0, 12), st.integers(1, 3)), elements=cells),
       labels=st.lists(st.integers(-2, 4), min_size=0, max_size=14),
       task=st.sampled_from(["auto", "multiclass", "binary", "regression"]))
def test_random_small_data_sets_train_or_are_refused(make_cfg, project: Path, X: np.ndarray, labels: list,
                                                     task: str) -> None:
    y = np.array(labels[: len(X)] + [0] * max(0, len(X) - len(labels)), dtype=float)
    np.savez(project / "d.npz", X=X, y=y)
    cfg = make_cfg("data=file", "data.path=d.npz", f"data.task={task}", "train.epochs=2", "tracking.enabled=false")
    history = attempt(cfg)
    if history is not None:
        assert history.diverged or np.all(np.isfinite(history.curve("train_loss")))


@pytest.mark.slow  # starts `python -m gdexp` three times
def test_bad_data_on_the_command_line_leaves_no_run(project: Path) -> None:
    np.savez(project / "one.npz", X=np.ones((1, 2)), y=np.zeros(1))
    (project / "notazip.npz").write_bytes(b"this is not a zip file")
    (project / "folder.csv").mkdir()
    for path, words in (("one.npz", "at least 2 samples"), ("notazip.npz", "cannot be read"),
                        ("folder.csv", "no such file")):
        result = gdexp("data=file", f"data.path={path}", cwd=project)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert all_runs(project) == []


def _finishes_with_three(make_cfg, project: Path, overrides: list[str]) -> None:
    """The same command, run again, completes the study's 3 trials."""
    result = gdexp(*overrides, "sweep.n_trials=3", cwd=project)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="lr", storage=sweep.open_storage(make_cfg(*overrides)).optuna)
    assert len([t for t in study.get_trials() if counted(t)]) == 3


@pytest.mark.slow  # a real sweep, then `python -m gdexp` three times
def test_corrupt_journal_is_refused_and_left_as_it_was(make_cfg, project: Path) -> None:
    overrides = ["+sweep=lr", "sweep.n_trials=2", "train.epochs=1"]
    sweep.run(make_cfg(*overrides), overrides)
    journal = project / "sweeps" / "lr" / "study.journal"
    good = journal.read_bytes()
    lines = good.splitlines(keepends=True)
    broken = b"".join(lines[:3]) + b'{"op_code": 5, "worker_id": "x", "trial_id": \n' + b"".join(lines[3:])
    journal.write_bytes(broken)
    result = gdexp(*overrides, "sweep.n_trials=3", cwd=project)
    assert result.returncode == 2 and "study journal" in result.stderr and "Traceback" not in result.stderr
    assert journal.read_bytes() == broken, "the journal is not touched"
    journal.write_bytes(good[: len(good) - 7])  # truncated in its last record
    result = gdexp(*overrides, "sweep.n_trials=3", cwd=project)
    assert result.returncode == 2 and "cut-off record" in result.stderr and "Traceback" not in result.stderr
    assert journal.read_bytes() == good[: len(good) - 7]
    journal.write_bytes(good)  # as the message says: with the incomplete line gone, the study goes on
    _finishes_with_three(make_cfg, project, overrides)


@pytest.mark.slow
def test_a_journal_with_garbage_after_a_cut_record_is_refused_untouched_and_the_printed_step_keeps_the_rest(
        make_cfg, project: Path) -> None:
    """Optuna alone would skip the garbage line and append after it, making the file unreadable. (The study is
    made by a command that ended: the trial whose last record is cut looks RUNNING, and its process is gone.)"""
    overrides = ["+sweep=lr", "sweep.n_trials=2", "train.epochs=1"]
    assert gdexp(*overrides, cwd=project).returncode == 0
    folder = project / "sweeps" / "lr"
    journal = folder / "study.journal"
    good = journal.read_bytes()
    last = good.rstrip(b"\n").rfind(b"\n") + 1  # where the last record starts
    broken = good[: len(good) - 7] + b"\x00#garbage]]\n"  # the last record cut, then garbage and a newline
    journal.write_bytes(broken)
    before = (sorted(p.name for p in folder.iterdir()), journal.stat().st_mtime_ns)
    result = gdexp(*overrides, "sweep.n_trials=3", cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert journal.read_bytes() == broken and (sorted(p.name for p in folder.iterdir()), journal.stat().st_mtime_ns) \
        == before, "nothing written: not the journal, not a lock, not a file beside it"
    step = re.search(r"run: (.*?)   then", result.stderr)
    assert step is not None and f"truncate -s {last} " in step.group(1), result.stderr
    subprocess.run(step.group(1), shell=True, cwd=project, check=True)  # the step, as printed
    assert journal.read_bytes() == good[:last] and (folder / "study.journal.broken").read_bytes() == broken
    _finishes_with_three(make_cfg, project, overrides)


@pytest.mark.slow  # two sweep processes at once
def test_two_sweeps_at_once_into_one_store_and_one_storage(project: Path) -> None:
    env = child_env()
    shared = project / "sweeps" / "shared.journal"
    shared.parent.mkdir(parents=True)
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.name={name}", f"sweep.storage={shared}",
         "sweep.n_trials=4", "train.epochs=2", *extra], cwd=project, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE) for name, extra in (("a", []), ("b", ["gd=batch"]))}
    for p in procs.values():
        assert p.wait(timeout=300) == 0, p.stderr.read().decode() if p.stderr else ""
    storage = sweep.open_storage(OmegaConf.create({"sweep": {"storage": str(shared), "name": "a"}})).optuna
    runs = all_runs(project)
    for name in ("a", "b"):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials()
        assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
        (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep" and r.data.tags["gdexp.sweep"] == name]
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {r.info.run_id for r in kids} == {t.user_attrs["mlflow_run_id"] for t in trials}
        assert {r.data.tags["optuna.study"] for r in kids} == {name}
        assert {r.data.params["gd.variant"] for r in kids} == {"batch" if name == "b" else "minibatch"}


@pytest.mark.slow
def test_two_commands_joining_one_study_at_once_never_suggest_the_same_point(project: Path) -> None:
    """Both start on an empty journal at the same moment: both see no trials, and one seed per process would
    make their suggestions (and so their results) the same."""
    # trials of ~1 s (stochastic GD): on a busy machine one command's start-up can lag the other's by seconds,
    # and with shorter trials the first finished the study alone (seen in CI)
    args = [sys.executable, "-m", "gdexp", "+sweep=lr", "sweep.n_trials=12", "gd=stochastic", "train.epochs=15",
            "sweep.pruner=none"]
    procs = [subprocess.Popen(args, cwd=project, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    storage = sweep.open_storage(OmegaConf.create({"sweep": {"storage": None, "name": "lr"}})).optuna
    trials = [t for t in optuna.load_study(study_name="lr", storage=storage).get_trials() if counted(t)]
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both commands ran trials of the one study"
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(trials) >= 12 and len(set(points)) == len(points), points


def test_one_process_suggests_the_same_points_for_the_same_config_and_seed(make_cfg) -> None:
    """Per-trial seeds keep a sweep reproducible: two studies of one config, one after the other, match."""
    studies = []
    for name in ("first", "second"):
        overrides = ["+sweep=lr", f"sweep.name={name}", "sweep.n_trials=4", "train.epochs=1",
                     "tracking.artifacts=false"]
        sweep.run(make_cfg(*overrides), overrides)
        storage = sweep.open_storage(OmegaConf.create({"sweep": {"storage": None, "name": name}})).optuna
        studies.append([t.params for t in optuna.load_study(study_name=name, storage=storage).get_trials()])
    assert studies[0] == studies[1] and len({tuple(p.values()) for p in studies[0]}) == 4


@pytest.mark.slow  # sweeps, and `python -m gdexp` twice
def test_after_the_printed_journal_repair_mlflow_agrees_with_the_study(project: Path) -> None:
    """A journal cut back to its whole records (what the repair command of a broken journal does) forgets the last
    trials; their MLflow runs must not stay FINISHED and COMPLETE beside the study: the next start ends them FAILED
    and tags them `optuna.state=GONE`, the study refills its total, and the report counts trials, not runs."""
    from tests.test_kills import consistent, journal

    args = ["+sweep=lr", "sweep.n_trials=4", "train.epochs=1", "sweep.pruner=none", "tracking.artifacts=false"]
    assert gdexp(*args, cwd=project).returncode == 0
    path = project / "sweeps" / "lr" / "study.journal"
    lines = path.read_bytes().splitlines(keepends=True)
    created = [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]  # Optuna's CREATE_TRIAL
    path.write_bytes(b"".join(lines[:created[2]]))  # trials 2 and 3, and all that came after, are gone
    again = gdexp(*args, cwd=project)
    assert again.returncode == 0, again.stderr
    runs = all_runs(project)
    records = consistent(journal(project), runs, 4)
    gone = [r for r in runs if r.data.tags.get("optuna.state") == "GONE"]
    assert len(gone) == 2 and all(r.info.status == "FAILED" and r.data.tags["regime"] == "none" for r in gone)
    assert len({r.run_id for r in records}) == 4
    report = gdexp("-m", "gdexp.report", "lr", "--no-log", cwd=project)
    assert report.returncode == 0 and "4 runs with a regime" in report.stdout, report.stdout + report.stderr


@pytest.mark.slow
def test_a_finished_study_whose_parent_was_left_killed_gets_it_finished_with_its_plots(project: Path) -> None:
    """Ctrl-C to the command alone, late: its workers finished the study, its parent run ended KILLED. The same
    command again finds the study done and finishes the parent, plots included."""
    args = ["+sweep=lr", "sweep.n_trials=3", "train.epochs=1", "tracking.artifacts=false"]
    assert gdexp(*args, cwd=project).returncode == 0
    client = store(project)
    (parent,) = [r for r in all_runs(project) if r.data.tags.get("gdexp.role") == "sweep"]
    client.set_terminated(parent.info.run_id, "KILLED")
    again = gdexp(*args, cwd=project)
    assert again.returncode == 0 and "3 of 3 trials" in again.stdout, again.stderr
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert "optimization_history.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_a_trials_run_deleted_in_mlflow_is_left_deleted_and_the_sweep_goes_on(project: Path) -> None:
    """A user deletes one trial's run in MLflow (`mlflow runs delete`), then extends the sweep: the new trials run,
    the labels are written on every other run, the deleted one stays deleted, untouched. (Once the relabelling
    wrote to it, MLflow refused, and the command stopped as if the store had failed, its parent FAILED.)"""
    args = ["+sweep=lr", "sweep.n_trials=3", "train.epochs=2", "tracking.artifacts=false"]
    assert gdexp(*args, cwd=project).returncode == 0
    client = store(project)
    (gone, *_) = [r for r in all_runs(project) if "mlflow.parentRunId" in r.data.tags]
    client.delete_run(gone.info.run_id)
    again = gdexp(*args[:1], "sweep.n_trials=4", *args[2:], cwd=project)
    assert again.returncode == 0 and "4 of 4 trials" in again.stdout, again.stderr
    assert client.get_run(gone.info.run_id).data.tags == gone.data.tags
    assert client.get_run(gone.info.run_id).info.lifecycle_stage == "deleted"
    runs = all_runs(project)
    assert [r.info.status for r in runs if r.data.tags.get("gdexp.role") == "sweep"] == ["FINISHED"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3 and all(r.data.tags["regime"] in ("too_small", "just_right", "too_large")
                                      for r in children)
    # the parent run deleted: one line naming it and how to restore it (once: 'the MLflow store ... failed')
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    client.delete_run(parent.info.run_id)
    refused = gdexp(*args[:1], "sweep.n_trials=5", *args[2:], cwd=project)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].endswith(
        f"was deleted in MLflow: restore it (mlflow runs restore --run-id {parent.info.run_id}), or give the sweep a "
        "new sweep.name"), refused.stderr
    client.restore_run(parent.info.run_id)
    assert "5 of 5 trials" in gdexp(*args[:1], "sweep.n_trials=5", *args[2:], cwd=project).stdout


@pytest.mark.slow
def test_a_parent_whose_plots_could_not_be_written_is_failed_and_the_rerun_draws_them(
        project: Path, make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's end could not write the study's plots (a full disk): the parent run ends FAILED, not FINISHED
    without them, so that the same command again finds it unfinished and ends it FINISHED, plots and all."""
    from gdexp.sweep import _parent
    from tests.test_kills import journal

    args = ["+sweep=lr", "sweep.n_trials=3", "train.epochs=1", "tracking.artifacts=false"]
    assert gdexp(*args, cwd=project).returncode == 0
    client = store(project)
    (parent,) = [r for r in all_runs(project) if r.data.tags.get("gdexp.role") == "sweep"]
    run_id = parent.info.run_id
    client.update_run(run_id, status="RUNNING")  # its end is done again here, in-process, with the disk full

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_parent, "study_plots", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _parent.finish_parent(make_cfg(*args), journal(project), run_id, "FINISHED")
    assert client.get_run(run_id).info.status == "FAILED"
    again = gdexp(*args, cwd=project)
    assert again.returncode == 0 and "3 of 3 trials" in again.stdout, again.stderr
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "optimization_history.png" in {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.slow
def test_more_workers_than_trials_make_no_surplus_trial(project: Path) -> None:
    result = gdexp("+sweep=lr", "sweep.n_trials=2", "sweep.n_workers=8", "train.epochs=1", cwd=project)
    assert result.returncode == 0, result.stderr
    from tests.test_kills import journal

    trials = journal(project).get_trials()
    assert len(trials) == 2 and all(counted(t) for t in trials), [(t.number, t.state) for t in trials]


def test_an_unexpected_error_prints_no_secret_and_no_hydra_line(project: Path, installed: None, capsys,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here: an error injected where the sweep starts) ends the command with its traceback and one line,
    every password masked, and none of Hydra's own "Error executing job with overrides" line."""
    from gdexp import __main__ as command

    def boom(cfg, overrides):
        raise RuntimeError("cannot reach postgresql://alice:s3cret-pw@db.example/gdexp")

    monkeypatch.setattr("gdexp.sweep.run", boom)
    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    monkeypatch.setattr("sys.argv", ["gdexp", "+sweep=lr", "sweep.storage=postgresql://alice:s3cret-pw@db.example/g"])
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 1 and "s3cret-pw" not in out + err and "Error executing job" not in err, err
    assert err.strip().splitlines()[-1].startswith("gdexp: internal error") and "alice:***@" in err


@pytest.mark.slow  # a mount namespace of its own
def test_a_read_only_working_folder_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    script = 'mount -t tmpfs -o ro none "$0" && cd "$0" && exec "$1" -m gdexp train.epochs=1'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), sys.executable], env=child_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Read-only file system" in lines[0], result.stderr
