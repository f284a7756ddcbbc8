"""Every place gdexp leans on another library's internals: a private name, an internal logger's path, the text
of a message, the layout of a file a package ships. Nowhere else in gdexp does that happen.

Each entry says why the public API does not do, and `tests/test_compat.py` pins each one on the installed
versions, so an upgrade that moves one fails there, loudly, and not in the middle of a user's sweep.
pyproject.toml bounds the versions these were checked on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "CURRENT_USER",
    "FIXED_PARAMS",
    "SHARED_VIEW_PREFIX",
    "SQLITE_SCHEMA",
    "USER_PERMISSION",
    "create_sqlite_store",
    "database_reason",
    "digits_file",
    "fixed_params",
    "hydra_override_error",
    "hydra_removal",
    "hydra_schema_error",
    "hydra_unknown_override",
    "import_optuna_importance",
    "log_formatter",
    "metric_history_bulk",
    "mlflow_get",
    "mlflow_password_problem",
    "mlflow_unreachable",
    "quiet_loggers",
    "ray_client_session_may_start_again",
    "shared_view",
    "shared_view_address",
    "transport_problem",
    "trial_id",
    "write_sqlite_schema",
]

# Optuna: where `Study.enqueue_trial` puts the parameters a trial must take (`Trial.__init__` reads them back);
# gdexp creates its retries as RUNNING trials in one write, and Optuna has no public way to fix parameters there.
FIXED_PARAMS = "fixed_params"


def fixed_params(params: dict[str, Any]) -> dict[str, Any]:
    """The system attributes that make a trial's suggestions return `params`."""
    return {FIXED_PARAMS: params}


GRID_POINT = ("grid_id", "search_space")  # where Optuna's GridSampler keeps a trial's point (its `before_trial`)


def replay(trial: Any) -> dict[str, Any]:
    """The system attributes that make a new trial evaluate the point the `FrozenTrial` `trial` was given: its
    parameters as `enqueue_trial` fixes them, and its grid point when a grid sampler gave it one (a trial stopped
    before its first suggestion has no parameters yet; the grid sampler keeps a point it finds set)."""
    attrs = {key: trial.system_attrs[key] for key in GRID_POINT if key in trial.system_attrs}
    if trial.params:
        attrs.update(fixed_params(dict(trial.params)))
    return attrs


def trial_id(trial: Any) -> int:
    """The storage id of a `FrozenTrial` (Optuna keeps it private; storages are addressed by it)."""
    return int(trial._trial_id)


# Loggers that speak for the library's internals, by their module paths: silenced (or raised to WARNING) because
# their lines repeat what gdexp says once, in its own words.
QUIET = {
    "mlflow.utils.async_logging.async_logging_queue": logging.CRITICAL,  # a failed async write: raised again later
    "mlflow.store.db.utils": logging.CRITICAL,  # a failed database write, logged whole (90 lines) before it is raised
    "optuna.storages.journal._file": logging.WARNING,  # "lock acquired"-level chatter of the journal lock
    "urllib3.connectionpool": logging.ERROR,  # each of MLflow's bounded retries of a server that does not answer
}


def quiet_loggers() -> None:
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)


def mlflow_unreachable(exc: BaseException) -> bool:
    """Is `exc` MLflow telling that its tracking store is out of reach (after its own retries), rather than a bad
    request? MLflow has no exception type for it: a server that does not answer raises "API request to ...
    failed", an asynchronous write wraps that in "The following failures occurred ..."; a database that cannot
    be opened has error code TEMPORARILY_UNAVAILABLE."""
    from mlflow.exceptions import MlflowException, RestException

    if not isinstance(exc, MlflowException) or isinstance(exc, RestException):
        return False
    text = str(exc)
    asynchronous = text.startswith("The following failures occurred while performing one or more async")
    return (text.startswith("API request to") or (asynchronous and "API request to" in text)
            or exc.error_code == "TEMPORARILY_UNAVAILABLE")


def database_reason(text: str) -> str | None:
    """The line of an MLflow error that says what the database said, as SQLAlchemy words it:
    `(sqlite3.OperationalError) database or disk is full`; None when there is none."""
    import re

    found = re.search(r"^\((?:\w+\.)*\w+Error\) .+$", text, re.MULTILINE)
    return found.group(0) if found else None


def duplicate_key(exc: BaseException) -> bool:
    """Is `exc` MLflow's database refusing a row whose key another writer inserted first? As PostgreSQL
    (`UniqueViolation`, through a server too), SQLite (`UNIQUE constraint failed`) and MySQL (`Duplicate entry`)
    word it."""
    text = str(exc)
    return any(words in text for words in ("UniqueViolation", "UNIQUE constraint failed", "Duplicate entry"))


