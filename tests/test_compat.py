"""Every internal of another library that gdexp leans on (gdexp/compat.py), pinned on the installed versions: an
upgrade that moves one fails here, by name, instead of in the middle of a sweep."""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir

from gdexp import compat
from gdexp.config import CONFIG_DIR
from tests.conftest import child_env, self_signed


def test_optuna_keeps_enqueued_parameters_where_gdexp_puts_a_retrys() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25})
    (waiting,) = study.get_trials()
    assert waiting.system_attrs[compat.FIXED_PARAMS] == {"x": 0.25}
    assert compat.trial_id(waiting) == study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, 0)


def test_a_trial_created_with_fixed_params_suggests_them() -> None:
    study = optuna.create_study()
    template = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                         system_attrs=compat.fixed_params({"x": 0.5}))
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    assert optuna.Trial(study, trial_id).suggest_float("x", 0, 1) == 0.5


def test_the_quietened_loggers_are_the_libraries_own_modules() -> None:
    import importlib.util

    for name in compat.QUIET:
        assert importlib.util.find_spec(name) is not None, f"{name} moved: gdexp would silence nothing"
    compat.quiet_loggers()
    assert logging.getLogger("mlflow.utils.async_logging.async_logging_queue").level == logging.CRITICAL


def test_mlflow_says_an_unreachable_server_in_the_words_gdexp_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.tracking import MlflowClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowException) as caught:
        MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").search_experiments()
    assert compat.mlflow_unreachable(caught.value)
    assert not compat.mlflow_unreachable(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no"}))


def test_mlflows_database_store_reads_many_histories_in_one_query(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert compat.metric_history_bulk(client) is not None


def test_matplotlibs_log_formatter_still_has_its_number_hook() -> None:
    from matplotlib import ticker

    assert callable(getattr(ticker.LogFormatter, "_num_to_string", None))
    plain = compat.log_formatter()()
    assert [plain._num_to_string(x, 0.1, 1e5) for x in (0.3, 1e-5, 100, 2000, 1e4, 1e6)] == [
        "0.3", "1e-05", "100", "2,000", "10,000", "1,000,000"]


@pytest.mark.slow  # a fresh interpreter, where scikit-learn is not loaded yet
def test_optunas_importance_imports_without_scikit_learn() -> None:
    code = ("import sys\nfrom gdexp import compat\ncompat.import_optuna_importance()\n"
            "assert 'sklearn' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=False)
    assert result.returncode == 0, result.stderr


def test_scikit_learn_ships_the_digits_file_where_gdexp_reads_it() -> None:
    import numpy as np

    path = compat.digits_file()
    assert path is not None
    assert np.loadtxt(path, delimiter=",").shape == (1797, 65), "64 pixels and the label, as gdexp reads them"


@pytest.mark.parametrize(("overrides", "kind"), [(["optim=-1"], "group"), (["optim.lr=abc"], "schema"),
                                                  (["optim.foo=1"], "unknown"), (["~optim.lr"], "removal"),
                                                  (["~optim.foo"], "removal")])
def test_hydra_says_its_composition_errors_in_the_words_gdexp_reads(overrides: list[str], kind: str) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None), pytest.raises(Exception) as caught:
        compose("config", overrides=overrides)
    found = {"group": compat.hydra_override_error, "schema": compat.hydra_schema_error,
             "unknown": compat.hydra_unknown_override, "removal": compat.hydra_removal}[kind](caught.value)
    assert found, f"{type(caught.value).__name__}: {caught.value}"
    if kind in ("schema", "removal"):
        assert found == {"schema": ("optim.lr", "abc"), "removal": overrides[0][1:]}[kind]


def test_mlflows_ui_still_restores_shared_views_in_the_format_gdexp_writes() -> None:
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("*.js"))
    for words in (compat.SHARED_VIEW_PREFIX, compat.SHARED_VIEW_PARAM, "deflate;", "runsExpanded", "groupByKeys",
                  "selectedColumns", "workflowType"):
        assert words in text, f"MLflow's UI no longer mentions {words!r}"
    assert len(compat.shared_view("v", columns=["params.`optim.lr`"], group_by_tag="regime")) < compat.SHARED_VIEW_MAX


@pytest.mark.slow  # MLflow's own migrations: several seconds
def test_the_kept_sqlite_schema_is_the_one_mlflows_migrations_make(tmp_path: Path) -> None:
    """A store made from `compat.SQLITE_SCHEMA` has every table, index, constraint and alembic revision a store
    that MLflow migrated itself has. After an MLflow upgrade: `compat.write_sqlite_schema()`."""
    from mlflow.tracking import MlflowClient

    def schema(path: Path) -> list[tuple[str, str, list[str]]]:
        """Each table's and index's definition as a set of lines: MLflow's migrations write a table's constraints
        in an order that changes with Python's hash seed."""
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
            revision = ("revision", "", [db.execute("SELECT * FROM alembic_version").fetchone()[0]])
            return sorted([*((kind, name, sorted(line.strip().rstrip(",").strip() for line in (sql or "").splitlines()))
                             for kind, name, sql in rows), revision])

    migrated, kept = tmp_path / "migrated.db", tmp_path / "kept.db"
    MlflowClient(tracking_uri=f"sqlite:///{migrated}").search_experiments()
    assert compat.create_sqlite_store(kept), "the kept schema is not the installed MLflow's: write it again"
    assert schema(kept) == schema(migrated)
    client = MlflowClient(tracking_uri=f"sqlite:///{kept}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_metric_history(run.info.run_id, "m")[0].value == 1.0


def test_a_new_store_writes_ahead(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    assert compat.create_sqlite_store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_mlflow_get_sends_once_and_hands_back_the_transport_error() -> None:
    """MLflow wraps a request that got no answer in an MlflowException holding only its text: compat takes the
    transport's own error back from the exception's context."""
    import requests
    from mlflow.utils.rest_utils import http_request

    assert {"max_retries", "timeout", "raise_on_status"} <= set(inspect.signature(http_request).parameters)
    with socket.socket() as unused:  # bound, never listening: a connection to it is refused
        unused.bind(("127.0.0.1", 0))
        with pytest.raises(requests.ConnectionError) as refused:
            compat.mlflow_get(f"http://127.0.0.1:{unused.getsockname()[1]}", "/health", timeout=5)
    assert compat.transport_problem(refused.value) == "Connection refused"


def test_an_untrusted_certificate_is_said_in_a_few_words(tmp_path: Path) -> None:
    """A TLS listener with a self-signed certificate, which this process does not trust (one handshake)."""
    import requests

    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def handshake() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

        thread = threading.Thread(target=handshake, daemon=True)
        thread.start()
        with pytest.raises(requests.exceptions.SSLError) as untrusted:
            compat.mlflow_get(f"https://127.0.0.1:{listener.getsockname()[1]}", "/health", timeout=5)
        thread.join(timeout=10)
    assert compat.transport_problem(untrusted.value) == "certificate verify failed: self-signed certificate"


def test_the_basic_auth_routes_are_mlflows() -> None:
    from mlflow.server.auth import routes

    assert compat.CURRENT_USER == routes.GET_CURRENT_USER
    assert compat.USER_PERMISSION == routes.GET_USER_PERMISSION


def test_mlflows_password_rule() -> None:
    assert compat.mlflow_password_problem("eleven-char") == "Password must be at least 12 characters."
    assert compat.mlflow_password_problem("twelve-chars") is None


def test_ray_client_brings_the_servers_traceback_where_gdexp_reads_a_start_that_may_pass() -> None:
    """Ray Client's proxier answers a failed session with the server's traceback, which the client raises as
    ConnectionAbortedError("Initialization failure from server:\n<traceback>"); the two failures gdexp tries
    again are written in the proxier as gdexp reads them."""
    from ray.util.client import worker
    from ray.util.client.server import proxier

    assert "ConnectionAbortedError" in inspect.getsource(worker.Worker._server_init)
    assert "traceback.format_exc()" in inspect.getsource(proxier)
    assert "psutil.Process(" in inspect.getsource(proxier) and "Starting Ray client server failed" in \
        inspect.getsource(proxier)
    head = "Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
    for last in ("psutil.ZombieProcess: PID still exists but it's a zombie (pid=15778)",
                 "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."):
        assert compat.ray_client_session_may_start_again(ConnectionAbortedError(head + last))
    assert not compat.ray_client_session_may_start_again(ConnectionAbortedError(head + "boom"))
    assert not compat.ray_client_session_may_start_again(RuntimeError("Starting Ray client server failed"))
