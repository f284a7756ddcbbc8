"""Which process, on which machine, and is it still there: what a process id means, and what it does not.

A process id means something only on its own host, boot and PID namespace, and ids are recycled: a process is
known by all of these and its start time (`/proc/<pid>/stat`). A sweep's trials name their owner so (`sweep`'s
reapers); a single run names its process in the tag `gdexp.process`, so that the next run on the store can close
one whose process died without ending it (SIGKILL, the machine's power): no run stays RUNNING for ever.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

__all__ = ["gone_here", "identity", "machine", "proc_stat", "process_gone", "process_start"]


@functools.cache
def machine() -> tuple[str, str, int]:
    """(host name, boot id, PID namespace inode) of this process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    return socket.gethostname(), boot, pidns


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent's pid, start time in clock ticks since boot) of process `pid` of this PID namespace, read
    from `/proc/<pid>/stat`; None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (`proc_stat`), or None when there is none, or it is a zombie (dead, not yet
    reaped by its parent: `kill(pid, 0)` would still succeed)."""
    found = proc_stat(pid)
    return None if found is None or found[0] == "Z" else found[2]


def identity() -> str:
    """This process as a tag value: `host boot pidns pid start`."""
    host, boot, pidns = machine()
    pid = os.getpid()
    return f"{host} {boot} {pidns} {pid} {process_start(pid) or 0}"


def gone_here(host: str, boot: str, pidns: int, pid: int, start: int) -> bool | None:
    """Is that process gone (its pid free, a zombie, or another process's)? None where this process cannot know:
    another host, boot or PID namespace, or no boot id to tell boots apart."""
    if (host, boot, pidns) != machine() or not boot:
        return None
    return process_start(pid) != start


def process_gone(named: str) -> bool:
    """Is the process an `identity()` names gone? Only where that can be known (`gone_here`; elsewhere, or for a
    value that is no identity, False: another machine's process may be alive)."""
    parts = named.split()
    if len(parts) != 5 or not all(p.isdigit() for p in parts[2:]):
        return False
    return bool(gone_here(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
