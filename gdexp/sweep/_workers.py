"""Local workers: forked after the imports, before any connection opens; each runs the same trial loop."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution

from gdexp import stopping
from gdexp.sweep._study import Sweep


class Workers:
    """The `sweep.n_workers - 1` local workers beside this process (worker 0).

    They are forked before this process opens the study's storage or the MLflow store, so no
    connection is shared, and after it imported what a trial needs, so they inherit the imports: a
    spawned worker spent ~3 s importing before its first trial. Each waits for the parent run's id
    (None: nothing to do), then runs trials like any other worker.
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution],
                 deadline: float | None) -> None:
        n = cfg.sweep.n_workers
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.lock: Any = None
        self.threads: int | None = None  # alone: train.threads decides
        if n == 1:
            return
        import matplotlib.figure  # noqa: F401 -- imported here once, inherited by every worker
        import mlflow.tracking  # noqa: F401

        ctx = multiprocessing.get_context("fork")
        self.lock = ctx.Lock()
        self.threads = max(1, (os.cpu_count() or 1) // n)
        for i in range(1, n):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"gdexp-sweep-worker-{i}",
                               args=(cfg, overrides, space, i, self.threads, self.lock, receive, deadline))
            proc.start()
            receive.close()
            self.procs.append(proc)
            self.pipes.append(send)

    def start(self, parent_run_id: str | None) -> None:
        for pipe in self.pipes:
            pipe.send(parent_run_id)
            pipe.close()

    def run(self, sweep: Sweep, deadline: float | None, on_trial: Callable[[], None]) -> None:
        """This process is worker 0: it runs trials beside the forked ones."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):
            sweep.work(deadline, on_trial=on_trial)

    def stop(self, *, interrupt: bool) -> None:
        """Wait for the workers; on an interruption first pass it on (each closes its own trial)."""
        for pipe in self.pipes:
            if not pipe.closed:
                pipe.close()  # a worker still waiting for the parent run's id gets EOF and ends
        for proc in self.procs:
            if interrupt and proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in self.procs:
            proc.join(timeout=60 if interrupt else None)


def _worker_main(cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution], worker: int,
                 threads: int, lock: Any, receive: Any, deadline: float | None) -> None:
    """A forked worker: its own BLAS thread share, its own storage and MLflow connections, the same study."""
    from threadpoolctl import threadpool_limits

    stopping.install(once=True)
    threadpool_limits(threads)
    try:
        parent_run_id = receive.recv()
        if parent_run_id is None:
            return
        Sweep(cfg, overrides, worker=worker, lock=lock, parent_run_id=parent_run_id, space=space).work(deadline)
    except (KeyboardInterrupt, EOFError):
        pass
