"""Is a trial's owner still alive? This process's identity, the verdict on another's, and the heartbeat.

A trial is claimed with its owner in the same write (`_record.template`), so a RUNNING trial always names the
process that runs it. A reaper judges that process by the surest means it has:

- on its own host, boot and PID namespace: the process table (`/proc`): the owner is gone when its PID is free,
  a zombie, or taken by a process that started at another time (PIDs are recycled);
- on a Ray cluster: the owner's node, which Ray says is alive or not;
- anywhere else (another host, another container): the heartbeat, the time each owner writes on its running
  trial every `sweep.heartbeat_s` seconds; silent for twice that long, it is gone. This compares clocks of two
  hosts: they are assumed to agree to well under `sweep.heartbeat_s` (NTP).

A trial without an owner (made by hand with Optuna's `enqueue_trial`, or by an older gdexp) is judged by its
heartbeat or, without one, by how long ago it was claimed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import optuna

from gdexp import errors
from gdexp.processes import gone_here, machine, process_start
from gdexp.sweep._record import Owner, TrialRecord, write

__all__ = ["Heartbeat", "gone", "me", "ray_nodes_alive"]


def me(ray_node: str | None = None) -> Owner:
    """This process as the owner of a trial it claims now. Its identity is read afresh every time: a forked
    worker is a new process."""
    host, boot, pidns = machine()
    pid = os.getpid()
    return Owner(host, boot, pidns, pid, process_start(pid) or 0, time.time(), ray_node)


def ray_nodes_alive() -> set[str] | None:
    """The ids of the Ray cluster's live nodes, or None where this process is not connected to one."""
    ray = sys.modules.get("ray")  # connected only if imported: never imported for it
    if ray is None or not ray.is_initialized():
        return None
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def gone(record: TrialRecord, *, grace: float, nodes: set[str] | None, now: float | None = None) -> str | None:
    """Why a RUNNING trial's owner is gone, in words, or None while it may be alive (module docstring)."""
    now = time.time() if now is None else now
    owner = record.owner
    if owner is not None and owner.ray_node and nodes is not None and owner.ray_node not in nodes:
        return f"its Ray node {owner.ray_node} is gone"
    if owner is not None:
        verdict = gone_here(owner.host, owner.boot, owner.pidns, owner.pid, owner.start)
        if verdict is not None:  # judged by this machine's process table
            return f"its worker process {owner.pid} on {owner.host} is gone" if verdict else None
    last = max(record.beat or 0.0, owner.at if owner is not None else 0.0)
    if not last:
        return None  # neither an owner nor a beat: Optuna's own RDB heartbeat, or nobody, has to judge it
    if now - last > grace:
        who = f"its worker {owner.label}" if owner is not None else "its worker"
        return f"{who} sent no heartbeat for {now - last:.0f} s (sweep.heartbeat_s={grace / 2:g})"
    return None


class Heartbeat:
    """A thread that writes `beat` on this process's running trial every `interval` seconds. One per worker
    process; `follow(trial_id)` when a trial starts and `follow(None)` before it ends, so a beat never lands on
    a finished trial (a storage refuses that)."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float) -> None:
        self.storage, self.interval = storage, interval
        self._trial: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gdexp-heartbeat", daemon=True)
        self._thread.start()

    def follow(self, trial_id: int | None) -> None:
        with self._lock:
            self._trial = trial_id

    def _beat(self) -> None:
        while not self._wake.wait(self.interval):
            with self._lock:
                if self._trial is None:
                    continue
                with errors.captured():  # a missed beat is no error: the next one, or the trial's end, follows
                    write(self.storage, self._trial, beat=time.time())

    def close(self) -> None:
        self.follow(None)
        self._wake.set()