def mlflow_get(url: str, endpoint: str, *, params: dict[str, str] | None = None, timeout: float) -> Any:
    """GET `endpoint` of the MLflow server at `url` as MLflow's own client sends its requests, once (no retries),
    within `timeout` s; the `requests.Response`, whatever its status. Sent through
    `mlflow.utils.rest_utils.http_request` with `mlflow.utils.credentials.get_default_host_creds`, so it carries
    exactly the credentials and TLS settings a run's writes will (MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN,
    ~/.mlflow/credentials, MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS, a client
    certificate): MLflow has no public call that returns a status instead of retrying and raising. A request
    that got no answer raises the transport's own error (requests' ConnectionError, SSLError, Timeout): MLflow
    wraps it in an MlflowException that keeps only its text."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        return http_request(get_default_host_creds(url), endpoint, "GET", max_retries=0, timeout=timeout,
                            raise_on_status=False, params=params)
    except MlflowException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, requests.RequestException):
            raise cause from None
        raise


def transport_problem(exc: BaseException) -> str:
    """The cause of a request that got no answer, in a few words (`Connection refused`, `certificate verify failed:
    self-signed certificate`), out of the text of requests' error: requests and urllib3 wrap the OSError or SSL
    error they met in errors of their own and keep only its text, in Python's formats (`[Errno 111] Connection
    refused`, `[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)`)."""
    import re

    text = str(exc).strip()
    found = re.search(r"\[SSL[^\]]*\] ([^(')\"]+)", text) or re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# MLflow's basic-auth app (3.17, `mlflow.server.auth.routes`): who the request's credentials are
# ({"user": {"username", "is_admin"}}), and the permission a user has on a resource, resolved as a request of
# theirs would be ({"permission": "READ" | "EDIT" | ...}; a user may ask about themselves). The routes are the
# app's own, outside MLflow's documented REST API.
CURRENT_USER = "/api/2.0/mlflow/users/current"
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"


def mlflow_password_problem(password: str) -> str | None:
    """What MLflow's basic-auth app would say of `password` as a user's password (it must be 12 characters or
    more), or None: the rule is `mlflow.utils.validation._validate_password`'s, asked before a server starts,
    since MLflow refuses a bad admin password only inside the starting server."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_password

    try:
        _validate_password(password)
    except MlflowException as exc:
        return str(exc.message)
    return None


def ray_client_session_may_start_again(exc: BaseException) -> bool:
    """Did Ray Client's proxy fail to start this session's own server for a reason that passes? It starts one
    server process per session, and two failures of that start end in a moment: its walk of the whole process
    table with psutil raises `psutil.ZombieProcess` for any process's child that has exited and is not yet reaped
    (ray-project/ray#28893), and the new server process can die before its exec ("Starting Ray client server
    failed": grpcio >= 1.81's fork handler crashes the child now and then, grpc/grpc#43055; the `ray` extra keeps
    grpcio below that, a head started elsewhere may not). The proxy sends its traceback back in the text of the
    client's `ConnectionAbortedError`; the same call, repeated, starts a fresh server."""
    said = str(exc)
    return isinstance(exc, ConnectionError) and ("psutil.ZombieProcess" in said
                                                 or "Starting Ray client server failed" in said)


def metric_history_bulk(client: Any) -> Any:
    """MLflow's database store behind a client when it can read many runs' histories in one query
    (`MlflowClient._tracking_client.store.get_metric_history_bulk`: 500 runs per query, where the public
    `get_metric_history` costs one query per run), else None (callers then ask run by run)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if hasattr(store, "get_metric_history_bulk") else None


def log_formatter() -> Any:
    """A matplotlib log-axis formatter that writes `0.3`, `1`, `100`, `10,000` instead of mathtext powers of ten,
    whose parsing costs more than the rest of a small figure: `LogFormatter._num_to_string` is the one hook for
    it. A whole number from 1,000 up keeps its digits (`.3g` alone wrote a sharpness of 10,000 as `1e+04`)."""
    from matplotlib import ticker

    class Plain(ticker.LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:,.0f}" if x >= 1000 and x == round(x) else f"{x:.3g}"

    return Plain


def import_optuna_importance() -> Any:
    """`optuna.importance`, without the scikit-learn import it makes for its fANOVA evaluator (gdexp uses
    PED-ANOVA), at the end of every sweep. Blocked only while scikit-learn is not
    loaded yet (fANOVA then is unavailable, which Optuna allows)."""
    skip = "sklearn" not in sys.modules and "sklearn.ensemble" not in sys.modules
    if skip:
        sys.modules["sklearn.ensemble"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import optuna.importance
    finally:
        if skip:
            del sys.modules["sklearn.ensemble"]
    return optuna.importance


def digits_file() -> Path | None:
    """The handwritten-digits CSV scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`), found without
    importing scikit-learn (every sweep worker would pay its import for one file); None if it moved (then
    `sklearn.datasets.load_digits` is the way)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def hydra_override_error(exc: BaseException) -> str | None:
    """The group name of Hydra's "Config group override ..." ValueError (`optim=-1`), read from its message:
    Hydra raises a plain ValueError for it. None for any other error."""
    text = str(exc)
    return text.splitlines()[0] if isinstance(exc, ValueError) and text.startswith("Config group override") else None


