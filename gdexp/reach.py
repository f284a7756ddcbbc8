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

__all__ = ["CONNECT_TIMEOUT_S", "database", "http_server", "mlflow_sqlite", "redis", "sqlite_file", "tracking_store",
           "writable_folder"]

CONNECT_TIMEOUT_S = 10  # a host that drops packets answers nothing: give up after this long
HTTP_TIMEOUT_S = 5  # a tracking server that does not answer /health within this is not there
SCHEMES = ("sqlite:///", "postgresql", "postgres:", "mysql", "http://", "https://")  # stores MLflow can track to


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


def sqlite_file(path: Path) -> str | None:
    """Why a SQLite database cannot live at `path` (a folder there, no folder can be made, nothing can be
    written), or None."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else f"{path} cannot be written"
    return writable_folder(path.parent)


def mlflow_sqlite(path: Path) -> str | None:
    """Why `path` is not an MLflow store to read (missing, not SQLite, no MLflow tables), or None. Opened
    read-only: asking MLflow would create its tables in any file it is given, an empty one included."""
    import sqlite3

    if not path.is_file():
        return f"no MLflow store at {path}"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a SQLite database ({exc})"
    if not {"experiments", "runs", "alembic_version"} <= tables:
        return f"{path} is not an MLflow store (it has no MLflow tables)"
    return None


def http_server(url: str) -> str | None:
    """Why the MLflow tracking server at `url` cannot be used (nothing answers, not an MLflow server), or None:
    asked once, within `HTTP_TIMEOUT_S`, where MLflow's client would retry for minutes."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=HTTP_TIMEOUT_S) as answer:
            if answer.status == 200:
                return None
            return f"its /health answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"its /health answered {exc.code} {exc.reason}: is it an MLflow server?"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"nothing answers there ({getattr(reason, 'strerror', None) or reason})"


def database(url: str) -> str | None:
    """Why the database at the SQLAlchemy `url` cannot be connected to (server down, no such database, no
    driver), or None. SQLite URLs are asked of `sqlite_file`."""
    if url.startswith("sqlite:///"):
        return sqlite_file(Path(url.removeprefix("sqlite:///")))
    from sqlalchemy import create_engine, exc
    from sqlalchemy.pool import NullPool

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except exc.DBAPIError as error:
        return _first_line(error.orig if error.orig is not None else error)
    except ImportError as error:  # gdexp installs psycopg 3 only
        return (f"its database driver is not installed ({_first_line(error)}): install one and name it in the "
                "URL, e.g. pip install pymysql and mysql+pymysql://...")
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        return f"{type(error).__name__}: {_first_line(error)}"
    return None


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


def tracking_store(uri: str, *, read: bool = False) -> str | None:
    """Why MLflow cannot use the tracking store `uri` (a SQLite file, a database, a tracking server), or None.
    `read`: the store must hold MLflow's tables already (the report reads; it must not create them)."""
    from gdexp.config import database_url

    if not uri.startswith(SCHEMES):
        return "it is not a store MLflow tracks to: use sqlite:///path, postgresql://..., or http(s)://host:port"
    if uri.startswith(("http://", "https://")):
        return http_server(uri)
    if read and uri.startswith("sqlite:///"):
        return mlflow_sqlite(Path(uri.removeprefix("sqlite:///")))
    return database(database_url(uri))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
