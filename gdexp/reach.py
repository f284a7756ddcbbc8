"""Can a store be used at all? One quick probe per kind, asked before a command writes anything.

Left to themselves, the libraries find out slowly or loudly: MLflow retries a SQLite file it cannot create for
about two minutes before a traceback; Optuna, SQLAlchemy and redis-py answer an unreachable server or a missing
database with a traceback. Each probe here returns None when the store can be used, else the reason in a few
words, so the caller can say it in one line that names the key. A probe writes nothing that stays: the SQLite
probe creates and removes one empty file in the nearest folder that exists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "database", "http_server", "mlflow_sqlite", "redis", "sqlite_file", "tracking_store",
           "writable_folder"]

CONNECT_TIMEOUT_S = 10  # a host that drops packets answers nothing: give up after this long
HTTP_TIMEOUT_S = 5  # a tracking server that does not answer /health within this is not there
SCHEMES = ("sqlite:///", "postgresql", "postgres:", "mysql", "http://", "https://")  # stores MLflow can track to
# Tables by which a database is told to be MLflow's store or an Optuna storage: the two cannot share one (each keeps
# its schema's version in alembic_version, and MLflow met Optuna's 'v3.2.0.a' with a traceback after training)
TABLES = {"mlflow": {"experiments", "runs"}, "optuna": {"studies", "trials", "version_info"}}


def writable_folder(path: Path) -> str | None:
    """Why files cannot be written in folder `path` (made if missing): a file in its place, nothing can be
    created where it would go. Nothing is left behind: one probe file is made and removed."""
    path = Path(os.path.abspath(path))
    folder = path
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".gdexp-probe-")
    except OSError as exc:
        return f"no file can be created in {folder} ({exc.strerror or exc})"
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def sqlite_file(path: Path, holds: str = "mlflow") -> str | None:
    """Why a SQLite database of `holds` (`TABLES`) cannot live at `path` (a folder there, no folder can be made,
    nothing can be written, a file that is no SQLite database or holds another's tables), or None."""
    import sqlite3

    path = Path(os.path.abspath(path))
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if not path.exists():
        return writable_folder(path.parent)
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} cannot be written"
    if path.stat().st_size == 0:  # an empty file: the tables are made in it
        return None
    with path.open("rb") as head:  # found only after a whole run had trained
        if head.read(16) != b"SQLite format 3\x00":
            return f"{path} is not a SQLite database (its first bytes are not SQLite's)"
    try:
        tables = _sqlite_tables(path)
    except sqlite3.Error:  # locked, a full disk, a damaged file: the store's own first write says which, in full
        return None
    return _other_tables(tables, holds)


