"""The one error table: what an exception means at the boundary of a command, or of a sweep's trial, and
the exit code and one line it becomes. No other module catches a broad `Exception`.

| exception                                   | exit | the line                                               |
|---------------------------------------------|------|--------------------------------------------------------|
| `UsageError` (a config key, a data file, a  | 2    | `<prog>: <what> error: <message>`; nothing is left     |
| report's name, a server's flag) or a Hydra  |      | behind                                                 |
| composition error (`config._errors.explain`)|      |                                                        |
| KeyboardInterrupt (Ctrl-C, SIGTERM), or any | 130, | `<prog>: interrupted` (+ how to resume)                |
| error while this process is stopping        | 143  |                                                        |
| the MLflow store out of reach, or an MLflow | 1    | `<prog>: the MLflow store at tracking.uri=... failed`  |
| or database error                           |      | (+ the disk full, for a local SQLite store)            |
| OSError on a path (read-only, missing, name | 2    | `<prog>: cannot use <path>: <reason>`                  |
| too long) / the disk full or an I/O error   | 1    |                                                        |
| MemoryError                                 | 2    | `<prog>: not enough memory ...`                        |
| anything else: a bug                        | 1    | the traceback, then `<prog>: internal error ...`       |

Every line and traceback passes `config.mask_secrets`: no password is printed, expected error or not.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import socket
import sqlite3
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from gdexp import stopping
from gdexp.config import CONFIG_DIR, Refused, UsageError, mask_secrets

__all__ = ["Failure", "Parser", "captured", "command", "host", "interpreter", "port", "say", "say_once",
           "store_unreachable"]

# the disk refused what a run wrote, whatever the run was: not the run's fault, and the next one fares no better
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
# ... nor is a folder the run must write to that refuses it (its permissions, an immutable folder): a sweep's
# trial that met one is not counted, as on a full disk, and the sweep stops until the folder is fixed
MACHINE_ERRNOS = DISK_ERRNOS | {errno.EACCES, errno.EPERM}
INPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR,
                errno.ENOENT, errno.EEXIST}  # a path the user gave (or the folder they run in) cannot be used


class Parser(argparse.ArgumentParser):
    """argparse, refusing bad flags with one `UsageError` (one line, exit code 2 through the table) instead of
    its usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 0 to 65535") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: give a number from 0 to 65535")
    return value


def host(text: str) -> str:
    """An argparse type: an address of this machine to listen on (a name is resolved; 0.0.0.0 and :: stand for
    all of them). Tried now, by binding a throw-away socket: a server given another machine's address finds out
    only after its store's migrations, with a traceback."""
    try:
        family, _, _, _, address = socket.getaddrinfo(text, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a name or address this machine can resolve "
                                         f"({exc.strerror})") from None
    with socket.socket(family) as probe:
        try:
            probe.bind((address[0], 0))
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not an address of this machine ({exc.strerror}): give "
                                             "127.0.0.1 or one of its own") from None
    return text


def interpreter() -> str:
    """This Python as the user would type it in a command gdexp prints for them to run: `python` where that name
    finds this interpreter (an activated venv), else its path, relative to the working folder when inside it
    (`.venv/bin/python`, as README's commands write it): a bare `python` outside the venv would find no gdexp."""
    here = os.path.abspath(sys.executable)
    found = shutil.which("python")
    if found is not None and os.path.abspath(found) == here:
        return "python"
    relative = os.path.relpath(here)
    return here if relative.startswith("..") else relative


def say(line: str) -> None:
    """One line on stderr, secrets masked; above a progress bar when one is drawn."""
    text = mask_secrets(line)
    if "tqdm" in sys.modules:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


_said: set[str] = set()


def say_once(line: str) -> None:
    """`say`, unless this process said the same line already (a Hydra multirun runs its jobs in one process)."""
    if line not in _said:
        _said.add(line)
        say(line)


def store_unreachable(exc: BaseException) -> bool:
    """Is `exc` the tracking store being out of reach (rather than a bad request)? Asked of `gdexp.store`, which
    also remembers the stores it found so; a process that never touched MLflow has none."""
    store = sys.modules.get("gdexp.store")
    return bool(store is not None and store.unreachable(exc))


@dataclass
class Failure:
    """What `captured` caught: an interruption, or an error (`store`: the tracking store's or its disk's -- out of
    reach, full, read-only -- not the code's)."""

    interrupted: KeyboardInterrupt | None = None
    error: Exception | None = None
    store: bool = False


@contextlib.contextmanager
def captured() -> Iterator[Failure]:
    """Run a block whose every failure is a result to record, not a crash: a sweep's trial (its error makes it
    FAIL and the sweep goes on), a run's artifact upload (its error makes the run FAILED). Ctrl-C is caught too,
    for the caller to record and raise again; so is any error while this process is stopping (a library that
    turned the KeyboardInterrupt into an error of its own)."""
    failure = Failure()
    try:
        yield failure
    except KeyboardInterrupt as exc:
        failure.interrupted = exc
    except Exception as exc:  # the one place a broad except decides: a result, or an interruption
        stop = stopping.requested()
        if stop is not None:
            failure.interrupted = stop
        else:
            failure.error = exc
            failure.store = store_unreachable(exc) or (isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS)


