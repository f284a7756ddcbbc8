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

__all__ = ["CONNECT_TIMEOUT_S", "database", "redis", "sqlite_file", "tracking_store"]

CONNECT_TIMEOUT_S = 10  # a host that drops packets answers nothing: give up after this long


def sqlite_file(path: Path) -> str | None:
    """Why a SQLite database cannot live at `path` (a folder there, no folder can be made, nothing can be
    written), or None."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else f"{path} cannot be written"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".gdexp-probe-")
    except OSError as exc:
        return f"no file can be created in {folder} ({exc.strerror or exc})"
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


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


def tracking_store(uri: str) -> str | None:
    """Why MLflow cannot use the tracking store `uri` (a SQLite file or a database), or None. A tracking server
    (http) is not probed: MLflow's client retries it, and a sweep stops in one line when it stays away."""
    from gdexp.config import database_url

    if uri.startswith(("sqlite:///", "postgresql", "postgres:", "mysql")):
        return database(database_url(uri))
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
