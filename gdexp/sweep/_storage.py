"""The study's storage (a journal file, an RDB URL, Redis) and the lock that serialises creating the parent run."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from omegaconf import DictConfig

from gdexp import reach
from gdexp.config import ConfigError, database_url, mask_secrets
from gdexp.sweep._journal import open_journal
from gdexp.sweep._trials import EndStaleRun


def open_storage(cfg: DictConfig) -> tuple[optuna.storages.BaseStorage, str]:
    """The study's storage and a masked description of where it lives."""
    spec, name = cfg.sweep.storage, cfg.sweep.name
    if spec is None or not str(spec).strip():
        path = Path("sweeps") / name / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_journal(path), str(path)
    spec = str(spec)
    database = spec.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres", "mysql", "sqlite")
    if database or spec.startswith("redis://"):  # unreachable, missing: one line now, not a traceback later
        problem = reach.database(database_url(spec)) if database else reach.redis(spec)
        if problem is not None:
            raise ConfigError(f"sweep.storage={mask_secrets(spec)} cannot be used: {mask_secrets(problem)}")
    if database:
        hb = int(cfg.sweep.heartbeat_s)
        with _schema_lock(database_url(spec)):  # RDBStorage creates Optuna's tables when it is constructed
            storage = optuna.storages.RDBStorage(
                database_url(spec), heartbeat_interval=hb, grace_period=2 * hb,
                heartbeat_stale_trial_callback=EndStaleRun(cfg.tracking.uri),
            )
        return storage, mask_secrets(spec)
    if spec.startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend

        return optuna.storages.JournalStorage(JournalRedisBackend(spec)), mask_secrets(spec)
    return open_journal(Path(spec)), spec

@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """One process at a time creates Optuna's tables: workers started together on a fresh database otherwise
    race (PostgreSQL: UniqueViolation on alembic_version; SQLite: table exists). An advisory lock on
    PostgreSQL, a file lock beside a SQLite file; other databases pass through."""
    if url.startswith("sqlite:///"):
        with _file_lock(Path(f"{url.removeprefix('sqlite:///')}.schema-lock")):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": zlib.crc32(b"gdexp.optuna-schema")})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": zlib.crc32(b"gdexp.optuna-schema")})
    finally:
        engine.dispose()


@contextlib.contextmanager
def exclusive(storage: optuna.storages.BaseStorage, cfg: DictConfig, where: str) -> Iterator[None]:
    """Serialise one step (creating the parent run) between all processes and machines that share the study,
    on every storage: a PostgreSQL advisory lock, a Redis lock, or a file lock beside a journal or SQLite file
    (`where`: the journal's path)."""
    name = cfg.sweep.name
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = zlib.crc32(f"gdexp.sweep:{name}".encode())
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    elif str(cfg.sweep.storage or "").startswith("redis://"):
        import redis

        with redis.Redis.from_url(str(cfg.sweep.storage)).lock(f"gdexp.sweep:{name}:parent", timeout=120,
                                                                blocking_timeout=300):
            yield
    else:
        url = str(cfg.sweep.storage or "")
        path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else Path(where)
        with _file_lock(Path(f"{path}.parent-lock")):  # not .lock: Optuna's own journal lock file
            yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