def command(prog: str, body: Callable[[], int | None], *, what: str = "", uri: str | None = None,
            again: str = "", retry: str = "", cleanup: Callable[[], None] | None = None,
            quiet_interrupt: bool = False) -> int:
    """Run a command's body through the table above; return its exit code (0 when it returned None).
    `what` names a usage error (`config`), `uri` the tracking store a failure of MLflow's is about, `again` what
    to say after an interruption (how to resume), `retry` after the store went out of reach; `cleanup` runs
    before a usage error's line, so that a refused command leaves nothing behind; `quiet_interrupt`: an
    interruption is another process's to say (a sweep's worker, stopped by its command)."""
    try:
        code = body() or 0
        stopping.raise_pending()  # a Ctrl-C that Python dropped (it landed in a finalizer) still stops with 130
        return code
    except KeyboardInterrupt as exc:
        if not quiet_interrupt:
            say(f"{prog}: interrupted{again}")
        return stopping.exit_code(exc)
    except SystemExit:
        raise
    except BaseException as caught:
        error = caught.error if isinstance(caught, Refused) else caught
        code, line = _row(prog, error, what=what, uri=uri, again=again, retry=retry)
        if quiet_interrupt and code in (130, 143) and line is not None:
            return code
        if code == 2 and cleanup is not None:
            cleanup()
        if line is None:  # a bug: its traceback, masked, then one line
            for chunk in traceback.format_exception(error):
                sys.stderr.write(mask_secrets(chunk))
            line = f"{prog}: internal error (a bug in gdexp, please report it): {type(error).__name__}: {error}"
        say(line[:2000])
        return code


def _row(prog: str, exc: BaseException, *, what: str, uri: str | None, again: str, retry: str
         ) -> tuple[int, str | None]:
    """(exit code, line) for an exception; line None for a bug."""
    stop = stopping.requested()
    if stop is not None:
        return stopping.exit_code(stop), f"{prog}: interrupted{again}"
    label = f"{what} error: " if what else ""
    if isinstance(exc, UsageError):
        return 2, f"{prog}: {label}{_first(exc)}"
    from gdexp.config._errors import explain

    explained = explain(exc, CONFIG_DIR, sys.argv[1:])  # the command line: what Hydra's error leaves out
    if explained is not None:
        return 2, f"{prog}: {label}{_first(explained)}"
    if _mlflow(exc) or _database(exc):
        where = f" at tracking.uri={uri}" if uri else ""
        from gdexp import compat

        said = compat.database_reason(str(exc)) or _first(exc)
        return 1, (f"{prog}: the MLflow store{where} failed (after MLflow's own bounded retries): "
                   f"{said[:500]}{_full_disk(uri)}{retry if store_unreachable(exc) else ''}")
    if isinstance(exc, sqlite3.Error):  # a SQLite store written to directly (a new store made from MLflow's schema)
        return 1, f"{prog}: the SQLite store could not be written: {_first(exc)}"
    if isinstance(exc, OSError):
        # a copy or a rename names both ends, the source first: a full disk is the destination's, so say both
        path = f"{exc.filename2} (from {exc.filename})" if exc.filename2 else str(exc.filename or "")
        reason = exc.strerror or str(exc)
        if exc.errno in INPUT_ERRNOS:
            return 2, f"{prog}: cannot use {path or 'a file'}: {reason}" + (
                " (gdexp writes mlruns/ and sweeps/ in the folder it runs in)" if exc.errno == errno.EROFS else "")
        return 1, f"{prog}: cannot write {path or 'a file'}: {reason}"
    if isinstance(exc, MemoryError):
        return 2, f"{prog}: not enough memory for this run ({_first(exc) or 'MemoryError'}): make it smaller"
    return 1, None


def _database(exc: BaseException) -> bool:
    """A database error that reached gdexp without MLflow's wrapping (SQLAlchemy's, raised while MLflow opens
    its store)."""
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    return bool(sqlalchemy is not None and isinstance(exc, sqlalchemy.DBAPIError))


def _full_disk(uri: str | None) -> str:
    """What SQLite words as `disk I/O error` when it cannot even make its journal: the disk holding the store
    is full. Said when the store is a local SQLite file whose disk has under 1 MB free."""
    if not uri or not uri.startswith("sqlite:///"):
        return ""
    import shutil
    from pathlib import Path

    try:
        free = shutil.disk_usage(Path(uri.removeprefix("sqlite:///")).parent).free
    except OSError:
        return ""
    return f"; the disk holding it is full ({free // 1024} kB free)" if free < 2**20 else ""


def _mlflow(exc: BaseException) -> bool:
    mlflow = sys.modules.get("mlflow.exceptions")
    return bool(mlflow is not None and isinstance(exc, mlflow.MlflowException)) or store_unreachable(exc)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
