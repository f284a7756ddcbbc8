"""Local workers: forked after the imports, before any connection opens; each runs the same trial loop."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution

from gdexp import errors, stopping, store
from gdexp.sweep._study import Progress, Sweep

__all__ = ["Workers"]

STOP_S = 60.0  # after an interruption, the time the workers get to close their trials' runs


class Workers:
    """The local workers beside this process (worker 0): `min(sweep.n_workers, sweep.n_trials) - 1` of them.

    They are forked before this process opens the study's storage or the MLflow store, so no connection is
    shared, and after it imported what a trial needs, so they inherit the imports. Each waits for the parent
    run's id (None or a closed pipe: nothing to do), then claims trials like any other worker. A worker that
    dies at any instant holds nothing another waits for: claims are serialised by a lock the kernel (or the
    database) releases with its holder (`_locks.py`), and its trial is reaped (`_claim.py`). When this process
    dies (SIGKILL), the kernel sends its workers SIGTERM: each closes its trial's run KILLED and ends, as it
    would on Ctrl-C, rather than go on alone with nobody to show for it.
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution]) -> None:
        n = min(cfg.sweep.n_workers, cfg.sweep.n_trials)
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.threads: int | None = None  # alone: train.threads decides
        self._stopped = False
        if n == 1:
            return
        import matplotlib.figure  # noqa: F401 -- imported here once, inherited by every worker

        store.preload(cfg.tracking.uri)

        ctx = multiprocessing.get_context("fork")
        self.threads = max(1, (os.cpu_count() or 1) // n)
        for i in range(1, n):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"gdexp-sweep-worker-{i}",
                               args=(cfg, overrides, space, self.threads, receive, stopping.tied_to_this_process()))
            proc.start()
            receive.close()
            self.procs.append(proc)
            self.pipes.append(send)

    def start(self, parent_run_id: str | None, deadline: float | None) -> None:
        """Tell every worker the parent run and the deadline; one that died already is skipped (its pipe is
        broken)."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # BrokenPipeError: the worker is gone; the others go on
                pipe.send((parent_run_id, deadline))
            pipe.close()

    def run(self, sweep: Sweep, deadline: float | None, on_trial: Progress) -> None:
        """This process is worker 0: it runs trials beside the forked ones."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):
            sweep.work(deadline, on_trial=on_trial)

    def stop(self, *, interrupt: bool) -> None:
        """Wait for the workers; on an interruption first pass it on (each closes its own trial)."""
        if self._stopped:
            return
        self._stopped = True
        for pipe in self.pipes:
            if not pipe.closed:
                pipe.close()  # a worker still waiting for the parent run's id gets EOF and ends
        for proc in self.procs:
            if interrupt and proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in self.procs:
            proc.join(timeout=STOP_S if interrupt else None)


def _worker_main(cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution], threads: int,
                 receive: Any, tie: Callable[[], None]) -> None:
    """A forked worker: its own BLAS thread share, its own storage and MLflow connections, the same study; it
    ends with the command (`tie`: SIGTERM when the command dies)."""
    from threadpoolctl import threadpool_limits

    stopping.install(once=True)

    def body() -> None:
        # all of it inside the command's table: a signal while the thread limits are set (10-30 ms after the
        # fork) is an interruption, not a traceback from multiprocessing's bootstrap
        tie()
        threadpool_limits(threads)
        try:
            parent_run_id, deadline = receive.recv()
        except EOFError:  # the command ended before it sent one
            return
        if parent_run_id is not None:
            Sweep(cfg, overrides, parent_run_id=parent_run_id, space=space).work(deadline)

    code = errors.command("gdexp: sweep worker", body, quiet_interrupt=True)
    sys.exit(0 if code in (130, 143) else code)  # an interruption is the command's to report
