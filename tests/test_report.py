"""Regimes on digits, the report and the MLflow UI, on a real store made by a real `regimes` sweep."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pytest

from gdexp.regimes import REGIMES
from gdexp.ui import free_port, wait_until_up
from tests.conftest import all_runs, default_sigint, descendants, gdexp, still_running, store

pytestmark = pytest.mark.slow

LRS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
FILES = ["runs.csv", "regimes.csv", "regimes.md", "regimes.tex", "regimes.html", "regimes.json", "loss_curves.png",
         "final_loss_vs_lr.png", "cost.png"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    """A folder holding the `regimes` sweep (6 learning rates x 3 variants, 10 epochs) and a range test."""
    folder = tmp_path_factory.mktemp("swept")
    (folder / "mlruns").mkdir()
    shutil.copy(empty_store, folder / "mlruns" / "mlflow.db")
    result = gdexp("+sweep=regimes", "train.epochs=10", cwd=folder, timeout=900)
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
    assert len(runs) == 18
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


def test_lr_sweep_labels_pruned_trials_against_their_siblings(lr_swept: Path) -> None:
    """The issue's report: pruned trials at learning rates far above the best kept the label of their 2-epoch
    curve (too_small). Every labelled run above the best run's learning rate must not be too_small; a pruned
    run's reason says where it stopped and with what it was compared."""
    runs = [r for r in children(lr_swept) if r.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")]
    assert len(runs) == 20
    finished = [r for r in runs if r.data.tags["optuna.state"] == "COMPLETE"]
    best = min(finished, key=lambda r: r.data.metrics["val_loss"])
    best_lr = float(best.data.params["optim.lr"])
    assert best.data.tags["regime"] == "just_right"
    above = [r for r in runs if float(r.data.params["optim.lr"]) > best_lr]
    assert [r.data.tags["regime"] for r in above if r.data.tags["regime"] == "too_small"] == []
    pruned = [r for r in runs if r.data.tags["optuna.state"] == "PRUNED"]
    sides = {float(r.data.params["optim.lr"]) > best_lr for r in pruned}
    assert sides == {True, False}, "the sweep holds pruned trials on both sides of the best (else shrink less)"
    compared = 0
    for r in pruned:
        epochs = int(r.data.metrics["epochs_run"])
        reason = r.data.tags["regime_reason"]
        if r.data.tags["regime"] == "too_large" and reason.startswith("the loss "):
            continue  # its own curve overshot before the pruner stopped it: too_large by itself (regimes.overshoot)
        compared += 1
        assert reason.startswith(f"pruned at epoch {epochs}: its val_loss there, "), reason
        assert f"the best sibling's at epoch {epochs}, " in reason and "(trial " in reason, reason
        side = "too_large" if float(r.data.params["optim.lr"]) > best_lr else "too_small"
        assert r.data.tags["regime"] in (side, "just_right"), (r.data.params["optim.lr"], reason)
    assert compared >= 2, "pruned runs placed among their siblings"
    assert all(r.info.run_name.startswith(f"lr{float(r.data.params['optim.lr']):.3g}-h") for r in runs)


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
    assert len(runs) == 18 and runs["run_id"].is_unique
    stored = {r.info.run_id: r for r in children(swept)}
    for row in runs.itertuples():
        run = stored[row.run_id]
        assert row.final_val_loss == run.data.metrics["val_loss"]
        assert row.test_accuracy == run.data.metrics["test_accuracy"]
        assert row.lr == float(run.data.params["optim.lr"]) and row.regime == run.data.tags["regime"]
        assert row.trial == int(run.data.tags["optuna.trial"]) and row.state == run.data.tags["optuna.state"]
    cell = pivot.loc[1e-4, "batch"]
    row = runs[(runs.lr == 1e-4) & (runs.gd_variant == "batch")].iloc[0]
    assert cell.startswith(f"{row.final_val_loss:.4g} (") and cell.endswith(row.regime)
    assert runs["epochs_to_90pct"].dropna().between(0, 10).all()
    for row in runs.itertuples():  # empty for a run whose validation loss did not fall by 10 % of its start
        curve = [m.value for m in store(swept).get_metric_history(row.run_id, "val_loss")]
        start = stored[row.run_id].data.metrics["initial_val_loss"]
        assert np.isnan(row.epochs_to_90pct) == (start - curve[-1] < 0.1 * start), row.run_name
    assert runs["epochs_to_90pct"].isna().any() and runs["epochs_to_90pct"].notna().any()


def test_the_range_test_is_no_regime_sample(swept: Path) -> None:
    (run,) = [r for r in all_runs(swept) if r.data.tags.get("gdexp.role") == "lr_range"]
    assert run.info.run_name == "lr_range-sgd-minibatch32-h64"
    assert "regime" not in run.data.tags and "regime_reason" not in run.data.tags


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
    assert f"trial {run.data.tags['optuna.trial']} (run {run.info.run_id}) (lr 10) is too_small" in result.stderr
    assert "Run the sweep's command again" in result.stderr
    assert not (folder / "sweeps" / "regimes" / "report").exists()
    again = gdexp("+sweep=regimes", "train.epochs=10", cwd=folder)
    assert again.returncode == 0 and "18 of 18 trials" in again.stdout, again.stderr
    assert store(folder).get_run(run.info.run_id).data.tags["regime"] == "too_large"
    assert gdexp("-m", "gdexp.report", "regimes", "--no-log", cwd=folder).returncode == 0


def test_report_text_formats(reported: Path) -> None:
    tex = (reported / "regimes.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{", "\\begin{tabular}"):
        assert rule in tex
    assert "just\\_right" in tex and "too\\_small" in tex and " just_right" not in tex
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 3  # regimes, best runs, recommended
    md = (reported / "regimes.md").read_text()
    assert "| learning rate" in md and "> Sweep 'regimes'" in md and "18 runs with a regime" in md
    assert "Learning-rate range test" in md, "the range test's suggestion sits beside the sweep's"
    html = (reported / "regimes.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<table>") == 3  # regimes, best runs, recommended
    doc = json.loads((reported / "regimes.json").read_text())
    assert len(doc["regimes"]) == 6 and {b["GD variant"] for b in doc["best_per_variant"]} == {
        "batch", "minibatch", "stochastic"} == {r["GD variant"] for r in doc["recommended"]}
    assert "### Recommended learning rate per GD variant" in md
    assert doc["range_test"]["suggested_lr"] > 0


def test_report_is_logged_to_the_parent_run(swept: Path, reported: Path) -> None:
    client = store(swept)
    (parent,) = [r for r in all_runs(swept) if r.data.tags.get("gdexp.role") == "sweep"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {f"report/{name}" for name in FILES}


@pytest.mark.parametrize("args,message", [
    (["nosuch"], "no sweep named 'nosuch'"),
    (["regimes", "--experiment", "other"], "no experiment 'other'"),
    (["regimes", "--formats", "pdf"], "--formats"),
])
def test_report_bad_names_give_a_message(swept: Path, args: list[str], message: str) -> None:
    result = gdexp("-m", "gdexp.report", *args, "--no-log", cwd=swept)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


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


def test_ui_serves_the_sweep_through_the_rest_api(swept: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gdexp.ui", "--port", str(port)], cwd=swept,
                            preexec_fn=default_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server: set[int] = set()
    printed = lines_of(proc.stdout)  # type: ignore[arg-type]
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, timeout=90)
        server = descendants(proc.pid)  # mlflow server, uvicorn, its job consumers

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())

        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=gdexp") as answer:
            experiment = json.loads(answer.read())["experiment"]
        experiment_id = experiment["experiment_id"]
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"], \
            "marked as model training, MLflow's UI opens the runs table rather than its GenAI overview"
        line = ""
        while not line.startswith("Runs of experiment"):
            line = printed.get(timeout=90)  # a bound on a wait, not a timing assertion
        assert line == f"Runs of experiment 'gdexp': {url}/#/experiments/{experiment_id}/runs\n"
        (parent,) = post("runs/search", {"experiment_ids": [experiment_id],
                                         "filter": "tags.`gdexp.role` = 'sweep'"})["runs"]
        kids = post("runs/search", {"experiment_ids": [experiment_id], "max_results": 100,
                                    "filter": f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"})["runs"]
        assert len(kids) == 18
        tags = [{t["key"]: t["value"] for t in k["data"]["tags"]} for k in kids]
        assert {t["regime"] for t in tags} == {"too_small", "just_right", "too_large"}
        assert all(t["optuna.study"] == "regimes" and t["gd.variant"] for t in tags)
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
