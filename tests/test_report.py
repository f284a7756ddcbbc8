"""Regimes on digits, the report and the MLflow UI, on a real store made by a real `regimes` sweep."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import numpy as np
import optuna
import pandas as pd
import pytest

from gdexp.regimes import REGIMES
from gdexp.serving import free_port, wait_until_up
from tests.conftest import all_runs, default_sigint, descendants, gdexp, still_running, store

pytestmark = pytest.mark.slow

LRS = [1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0, 10.0]
FILES = ["runs.csv", "regimes.csv", "regimes.md", "regimes.tex", "regimes.html", "regimes.json", "loss_curves.png",
         "final_loss_vs_lr.png", "cost.png"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    """A folder holding the `regimes` sweep as README shows it (7 learning rates x 3 variants, 20 epochs) and a
    range test."""
    folder = tmp_path_factory.mktemp("swept")
    (folder / "mlruns").mkdir()
    shutil.copy(empty_store, folder / "mlruns" / "mlflow.db")
    result = gdexp("+sweep=regimes", cwd=folder, timeout=900)
    assert result.returncode == 0, result.stderr
    result = gdexp("+sweep=lr_range", "train.epochs=3", "train.progress=false", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def reported(swept: Path) -> Path:
    result = gdexp("-m", "gdexp.report", "regimes", cwd=swept)
    assert result.returncode == 0, result.stderr
    return swept / "sweeps" / "regimes" / "report"


@pytest.fixture(scope="module")
def lr_swept(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    """The main job, `+sweep=lr` with its defaults but 20 of its 30 trials (TPE is seeded, so these are the
    default sweep's first 20: its best trial and pruned trials on both sides of it), then `report lr`."""
    folder = tmp_path_factory.mktemp("lr_swept")
    (folder / "mlruns").mkdir()
    shutil.copy(empty_store, folder / "mlruns" / "mlflow.db")
    result = gdexp("+sweep=lr", "sweep.n_trials=20", cwd=folder, timeout=900)
    assert result.returncode == 0, result.stderr
    result = gdexp("-m", "gdexp.report", "lr", "--no-log", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def children(folder: Path) -> list:
    return [r for r in all_runs(folder) if "mlflow.parentRunId" in r.data.tags]


def test_regimes_sweep_labels_small_large_and_between(swept: Path) -> None:
    runs = children(swept)
    assert len(runs) == 21
    for variant in ("batch", "minibatch", "stochastic"):
        by_lr = {float(r.data.params["optim.lr"]): r.data.tags["regime"] for r in runs
                 if r.data.params["gd.variant"] == variant}
        assert sorted(by_lr) == LRS
        assert by_lr[min(LRS)] == "too_small" and by_lr[max(LRS)] == "too_large", (variant, by_lr)
        assert "just_right" in [by_lr[lr] for lr in LRS[1:-1]], (variant, by_lr)
        ranks = [REGIMES.index(by_lr[lr]) for lr in LRS]
        assert ranks == sorted(ranks), f"{variant}: labels go down as the learning rate goes up: {by_lr}"
        for r in runs:
            assert r.data.tags["regime_reason"] and r.data.tags["diverged"] in ("true", "false")


def test_lr_sweep_labels_are_read_from_training_curves_in_capacity_groups(lr_swept: Path) -> None:
    """The main job, as the issue tried it: every label is backed by its own training curve and placed among
    siblings of like capacity; nothing above a just-right rate of its group is too_small; several runs over a
    range of learning rates are just right; each reason names its evidence with numbers."""
    runs = [r for r in children(lr_swept) if r.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")]
    assert len(runs) == 20
    groups: dict[str, list] = {}
    for r in runs:
        hidden = int(r.data.params["model.hidden_size"])
        group = r.data.tags["sibling_group"]
        low, high = (int(x) for x in group.removeprefix("h").split("-"))
        assert low <= hidden <= high and high < 2 * low, (hidden, group)
        groups.setdefault(group, []).append(r)
    for members in groups.values():
        just = [float(r.data.params["optim.lr"]) for r in members if r.data.tags["regime"] == "just_right"]
        small_above = [r for r in members if r.data.tags["regime"] == "too_small"
                       and just and float(r.data.params["optim.lr"]) > min(just)]
        assert small_above == [], [r.info.run_name for r in small_above]
    just = sorted(float(r.data.params["optim.lr"]) for r in runs if r.data.tags["regime"] == "just_right")
    assert len(just) >= 3 and just[-1] / just[0] >= 2, f"a band, not a point: {just}"
    for r in runs:
        reason = r.data.tags["regime_reason"]
        assert re.search(r"\d", reason) and ("loss" in reason), reason
        if r.data.tags["optuna.state"] == "PRUNED" and r.data.tags["regime"] != "too_large":
            assert "where the pruner stopped it" in reason or "is the lowest of the" in reason or "within 2x" in reason
    assert all(r.info.run_name.startswith(f"lr{float(r.data.params['optim.lr']):.3g}-h") for r in runs)


def test_labels_stay_when_only_the_validation_losses_change(swept: Path) -> None:
    """The real `regimes` sweep's trials, labelled again after every validation loss (at every epoch, and at the
    end) was multiplied by a random factor from 0.5 to 2 -- a validation split of a few hundred images is that
    noisy: not one label moves, because the labels read the training curves."""
    import dataclasses
    import random

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from gdexp.sweep import TrialRecord
    from gdexp.sweep._labels import label_trials

    storage = JournalStorage(JournalFileBackend(str(swept / "sweeps" / "regimes" / "study.journal")))
    records = [TrialRecord.of(t) for t in optuna.load_study(study_name="regimes", storage=storage).get_trials()]
    from gdexp.report._read import _default_rules

    rules = _default_rules()  # conf/regimes/default.yaml, as the sweep labelled with it
    rng = random.Random(7)
    noisy = [dataclasses.replace(
        r, intermediate={e: v * rng.uniform(0.5, 2) for e, v in r.intermediate.items()},
        outcome=dataclasses.replace(r.outcome, final_val_loss=r.outcome.final_val_loss * rng.uniform(0.5, 2)))
        for r in records if r.outcome is not None]
    assert len(noisy) == 21
    assert label_trials(noisy, rules) == label_trials(records, rules)
    stored = {r.info.run_id: r.data.tags["regime"] for r in children(swept)}
    assert {run_id: label for run_id, (label, _, _) in label_trials(records, rules).items()} == stored


def test_lr_report_marks_pruned_rows_and_shows_hidden_size_and_epochs(lr_swept: Path) -> None:
    out = lr_swept / "sweeps" / "lr" / "report"
    runs = pd.read_csv(out / "runs.csv")
    pruned = runs[runs["state"] == "PRUNED"]
    assert len(pruned) and (pruned["epochs_run"] < 15).all() and (runs[runs["state"] == "COMPLETE"]["epochs_run"]
                                                                    == 15).all()
    table = pd.read_csv(out / "regimes.csv", index_col=0)
    assert list(table.columns) == ["hidden size", "minibatch", "minibatch epochs"]
    assert table["minibatch"].str.endswith(", pruned").sum() == len(pruned)
    assert sorted(table["hidden size"]) == sorted(runs["hidden_size"].astype(int))
    assert "lr_hidden_heatmap.png" in {p.name for p in out.iterdir()}


def test_report_files_pivot_and_numbers(swept: Path, reported: Path) -> None:
    assert sorted(p.name for p in reported.iterdir()) == sorted(FILES)
    pivot = pd.read_csv(reported / "regimes.csv", index_col=0)
    assert list(pivot.columns) == ["hidden size", "batch", "batch epochs", "minibatch", "minibatch epochs",
                                   "stochastic", "stochastic epochs"]
    assert list(pivot.index) == LRS  # written as 1.00e-04 ...: read back as numbers
    assert (pivot["hidden size"] == 64).all()
    runs = pd.read_csv(reported / "runs.csv")
    assert len(runs) == 21 and runs["run_id"].is_unique
    written = (reported / "runs.csv").read_text().splitlines()[1].split(",")
    counts = [written[list(runs.columns).index(key)] for key in ("trial", "hidden_size", "hidden_layers", "n_params",
                                                                 "epochs_run")]
    assert all(value.isdigit() for value in counts), counts  # 64, not 64.0
    stored = {r.info.run_id: r for r in children(swept)}
    for row in runs.itertuples():
        run = stored[row.run_id]
        assert row.final_val_loss == run.data.metrics["val_loss"]
        assert row.test_accuracy == run.data.metrics["test_accuracy"]
        assert row.lr == float(run.data.params["optim.lr"]) and row.regime == run.data.tags["regime"]
        assert row.trial == int(run.data.tags["optuna.trial"]) and row.state == run.data.tags["optuna.state"]
    cell = pivot.loc[1e-4, "batch"]
    row = runs[(runs.lr == 1e-4) & (runs.gd_variant == "batch")].iloc[0]
    assert cell.startswith(f"train {row.final_train_loss:.4g}, val {row.final_val_loss:.4g} (")
    assert cell.endswith(row.regime)
    assert (runs["sibling_group"] == "gd=" + runs["gd_variant"] + " h64-127").all()
    assert runs["epochs_to_90pct"].dropna().between(0, 20).all()
    for row in runs.itertuples():  # empty for a run whose validation loss did not fall by 10 % of its start
        curve = [m.value for m in store(swept).get_metric_history(row.run_id, "val_loss")]
        start = stored[row.run_id].data.metrics["initial_val_loss"]
        assert np.isnan(row.epochs_to_90pct) == (start - curve[-1] < 0.1 * start), row.run_name
    assert runs["epochs_to_90pct"].isna().any() and runs["epochs_to_90pct"].notna().any()


def test_a_report_of_fewer_formats_replaces_the_runs_report(project: Path) -> None:
    """A full report, then `--formats md`: the run's report/ holds regimes.md alone, not the new .md beside the
    older .json, .html and figures (of another set of runs, perhaps); only what this report wrote is uploaded,
    not whatever its folder holds. (On a run of its own: a copy of a store still writes to the original's
    artifact folders, which are absolute paths.)"""
    from types import SimpleNamespace

    from gdexp.report import log_to_parent

    client = store(project)
    run = client.create_run(client.create_experiment("gdexp")).info.run_id
    report = SimpleNamespace(uri="sqlite:///mlruns/mlflow.db", parent_id=run)
    out = project / "out"
    out.mkdir()
    for name in ("regimes.md", "regimes.json", "loss_curves.png"):
        (out / name).write_text(name)

    def logged() -> set[str]:
        return {a.path for a in store(project).list_artifacts(run, "report")}

    log_to_parent(report, sorted(out.iterdir()))  # type: ignore[arg-type]
    assert logged() == {"report/regimes.md", "report/regimes.json", "report/loss_curves.png"}
    log_to_parent(report, [out / "regimes.md"])  # type: ignore[arg-type]
    assert logged() == {"report/regimes.md"}


def test_a_report_cut_while_it_uploads_leaves_the_last_one_on_the_run(project: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's report/ was emptied before the upload: an upload that failed (a process killed there) left it
    empty. Now the new files go up first, and only then do the older ones that they did not overwrite go."""
    from types import SimpleNamespace

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from gdexp.report import log_to_parent

    client = store(project)
    run = client.create_run(client.create_experiment("gdexp")).info.run_id
    report = SimpleNamespace(uri="sqlite:///mlruns/mlflow.db", parent_id=run)
    old, new = project / "old", project / "new"
    for folder, names in ((old, ("regimes.md", "regimes.json")), (new, ("regimes.md",))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"{folder.name} {name}")
    log_to_parent(report, sorted(old.iterdir()))  # type: ignore[arg-type]

    def cut(*_args: object, **_kwargs: object) -> None:
        raise OSError("killed mid-upload")

    with monkeypatch.context() as patch:
        patch.setattr(LocalArtifactRepository, "log_artifacts", cut)
        with pytest.raises(OSError):
            log_to_parent(report, [new / "regimes.md"])  # type: ignore[arg-type]
    assert {a.path for a in store(project).list_artifacts(run, "report")} == {"report/regimes.md",
                                                                               "report/regimes.json"}
    log_to_parent(report, [new / "regimes.md"])  # type: ignore[arg-type]
    assert {a.path for a in store(project).list_artifacts(run, "report")} == {"report/regimes.md"}
    fetched = store(project).download_artifacts(run, "report/regimes.md", str(project / "fetched"))
    assert Path(fetched).read_text() == "new regimes.md"


def test_the_range_test_is_no_regime_sample(swept: Path) -> None:
    (run,) = [r for r in all_runs(swept) if r.data.tags.get("gdexp.role") == "lr_range"]
    assert run.info.run_name == "lr_range-sgd-minibatch32-h64"
    assert "regime" not in run.data.tags and "regime_reason" not in run.data.tags


def test_the_range_tests_report_says_what_it_is(swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reported by its run id: it said 'lr 0.1' (the config's optim.lr, which a range test does not use) and 'its
    path on the loss surface', which it has none of; its runs.csv and cost.png's legend said lr 0.1 too."""
    from gdexp import report
    from tests.test_report_landscape import kept_figures

    (run,) = [r for r in all_runs(swept) if r.data.tags.get("gdexp.role") == "lr_range"]
    result = gdexp("-m", "gdexp.report", run.info.run_id, "--no-log", "--out", str(tmp_path / "out"), cwd=swept)
    assert result.returncode == 0, result.stderr
    assert "lr raised every update, a range test" in result.stdout and "lr 0.1" not in result.stdout
    assert "written: runs.csv, cost.png." in result.stdout, result.stdout
    assert pd.read_csv(tmp_path / "out" / "runs.csv")["lr"].isna().all()
    figures = kept_figures(monkeypatch)
    report.write(report.build(run.info.run_id, uri=f"sqlite:///{swept / 'mlruns' / 'mlflow.db'}"), tmp_path / "again")
    (legend,) = {ax.get_legend() for ax in figures["cost.png"].axes} - {None}
    assert [t.get_text().split(":")[0] for t in legend.get_texts()] == [
        "minibatch, lr raised every update, a range test (no regime)"]


def test_the_report_refuses_labels_out_of_order(swept: Path, tmp_path: Path) -> None:
    """A store whose labels break the order (as an older gdexp left them): no table, one line naming the run
    and what to do; the sweep's command, run again on the finished sweep, labels its runs anew."""
    folder = tmp_path / "copy"
    for part in ("mlruns", "sweeps"):  # the study and the store; not a report written before
        shutil.copytree(swept / part, folder / part, ignore=shutil.ignore_patterns("report"))
    (run,) = [r for r in children(folder) if r.data.params["gd.variant"] == "minibatch"
              and float(r.data.params["optim.lr"]) == 10.0]
    store(folder).set_tag(run.info.run_id, "regime", "too_small")
    result = gdexp("-m", "gdexp.report", "regimes", "--no-log", cwd=folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"trial {run.data.tags['optuna.trial']} (run {run.info.run_id}) (lr 10, a larger step) is too_small" in \
        result.stderr
    assert "Run the sweep's command again" in result.stderr
    assert not (folder / "sweeps" / "regimes" / "report").exists()
    again = gdexp("+sweep=regimes", cwd=folder)
    assert again.returncode == 0 and "21 of 21 trials" in again.stdout, again.stderr
    assert store(folder).get_run(run.info.run_id).data.tags["regime"] == "too_large"
    assert gdexp("-m", "gdexp.report", "regimes", "--no-log", cwd=folder).returncode == 0


def test_report_text_formats(reported: Path) -> None:
    tex = (reported / "regimes.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{", "\\begin{tabular}"):
        assert rule in tex
    assert "just\\_right" in tex and "too\\_small" in tex and " just_right" not in tex and tex.isascii()
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 4  # regimes, bands, recommended, best runs
    md = (reported / "regimes.md").read_text()
    assert "| learning rate" in md and "> Sweep 'regimes'" in md and "21 runs with a regime" in md
    assert "Learning-rate range test" in md, "the range test's suggestion sits beside the sweep's"
    html = (reported / "regimes.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<table>") == 4
    doc = json.loads((reported / "regimes.json").read_text())
    assert len(doc["runs"]) == 21 and all(isinstance(r["lr"], float) for r in doc["runs"])
    assert {r["gd_variant"] for r in doc["recommended"]} == {"batch", "minibatch", "stochastic"}
    assert all(isinstance(r["recommended_lr"], float) for r in doc["recommended"])
    assert "### Recommended learning rate per GD variant" in md and "### Just-right band" in md
    assert doc["range_test"]["suggested_lr"] > 0


def test_report_is_logged_to_the_parent_run(swept: Path, reported: Path) -> None:
    client = store(swept)
    (parent,) = [r for r in all_runs(swept) if r.data.tags.get("gdexp.role") == "sweep"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {f"report/{name}" for name in FILES}


@pytest.mark.parametrize("args,message", [
    (["nosuch"], "no sweep named 'nosuch'"),
    (["lr_range"], "a range test (+sweep=lr_range) is one run, reported by its id: the latest is "),
    (["regimes", "--experiment", "other"], "no experiment 'other'"),
    (["regimes", "--formats", "pdf"], "--formats"),
    (["regimes", "--bogus"], "unrecognized arguments: --bogus"),
    (["regimes", "--fraction", "abc"], "--fraction: invalid float value"),
    (["regimes", "--uri", "ftp://x"], "--uri=ftp://x cannot be read: it is not a store MLflow tracks to"),
    (["regimes", "--uri", "file:///tmp/mlruns"], "MLflow keeps its file store in maintenance mode and refuses it"),
    (["regimes", "--uri", "http://127.0.0.1:1"], "--uri=http://127.0.0.1:1 cannot be read: nothing answers there"),
    (["regimes", "--uri", "sqlite:///empty.db"], "is not an MLflow store"),
    (["regimes", "--uri", "sqlite:///nowhere/mlflow.db"], "no MLflow store at"),
    (["regimes", "--out", "afile"], "--out=afile cannot be used"),
    (["regimes", "--out", "/proc/gdexp-report"], "--out=/proc/gdexp-report cannot be used"),
])
def test_report_bad_input_is_one_line_and_leaves_nothing(swept: Path, args: list[str], message: str) -> None:
    (swept / "empty.db").write_bytes(b"")
    (swept / "afile").write_text("a file, not a folder")

    def files() -> list[Path]:  # SQLite's own -wal and -shm come and go with every process's connections
        return sorted(p.relative_to(swept) for p in swept.rglob("*") if not p.name.endswith(("-wal", "-shm")))

    before = files()
    result = gdexp("-m", "gdexp.report", *args, "--no-log", cwd=swept)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert (swept / "empty.db").read_bytes() == b"", "MLflow made no tables in a file that is not its store"
    assert files() == before


@pytest.mark.parametrize(("name", "end"), [
    ("ls", "the experiment's sweeps: regimes"),  # the range-test hint is for `report lr_range`, not for any name
    ("regime", "the experiment's sweeps: regimes (did you mean regimes?)"),
])
def test_an_unknown_sweep_name_lists_the_sweeps(swept: Path, name: str, end: str) -> None:
    result = gdexp("-m", "gdexp.report", name, "--no-log", cwd=swept)
    assert result.returncode == 2 and result.stderr.strip().endswith(end), result.stderr


def test_report_on_an_empty_sweep_and_an_empty_folder(project: Path) -> None:
    client = store(project)
    experiment = client.create_experiment("gdexp")
    client.create_run(experiment, tags={"gdexp.role": "sweep", "gdexp.sweep": "empty"})
    result = gdexp("-m", "gdexp.report", "empty", cwd=project)
    assert result.returncode == 2 and "has no runs yet" in result.stderr and "Traceback" not in result.stderr
    result = gdexp("-m", "gdexp.report", "lr", "--uri", f"sqlite:///{project / 'none' / 'mlflow.db'}", cwd=project)
    assert result.returncode == 2 and "no MLflow store" in result.stderr


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines a child prints, as they come (a reader thread), so a test can wait for one without a race."""
    found: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [found.put(line) for line in stream], daemon=True).start()
    return found


def test_ui_opens_on_the_regime_comparison_in_a_real_browser(swept: Path, tmp_path: Path) -> None:
    """`python -m gdexp.ui` prints the address of the shared view; Debian's chromium, headless, opens it and the
    runs table shows the trials grouped by regime, with the columns that back a label. (The screenshot is kept
    in the test's temporary folder for a person to look at.)"""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for the UI test (.ci/run installs it): apt-get install -y chromium"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gdexp.ui", "--port", str(port)], cwd=swept,
                            preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server: set[int] = set()
    printed = lines_of(proc.stdout)  # type: ignore[arg-type]
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, timeout=90)
        server = descendants(proc.pid)  # mlflow server, uvicorn, its job consumers
        line = ""
        while not line.startswith("The trials by regime"):
            line = printed.get(timeout=90)  # a bound on a wait, not a timing assertion
        address = line.split(": ", 1)[1].strip()
        assert address.startswith(f"{url}/#/experiments/") and "viewStateShareKey=gdexp:all-sweeps" in address
        browse = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=2400,1300", "--virtual-time-budget=15000"]
        dom = subprocess.run([*browse, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", address],
                             capture_output=True, text=True, timeout=180, check=False).stdout
        shot = tmp_path / "ui_regimes.png"
        subprocess.run([*browse, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", address],
                       capture_output=True, timeout=180, check=False)
        print(f"screenshot of the regime comparison: {shot}")
        for regime in REGIMES:
            assert f"Group: {regime}" in dom, f"no {regime} group in the rendered page"
        for column in ("optim.lr", "model.hidden_size", "gd.variant", "val_loss", "test_accuracy", "regime_reason",
                       "sibling_group"):
            assert column in dom, column
        assert "lr10-h64-stochastic-sgd" in dom, "the trials show, not one collapsed parent"
        assert shot.stat().st_size > 50_000
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0 and len(server) >= 2
    assert not still_running(server), "Ctrl-C on the UI stops every process of its server"
    with socket.socket() as probe:  # the port is free again: nothing of the server still listens
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections' TIME_WAIT do not count
        probe.bind(("127.0.0.1", port))


def test_a_runs_report_without_its_path_says_how_to_get_one(project: Path) -> None:
    """A single run that recorded no trajectory: its report is runs.csv and cost.png, and it said nothing of the
    loss_landscape.png a reader of README looks for."""
    assert gdexp("train.epochs=2", "train.progress=false", cwd=project).returncode == 0
    (run,) = all_runs(project)
    result = gdexp("-m", "gdexp.report", run.info.run_id, "--no-log", cwd=project)
    assert result.returncode == 0, result.stderr
    assert ("written: runs.csv, cost.png (its path on the loss surface, loss_landscape.png, needs a run with "
            "diagnostics.trajectory=true).") in result.stdout, result.stdout