def _sqlite_tables(path: Path) -> set[str]:
    """The tables of the SQLite database at `path`, read by SQLite alone, `mode=rw` (see `mlflow_sqlite`)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _other_tables(tables: set[str], holds: str) -> str | None:
    """Why a database with `tables` cannot hold `holds` (`TABLES`): it is the other's, or (for MLflow's store)
    it holds tables of something else; None for an empty database or one of its own."""
    other = next(name for name in TABLES if name != holds)
    if TABLES[other] <= tables:
        what = {"mlflow": "MLflow's runs", "optuna": "Optuna's studies"}
        return (f"it holds {what[other]}: {what[holds]} need a database of their own (both keep their schema's "
                "version in its alembic_version table)")
    if holds == "mlflow" and tables and not TABLES["mlflow"] <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return f"it holds tables that are not MLflow's ({shown}): give MLflow a database of its own, or an empty one"
    return None


def mlflow_sqlite(path: Path) -> str | None:
    """Why `path` is not an MLflow store to read (missing, not SQLite, no MLflow tables), or None. Opened by SQLite
    alone (asking MLflow would create its tables in any file it is given, an empty one included), `mode=rw`: it
    creates no file, and writes nothing, where a read-only connection to a store in write-ahead-log mode would
    leave its `-wal` and `-shm` files behind (only a writer may remove them)."""
    import sqlite3

    if not path.is_file():
        return f"no MLflow store at {path}"
    try:
        tables = _sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a SQLite database ({exc})"
    if not {"experiments", "runs", "alembic_version"} <= tables:
        return f"{path} is not an MLflow store (it has no MLflow tables)"
    return None


def http_server(url: str, *, experiment: str | None = None, edit: bool = False) -> str | None:
    """Why this process cannot use the MLflow tracking server at `url`, or None. Each question is asked once,
    within `HTTP_TIMEOUT_S`, where MLflow's client would retry for minutes, and with the credentials and TLS
    settings that client will use (`compat.mlflow_get`):
    - nothing answers, TLS fails (a certificate not trusted here), or /health does not answer as MLflow's does;
    - with `experiment`: the server refuses the credentials (401: none given, or wrong) or lets this user not
      read the experiment (403);
    - with `edit` too, when the experiment exists: the user may not change it (its permission on it, asked of
      MLflow's basic-auth app, is neither EDIT nor MANAGE); the command would fail at its first write, after it
      made a study or a run. A user may create an experiment that does not exist yet (and then manages it).
    Nothing is written."""
    health = _get(url, "/health")
    if isinstance(health, str):
        return health
    if health.status_code != 200:
        return f"its /health answered {health.status_code} {health.reason}: is it an MLflow server?"
    if experiment is None:
        return None
    found = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)
    if isinstance(found, str):
        return found
    if found.status_code == 401:
        given = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if given:  # MLflow's client sends these: the user or its password is not the server's
            return (f"it refused user {given!r} (401: no such user, or not its password): check "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        return ("it asks for a user and password (401: none were given, or not a user's): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if found.status_code == 403:
        return f"{_who(url)} may not read experiment {experiment!r} (403): ask the server's admin for READ or more"
    if found.status_code == 404 or not edit:
        return None
    if found.status_code != 200:
        return f"asked for experiment {experiment!r}, it answered {found.status_code} {found.reason}"
    return _edit_problem(url, experiment, str(found.json()["experiment"]["experiment_id"]))


def _edit_problem(url: str, experiment: str, experiment_id: str) -> str | None:
    """Why the credentials' user may not change the experiment, or None (also when the server has no users)."""
    from gdexp import compat

    me = _get(url, compat.CURRENT_USER)
    if isinstance(me, str):
        return me
    if me.status_code == 404:  # no basic-auth app: whoever reaches the server may write
        return None
    user = me.json()["user"]
    if user["is_admin"]:
        return None
    asked = _get(url, compat.USER_PERMISSION, username=user["username"], resource_type="experiment",
                 resource_id=experiment_id)
    if isinstance(asked, str):
        return asked
    if asked.status_code == 404:  # an older server that cannot say: its answer to the first write will
        return None
    if asked.status_code != 200:
        return (f"asked what user {user['username']!r} may do with experiment {experiment!r}, it answered "
                f"{asked.status_code} {asked.reason}")
    permission = asked.json()["permission"]
    if permission in ("EDIT", "MANAGE"):
        return None
    return (f"user {user['username']!r} may not change experiment {experiment!r} (its permission: {permission}): "
            f"ask the server's admin for EDIT (python -m gdexp.server user grant {user['username']} --experiment "
            f"{experiment} --permission EDIT)")


def _who(url: str) -> str:
    """'user NAME', as the server knows the credentials, or 'this user'."""
    from gdexp import compat

    me = _get(url, compat.CURRENT_USER)
    if isinstance(me, str) or me.status_code != 200:
        return "this user"
    return f"user {me.json()['user']['username']!r}"


def _get(url: str, endpoint: str, **params: str) -> Any:
    """The server's `requests.Response` to a GET, or why there was none, in a few words."""
    import requests

    from gdexp import compat

    try:
        return compat.mlflow_get(url.rstrip("/"), endpoint, params=params or None, timeout=HTTP_TIMEOUT_S)
    except requests.exceptions.SSLError as exc:
        problem = compat.transport_problem(exc)
        if "mismatch" in problem:  # trusted or not, the certificate names other hosts than the one in the URL
            return (f"TLS failed ({problem}): the server's certificate is not for this address: use a host name "
                    "or address it names")
        return (f"TLS failed ({problem}): a certificate not signed by a CA this machine trusts needs "
                "MLFLOW_TRACKING_SERVER_CERT_PATH=<its CA's certificate>")
    except requests.exceptions.Timeout:
        return f"nothing answered there within {HTTP_TIMEOUT_S} s"
    except requests.exceptions.RequestException as exc:
        return f"nothing answers there ({compat.transport_problem(exc)})"


def database(url: str, holds: str = "mlflow") -> str | None:
    """Why the database at the SQLAlchemy `url` cannot hold `holds` (`TABLES`): it cannot be connected to (server
    down, no such database, no driver), or it holds the other's tables; or None. SQLite URLs are asked of
    `sqlite_file`."""
    if url.startswith("sqlite:///"):
        return sqlite_file(Path(url.removeprefix("sqlite:///")), holds)
    from sqlalchemy import create_engine, exc, inspect
    from sqlalchemy.pool import NullPool

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=args)
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        engine.dispose()
    except exc.DBAPIError as error:
        return _first_line(error.orig if error.orig is not None else error)
    except ImportError as error:  # gdexp installs psycopg 3 only
        example = ("postgresql://... or postgresql+psycopg://... (psycopg 3, which gdexp installs)"
                   if url.startswith("postgres") else "pip install pymysql and mysql+pymysql://...")
        return f"its database driver is not installed ({_first_line(error)}): use {example}"
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        return f"{type(error).__name__}: {_first_line(error)}"
    return _other_tables(tables, holds)


def redis(url: str) -> str | None:
    """Why the Redis server (and database number) at `url` cannot be used, or None."""
    import redis as client

    try:
        connection = client.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                           socket_timeout=CONNECT_TIMEOUT_S)
        connection.ping()
        connection.close()
    except (client.RedisError, ValueError) as error:
        return _first_line(error)
    return None


def tracking_store(uri: str, *, read: bool = False, experiment: str | None = None, edit: bool = False) -> str | None:
    """Why MLflow cannot use the tracking store `uri` (a SQLite file, a database, a tracking server), or None.
    `read`: the store must hold MLflow's tables already (the report reads; it must not create them). On a
    tracking server, `experiment` and `edit` ask whether this process's user may read it, and change it
    (`http_server`)."""
    from gdexp.config import database_url

    if uri.startswith("file:"):  # MLflow's own store of folders, which it refuses by default since MLflow 3
        return ("MLflow keeps its file store in maintenance mode and refuses it: use sqlite:///path (`mlflow "
                "migrate-filestore` moves a file store's runs there), postgresql://..., or http(s)://host:port")
    if not uri.startswith(SCHEMES):
        return "it is not a store MLflow tracks to: use sqlite:///path, postgresql://..., or http(s)://host:port"
    if uri.startswith(("http://", "https://")):
        return http_server(uri, experiment=experiment, edit=edit)
    if read and uri.startswith("sqlite:///"):
        return mlflow_sqlite(Path(uri.removeprefix("sqlite:///")))
    return database(database_url(uri))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