def hydra_flags_error(exc: BaseException) -> str | None:
    """Hydra's ValueError for flags of two modes at once (`-m ... --cfg job`): "Only one of --run, --multirun,
    --cfg, --info and --shell_completion can be specified", read from its message. None for any other error."""
    text = str(exc)
    return text if isinstance(exc, ValueError) and text.startswith("Only one of --run, --multirun") else None


def hydra_schema_error(exc: BaseException) -> tuple[str, Any] | None:
    """(full key, value) of Hydra's composition error for a value the schema refuses (`optim.lr=abc`): OmegaConf's
    ValidationError as its cause, the value after "Error merging override key=" in the message when it came from
    the command line; None for any other error."""
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if not full_key or type(cause).__name__ != "ValidationError":
        return None
    value = str(exc).partition("=")[2] if "Error merging override" in str(exc) else getattr(cause, "value", "")
    return str(full_key), value


def hydra_unknown_override(exc: BaseException) -> str | None:
    """The key of Hydra's "Could not override 'key'" composition error, read from its message."""
    text = str(exc)
    return text.split("'")[1] if text.startswith("Could not override '") else None


def hydra_sweep_value(exc: BaseException) -> str | None:
    """The override of Hydra's composition error for sweep syntax without `--multirun` (`optim.lr=0.1,1`:
    "Ambiguous value for argument '...'"; `optim.lr=interval(0,1)`: "Sweep parameters '...' requires
    --multirun"), read from its message; None for any other error."""
    text = str(exc)
    if text.startswith(("Ambiguous value for argument '", "Sweep parameters '")):
        return text.split("'")[1]
    return None


def hydra_removal(exc: BaseException) -> str | None:
    """The key of Hydra's composition error for `~key`: "Error merging override ~key" (a key the schema has, the
    structured config refusing to lose it, as its cause) or "Could not delete from config. 'key' does not exist."
    (no such key); None for any other error."""
    text = str(exc)
    if text.startswith("Error merging override ~"):
        return text.removeprefix("Error merging override ~").split("=")[0]
    return text.split("'")[1] if text.startswith("Could not delete from config. '") else None


# MLflow's web UI (3.17, `mlflow/server/js/build`): its runs page restores a view saved as the experiment tag
# `mlflow.sharedViewState.<key>` when its address carries `?viewStateShareKey=<key>` (inside the hash). The value
# is the envelope the UI's own "Save view" writes: {"name", "createdAt", "updatedAt", "state"}, the state being
# "deflate;" + base64(zlib(JSON)). The state's keys are the UI's; those it never shares are left out.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_PARAM = "viewStateShareKey"
SHARED_VIEW_MAX = 20_000  # characters: the UI refuses a longer envelope, MLflow a longer experiment tag


def shared_view(name: str, *, columns: list[str], group_by_tag: str | None, search_filter: str = "",
                order_by: str | None = None, widths: dict[str, int] | None = None) -> str:
    """The tag value of a runs-table view: these columns (`params.`/`metrics.`/`tags.` + the name in backticks), in
    this order, the runs grouped by a tag (grouped, the UI lists child runs flat inside their groups), filtered and
    sorted, in table mode."""
    import base64
    import json
    import time
    import zlib

    state = {"searchFilter": search_filter, "orderByKey": order_by or "attributes.start_time",
             "orderByAsc": order_by is not None, "startTime": "ALL", "lifecycleFilter": "Active",
             "datasetsFilter": [], "modelVersionFilter": "All Runs", "selectedColumns": columns,
             "columnOrder": columns, "columnWidths": widths or {}, "runsHiddenMode": "SHOW_ALL",
             "viewMaximized": False, "runListHidden": False, "isAccordionReordered": False,
             "useGroupedValuesInCharts": True, "hideEmptyCharts": True, "groupsExpanded": {},
             "groupBy": None if group_by_tag is None else {
                 "aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_by_tag}]},
             "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""}}
    packed = "deflate;" + base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode())).decode()
    now = int(time.time() * 1000)
    envelope = json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": packed}, separators=(",", ":"))
    if len(envelope) > SHARED_VIEW_MAX:
        raise ValueError(f"the view {name!r} is {len(envelope)} characters, more than MLflow keeps")
    return envelope


