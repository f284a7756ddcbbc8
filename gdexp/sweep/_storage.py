"""The study's storage (a journal file, an RDB URL, Redis) and its lock (`_locks.py`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from gdexp import reach
from gdexp.config import DATABASES, ConfigError, database_url, mask_secrets, scheme
from gdexp.sweep._journal import open_journal
from gdexp.sweep._locks import file_lock, postgres_lock, redis_lock

__all__ = ["Storage", "open_storage"]

@dataclass
class Storage:
    """An opened study storage: Optuna's object, where it lives (masked, for people), and how to lock it."""

    optuna: optuna.storages.BaseStorage  # the object the study itself uses (an RDB storage with Optuna's cache)
    where: str
    spec: str  # sweep.storage as given ("" for the default journal)
    name: str  # the study's name
    path: Path | None  # the journal or SQLite file, if the storage is one
    engine: Any = None  # an RDB storage's SQLAlchemy engine

    @contextlib.contextmanager
    def lock(self, what: str = "claim") -> Iterator[None]:
        """Serialise `what` between every process and machine that shares this study (`_locks.py`)."""
        key = f"gdexp.sweep:{self.name}:{what}"
        if self.engine is not None and self.engine.dialect.name == "postgresql":
            with postgres_lock(self.engine, key):
                yield
        elif self.spec.startswith("redis://"):
            with redis_lock(self.spec, key):
                yield
        else:  # not `<journal>.lock`: that is Optuna's own journal lock
            assert self.path is not None, "a storage that is neither PostgreSQL nor Redis is a file"
            with file_lock(Path(f"{self.path}.gdexp-{what}-lock")):
                yield


def open_storage(cfg: DictConfig) -> Storage:
    """The study's storage (`sweep.storage`; its form was checked by `config.validate`)."""
    spec, name = str(cfg.sweep.storage or "").strip(), cfg.sweep.name
    kind = scheme(spec)
    if not spec:
        path = Path("sweeps") / name / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return Storage(open_journal(path), str(path), "", name, path.resolve())
    if kind in (*DATABASES, "redis"):  # unreachable, missing: one line now, not a traceback later
        problem = reach.database(database_url(spec), "optuna") if kind != "redis" else reach.redis(spec)
        if problem is not None:
            raise ConfigError(f"sweep.storage={mask_secrets(spec)} cannot be used: {mask_secrets(problem)}")
    if kind in DATABASES:
        url = database_url(spec)
        path = Path(url.removeprefix("sqlite:///")).resolve() if kind == "sqlite" else None
        with _schema_lock(url, name, path):  # RDBStorage creates Optuna's tables when it is constructed
            rdb = optuna.storages.RDBStorage(url)
        if kind == "mysql":  # no lock that dies with its holder across hosts here: a file lock, for one host
            path = (Path("sweeps") / name / "mysql").resolve()
        return Storage(optuna.storages.get_storage(rdb), mask_secrets(spec), spec, name, path, rdb.engine)
    if kind == "redis":
        from optuna.storages.journal import JournalRedisBackend

        return Storage(optuna.storages.JournalStorage(JournalRedisBackend(spec)), mask_secrets(spec), spec, name, None)
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Storage(open_journal(path), spec, spec, name, path.resolve())


@contextlib.contextmanager
def _schema_lock(url: str, name: str, path: Path | None) -> Iterator[None]:
    """One process at a time creates Optuna's tables: workers started together on a fresh database otherwise
    race (PostgreSQL: UniqueViolation on alembic_version; SQLite: table exists)."""
    if path is not None:
        with file_lock(Path(f"{path}.gdexp-schema-lock")):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with postgres_lock(engine, "gdexp.optuna-schema"):
            yield
    finally:
        engine.dispose()
