"""gdexp.ui: bad flags in one line (exit code 2) and nothing left behind; a UI for this machine only. The UI
serving a real sweep is tested with that sweep (`tests/test_report.py`), on a tracking server with users in
`tests/test_server.py`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gdexp import ui
from tests.conftest import UNASSIGNED, child_env

REFUSED = [
    (["--port", "99999"], "99999 is not a port"),
    (["--port", "http"], "'http' is not a port"),
    (["--host", UNASSIGNED], f"'{UNASSIGNED}' is not an address of this machine"),
    (["--host", "0.0.0.0"], "this UI has no login"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--uri", "sqlite:///none/mlflow.db"], "no MLflow store at sqlite:///none/mlflow.db yet"),
    (["--uri", "http://u:s3cr3t@127.0.0.1:1"], "--uri=http://u:***@127.0.0.1:1 cannot be used: nothing answers"),
]


def test_the_hint_names_a_store_the_ui_would_not_open_by_itself(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """`--uri` in the printed command whenever the run's store is not `gdexp.ui`'s default (once the hint opened
    mlruns/ and the run was not there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert " -m gdexp.ui --uri sqlite:///o2.db, then " in ui.run_hint("sqlite:///o2.db", "none-such")
    assert " -m gdexp.ui, then " in ui.run_hint("sqlite:///mlruns/mlflow.db", "none-such")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///o2.db")
    assert "--uri sqlite:///mlruns/mlflow.db," in ui.run_hint("sqlite:///mlruns/mlflow.db", "none-such")


def test_a_servers_address_is_given_without_the_user_in_the_tracking_uri() -> None:
    """tracking.uri=http://alice:pw@host:port: the address said `http://alice:***@host...`, which no browser opens
    (MLflow's UI: 'Request cannot be constructed from a URL that includes credentials')."""
    from gdexp.config import without_credentials

    assert ui._opening("http://alice:pw@127.0.0.1:5701/", "#/experiments/1") == "http://127.0.0.1:5701/#/experiments/1"
    assert without_credentials("https://a:b@[::1]:5000/x?y=1") == "https://[::1]:5000/x?y=1"
    assert without_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.parametrize("args,words", REFUSED)
def test_bad_flags_are_one_line_and_leave_nothing(args: list[str], words: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp.ui: ") and words in lines[0], lines
    assert "s3cr3t" not in lines[0] and list(tmp_path.iterdir()) == []




@pytest.mark.parametrize("args,words", [
    (["--sweep", "nosuch"], "--sweep nosuch: no sweep of that name in experiment 'gdexp'; its sweeps: lr"),
    (["--sweep", "lr", "--experiment", "other"], "--sweep lr: the store holds no experiment 'other' yet"),
])
def test_a_sweep_the_experiment_does_not_hold_is_refused_and_no_view_is_saved(
        args: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gdexp import compat, store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id = store.ensure_experiment(store.DEFAULT_URI, "gdexp")
    store.create_run(store.DEFAULT_URI, experiment_id, "sweep-lr", {"gdexp.role": "sweep", "gdexp.sweep": "lr"})
    assert ui.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp.ui: ") and words in lines[0], lines
    tags = store._client(store.DEFAULT_URI).get_experiment(experiment_id).tags
    assert not [key for key in tags if key.startswith(compat.SHARED_VIEW_PREFIX)], tags


def test_an_experiment_the_store_does_not_hold_is_said_with_those_it_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI still starts (the store is worth browsing), and says why it has no regime comparison to open."""
    from gdexp import store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store.ensure_experiment(store.DEFAULT_URI, "course")
    said: list[str] = []
    monkeypatch.setattr(ui, "serve", lambda launch, title, prog, lines: said.extend(lines) or 0)
    assert ui.main(["--experiment", "nope"]) == 0
    (line,) = said
    assert line.startswith("The trials by regime: none (no experiment 'nope' in this store; its experiments: ")
    assert "course" in line and line.endswith("; choose one with --experiment)")


def test_a_run_is_pointed_at_by_its_page_as_a_sweep_by_its_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """The single run, the range test and a multirun say where to look as a sweep does: `python -m gdexp.ui`
    (plain `mlflow ui` opens a GenAI overview), then the address."""
    from gdexp import store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", child_env()["PATH"])  # the venv's bin first, as an activated venv has it
    experiment_id = store.ensure_experiment(store.DEFAULT_URI, "gdexp")
    run_id = store.create_run(store.DEFAULT_URI, experiment_id, "lr0.1-h64-minibatch32-sgd", {})
    local = f"python -m gdexp.ui, then http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    assert ui.run_hint(store.DEFAULT_URI, "gdexp", run_id) == f"{local}/{run_id}?workflowType=machine_learning"
    assert ui.run_hint(store.DEFAULT_URI, "gdexp") == f"{local}?workflowType=machine_learning"
    assert ui.run_hint(store.DEFAULT_URI, "none yet") == "python -m gdexp.ui, then its runs table"


def test_the_commands_printed_to_run_name_this_python_as_the_user_would_type_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python` where that name finds this interpreter (an activated venv); else its path, relative to the working
    folder inside it (README's `.venv/bin/python`), absolute outside: a bare `python` would find no gdexp."""
    from gdexp import errors

    here = Path(sys.executable)
    monkeypatch.setenv("PATH", os.pathsep.join([str(here.parent), os.environ.get("PATH", "")]))
    assert errors.interpreter() == "python"
    monkeypatch.setenv("PATH", str(tmp_path))  # no python at all on it
    monkeypatch.chdir(here.parent.parent.parent)  # the folder that holds the venv
    assert errors.interpreter() == str(Path(os.path.abspath(sys.executable)).relative_to(Path.cwd()))
    monkeypatch.chdir(tmp_path)
    assert errors.interpreter() == os.path.abspath(sys.executable)


def test_a_ui_killed_with_sigkill_takes_its_server_with_it(tmp_path: Path) -> None:
    """`kill -9` on `python -m gdexp.ui` gives it no chance to stop its server: the server goes anyway (Linux's
    parent-death signal, passed on by `mlflow server` to uvicorn) and the port is free for the next start. It
    used to stay, serving, and the next start was refused: port in use."""
    import signal
    import socket
    import subprocess
    import time

    from gdexp.serving import free_port, wait_until_up
    from tests.conftest import descendants, still_running

    subprocess.run([sys.executable, "-c", "from gdexp import store; store.ensure_experiment(store.DEFAULT_URI, 'g')"],
                   cwd=tmp_path, env=child_env(), check=True)  # the store the UI opens
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gdexp.ui", "--port", str(port)], cwd=tmp_path, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", timeout=90)
        server = descendants(proc.pid)
        assert len(server) >= 2, server  # mlflow server and its uvicorn
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60  # a bound on a wait, not a timing assertion
        while still_running(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not still_running(server), "the server outlived the command that started it"
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
