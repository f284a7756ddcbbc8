"""The study's lock: one process at a time, on every host, claims a trial (or creates the parent run, or
Optuna's tables). Every kind of lock here dies with its holder: a process killed while it holds one never
stalls the others.

- PostgreSQL: an advisory lock on a connection of its own; the server releases it when the connection
  drops, which the kernel makes happen when the holder dies.
- Redis: a lock with a timeout (`REDIS_LEASE_S`); a dead holder's lapses.
- A journal or SQLite file: `flock` on a file beside it, which the kernel releases when the holder dies.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["file_lock", "postgres_lock", "redis_lock"]

REDIS_LEASE_S = 60  # a claim takes milliseconds: a Redis lock older than this was left by a dead process


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (made, with its folder, if missing)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def postgres_lock(engine: Any, name: str) -> Iterator[None]:
    """A PostgreSQL advisory lock named `name`, held on one connection of the SQLAlchemy `engine`."""
    from sqlalchemy import text

    key = zlib.crc32(name.encode())
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextlib.contextmanager
def redis_lock(url: str, name: str) -> Iterator[None]:
    import redis

    with redis.Redis.from_url(url).lock(name, timeout=REDIS_LEASE_S, blocking_timeout=5 * REDIS_LEASE_S):
        yield
