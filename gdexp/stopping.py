"""How a gdexp command stops: SIGTERM is taken like Ctrl-C, a write to a store is never cut in half, and
the exit skips a needless last sweep of memory.

`kill`, job schedulers and `docker stop` send SIGTERM, whose default ends a process at once: its MLflow
runs would stay RUNNING for ever, and the child processes of a server it started would be left behind.
`install()` turns SIGTERM into `Terminated`, a KeyboardInterrupt, so the close-out paths Ctrl-C
already runs (flush, end runs KILLED, stop workers and servers) run for it too.

A KeyboardInterrupt raised in the middle of a database library's code does worse than stop it: SQLAlchemy
may turn it into an error of its own (the sweep would go on), an interrupted SQLite connection may go back to
its pool holding the write lock (every other writer waits), and a lazy import it hits comes out as another
error. So the code that writes to a store runs `shielded()`: a signal
arriving there is raised when the block ends. Only the training loop and waits are `interruptible()` at
once. `requested()` tells, whatever a library did with the exception, that this process is stopping.

A signal handler raises in whatever the main thread runs, and that may be a finalizer or a weakref callback
the garbage collector started (SQLAlchemy's sessions have them): Python prints an exception raised there as
"Exception ignored" and drops it, and the command went on and ended 0. Such an interruption is kept pending
instead (`_unraisable`): raised where the next shielded block ends or interruptible stretch starts, or by
`raise_pending()` as the command's body returns.

`tied_to_this_process()` makes a child (a sweep's forked worker, a server) end with the process that made it,
whatever ends that one, SIGKILL included.

`spare_exit_collection()` spares the interpreter's exit the garbage collections over every object the
imports made (MLflow, SQLAlchemy, Optuna, matplotlib): a noticeable pause at the end of every command.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "exit_at_once", "exit_code", "install", "interruptible", "raise_pending", "reclaim",
           "requested", "shielded", "spare_exit_collection", "tied_to_this_process"]

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives (after `install()`)."""


_first: int | None = None  # the first stop signal this process received: it is stopping
_pending: int | None = None  # a signal not raised yet (it arrived inside a shielded block)
_shield = 0  # depth of shielded blocks around the running code (0: a signal is raised at once)
_once = False  # a sweep worker: signals after the first are ignored


def _interruption(signum: int) -> KeyboardInterrupt:
    return (Terminated if signum == signal.SIGTERM else KeyboardInterrupt)(f"signal {signum}")


def _raise_pending() -> None:
    global _pending
    signum, _pending = _pending, None
    if signum is not None:
        raise _interruption(signum)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _first, _pending
    if _once and _first is not None:
        return
    if _first is None:
        _first = signum
    _pending = signum
    if _shield == 0:
        _raise_pending()


def _unraisable(unraisable: Any) -> None:
    """sys.unraisablehook: an interruption raised where Python drops it (a finalizer, a weakref callback) is
    kept pending rather than printed and lost; anything else goes to the hook that was there before. (Raising
    it, or sending the signal again, from here would land in this hook, which Python drops too.)"""
    global _pending
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _first is not None:
        _pending = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        return
    _hook(unraisable)


def raise_pending() -> None:
    """Raise the interruption not raised yet, if any: where a command's body returns, one that arrived in its last
    unshielded stretch and was dropped (see `_unraisable`)."""
    if _shield == 0:
        _raise_pending()


_hook = sys.unraisablehook


def exit_at_once() -> None:
    """Until `install()`: Ctrl-C or SIGTERM ends the process at once, with one line and the shell's exit code.
    For a command's imports, before it has opened or written anything: a KeyboardInterrupt raised inside an
    import prints a traceback from the middle of a library."""

    def end(received: int, frame: FrameType | None) -> None:
        os.write(2, b"gdexp: interrupted while starting; nothing was done\n")
        os._exit(128 + received)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, end)


def install(*, once: bool = False) -> None:
    """From now on SIGINT and SIGTERM raise KeyboardInterrupt / `Terminated` in the main thread, deferred
    while a shielded block runs. SIGINT stays ignored where the process started with it ignored (a shell's
    background job). `once`: for a sweep worker, whose close-out a second signal (the group's SIGTERM,
    then the command passing Ctrl-C on) must not cut short: later signals are ignored."""
    global _first, _pending, _shield, _once, _hook
    _first, _pending, _shield, _once = None, None, 0, once
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    if sys.unraisablehook is not _unraisable:
        _hook, sys.unraisablehook = sys.unraisablehook, _unraisable


def reclaim() -> None:
    """Take SIGINT and SIGTERM back after a library set handlers of its own (`ray.init` makes SIGTERM exit
    the process at once), keeping what this process has received so far."""
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, _handle):
        signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run the block whole: a Ctrl-C or SIGTERM arriving inside is raised as the block ends."""
    global _shield
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1
        if _shield == 0:
            _raise_pending()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside a shielded block, a stretch (training, waiting) that a signal may stop at once."""
    global _shield
    outer, _shield = _shield, 0
    try:
        _raise_pending()
        yield
    finally:
        _shield = outer


def requested() -> KeyboardInterrupt | None:
    """The interruption this process received, if any: also when a library caught or wrapped it."""
    return None if _first is None else _interruption(_first)


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), of the first
    signal this process received: a library may re-raise a `Terminated` as a plain KeyboardInterrupt
    (Ray's `ray.wait` does)."""
    return 128 + (signal.SIGTERM if isinstance(requested() or exc, Terminated) else signal.SIGINT)


def tied_to_this_process() -> Callable[[], None]:
    """For a child about to be made: what it runs first, so that it gets SIGTERM when this process ends,
    however it ends (Linux's PR_SET_PDEATHSIG; elsewhere nothing). A child whose parent died before that took
    effect ends at once, having done nothing. libc's `prctl` is looked up here, before the fork: as a Popen
    `preexec_fn` the child runs it between fork and exec, where it should only call."""
    import ctypes

    parent = os.getpid()
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # glibc's; no such call off Linux

    def tie() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(0)

    return tie


def spare_exit_collection() -> None:
    """Call as a command ends, after its work is closed (runs ended, files written): the objects alive
    now are moved out of the collector's reach, so the exit does not walk them. Exit handlers still run
    and objects freed by reference counting are still finalized; what is skipped is only the search for
    reference cycles among objects that the process, about to end, would free anyway."""
    gc.freeze()