def shared_view_address(experiment_id: str, key: str) -> str:
    """The runs page's address (after the server's root) that opens the view saved under `key`; `workflowType`
    puts the UI's sidebar on model training (MLflow 3.17 follows that switch, not the experiment's kind tag)."""
    return f"#/experiments/{experiment_id}/runs?{SHARED_VIEW_PARAM}={key}&workflowType=machine_learning"


def runs_address(experiment_id: str, run_id: str | None = None) -> str:
    """The address (after the server's root) of the experiment's runs table, or of one run's page, with the UI's
    sidebar on model training (as `shared_view_address`)."""
    return f"#/experiments/{experiment_id}/runs{'/' + run_id if run_id else ''}?workflowType=machine_learning"


# MLflow's SQLite store: a new one runs every schema migration MLflow ever made (several seconds; most of a short
# sweep's wall time). Its end state -- the tables, indexes, alembic's revision and the rows the migrations insert
# -- is kept as SQL text beside this module (`SQLITE_SCHEMA`, made by `write_sqlite_schema` from MLflow's own
# migrations) and a new store is made from it in milliseconds, when the revision there is the one the installed
# MLflow expects; otherwise MLflow makes it its own way. tests/test_compat.py compares the two, table by table.
SQLITE_SCHEMA = Path(__file__).with_name("mlflow_sqlite_schema.sql")


def _mlflow_head() -> str:
    """The alembic revision the installed MLflow's SQL stores are at (its migrations' head)."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return str(ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head())


def create_sqlite_store(path: Path) -> bool:
    """Make a new, empty MLflow SQLite store at `path` from `SQLITE_SCHEMA`; False (nothing made) when the schema
    kept here is not the installed MLflow's, so that MLflow migrates the store itself."""
    import sqlite3

    text = SQLITE_SCHEMA.read_text() if SQLITE_SCHEMA.is_file() else ""
    revision = text.partition("\n")[0].removeprefix("-- alembic revision ").strip()
    if not revision or revision != _mlflow_head():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        with contextlib.closing(sqlite3.connect(temporary)) as db:
            db.executescript(text)
            # write-ahead logging, kept in the file: a commit appends to the log instead of rewriting pages, about
            # halving what MLflow's writes cost, and readers (the UI, a report) no longer block a writer
            db.execute("PRAGMA journal_mode=WAL")
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
            os.link(temporary, path)  # whole or not at all, and never over a store that exists
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return True


def close_sql_stores() -> None:
    """Close the pooled connections of every MLflow database store this process opened (MLflow keeps one
    SQLAlchemy engine per database URL, in `SqlAlchemyStore._engine_map`, and never closes them). A process that
    ends with them open leaves a SQLite store's recent commits in `mlflow.db-wal`: SQLite folds the write-ahead log
    into the database file when the last connection to it closes, and only then."""
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    for engine in list(getattr(getattr(module, "SqlAlchemyStore", None), "_engine_map", {}).values()):
        engine.dispose()


def write_sqlite_schema() -> Path:
    """Make `SQLITE_SCHEMA` again from MLflow's own migrations (run it after an MLflow upgrade):
    `python -c "from gdexp import compat; compat.write_sqlite_schema()"`."""
    import sqlite3
    import tempfile

    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # every migration, then MLflow's set-up
        with contextlib.closing(sqlite3.connect(db)) as conn:
            lines = [line for line in conn.iterdump() if not line.startswith('INSERT INTO "experiments"')]
    # the Default experiment is left out: MLflow makes it in the new store's own artifact folder
    note = ("-- MLflow's own schema, as its migrations leave a new SQLite store (tables repeat in shape: they are "
            "MLflow's, not gdexp's code).\n"
            "-- Made by gdexp.compat.write_sqlite_schema(); tests/test_compat.py checks it.\n")
    SQLITE_SCHEMA.write_text(f"-- alembic revision {_mlflow_head()}\n{note}" + "\n".join(lines) + "\n")
    return SQLITE_SCHEMA
