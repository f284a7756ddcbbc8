"""A study journal file: read only when every line of it is a whole record, and opened with a lock that a dead
process cannot hold for ever.

Optuna reads a journal line by line and skips a last line that does not parse; the next record it appends
then follows the broken line, and the file no longer reads at all. So a journal is checked whole before
Optuna sees it: a line that is not a whole record (cut short, garbage) refuses the study, the file is left as
it is, and the message gives the exact command that keeps every record before the broken line.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import optuna

from gdexp import compat, errors
from gdexp.config import ConfigError

__all__ = ["first_broken_line", "open_journal"]

LOCK_GRACE_S = 10  # a journal lock held this long without a write is a dead process's: journal writes take ms


def first_broken_line(path: Path) -> tuple[int, int, bool] | None:
    """(byte offset, 1-based line number, cut: it is the last line and has no newline) of the journal's first
    line that is not a whole JSON record, or None."""
    if not path.is_file():
        return None
    offset = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                whole = line.endswith(b"\n") and isinstance(json.loads(line), dict)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                whole = False
            if not whole:
                return offset, number, not line.endswith(b"\n")
            offset += len(line)
    return None


def open_journal(path: Path) -> optuna.storages.BaseStorage:
    """A journal file storage, or `ConfigError` (the file untouched) when a line of it is not a whole record."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    broken = first_broken_line(path)
    if broken is not None:
        time.sleep(0.5)  # a last line without its newline yet may be another worker's write in progress
        broken = first_broken_line(path)
    if broken is not None:
        offset, line, cut = broken
        what = ("ends in a cut-off record" if cut else
                f"has a line that is not a whole record (line {line}, byte {offset} of {path.stat().st_size})")
        keep = shlex.quote(str(path))
        raise ConfigError(f"sweep.storage: the study journal {path} {what}; it was left as it is. To keep the "
                          f"{line - 1} whole records before it and go on, run: cp {keep} {keep}.broken && "
                          f"truncate -s {offset} {keep}   then the same command again")
    # Optuna's lock is a symlink `<journal>.lock` to the journal path as given: a relative one dangles inside
    # its own folder, so the stale-lock check (the link target's mtime) never fires and a lock left by a
    # killed process spins forever. Absolute, a lock unchanged for LOCK_GRACE_S is broken, with a warning.
    absolute = str(path.resolve())
    compat.quiet_loggers()
    with errors.captured() as failure:  # whole lines that are not a study's records: any error of Optuna's replay
        storage = optuna.storages.JournalStorage(JournalFileBackend(
            absolute, lock_obj=JournalFileSymlinkLock(absolute, grace_period=LOCK_GRACE_S)))
    if failure.interrupted is not None:
        raise failure.interrupted
    if failure.error is not None:
        exc = failure.error
        raise ConfigError(f"sweep.storage: the study journal {path} cannot be read ({type(exc).__name__}: {exc}); "
                          "it was left as it is -- move it away to start the study afresh") from exc
    return storage

