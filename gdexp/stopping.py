"""How a gdexp command stops: SIGTERM is taken like Ctrl-C.

`kill`, job schedulers and `docker stop` send SIGTERM, whose default ends a process at once: its MLflow
runs would stay RUNNING for ever, and the child processes of a server it started would be left behind.
`take_sigterm()` turns SIGTERM into `Terminated`, a KeyboardInterrupt, so the close-out paths Ctrl-C
already runs (flush, end runs KILLED, stop workers and servers) run for it too.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["Terminated", "exit_code", "take_sigterm"]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives (after `take_sigterm()`)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def take_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (forked workers inherit this)."""
    signal.signal(signal.SIGTERM, _raise)


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
