"""Ray workers (`sweep.launcher=ray`): the study's `sweep.n_workers` workers as tasks on a Ray cluster.

Each task runs the loop a local worker runs (`Sweep.work`): pull the next trial from the shared study,
train, record it in MLflow, repeat. Optuna stays the search and MLflow the record; Ray only places the
tasks (`sweep.ray.cpus_per_worker` CPUs each, which is also their BLAS thread count, spread over the
nodes), starts a task again on a surviving node when its process or node died (Ray's task retries), and
delivers this command's Ctrl-C or SIGTERM to every task (`ray.cancel`: a KeyboardInterrupt there), so
each ends its trial's MLflow run KILLED as a local worker does. The trial a dead worker left RUNNING is
failed and retried with the same parameters by whichever worker claims next (`_claim.py`). The tasks write
to the tracking server as this command's user: its MLflow credentials (`CREDENTIALS`) go with them, as task
arguments (Ray's runtime_env would show them in the dashboard), since a node's processes have the variables
of whoever started the node, not of whoever submits.

What a cluster needs is checked before the study or any run exists, each with one line naming the key:
the address answers, Ray is installed, a node has the CPUs a worker asks for, and with more than one node
the study and the runs live where every node reaches them (PostgreSQL, MySQL, Redis or a journal every
node sees; an MLflow server), at an address that means the same server on every host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution

from gdexp import compat, stopping, store
from gdexp.config import CONFIG_DIR, ConfigError, mask_secrets, scheme
from gdexp.sweep._study import POLL_S, Progress, Sweep

RETRIES = 3  # times a worker task is started again after its process or node died (Ray's default for tasks)
STOP_S = 10.0  # after a Ctrl-C, the time the workers get to end their trials' runs; then they are killed
SESSION_TRIES = 5  # Ray Client sessions tried while its proxy fails to start their server (compat)
CONNECT_S = 5.0  # a head that does not accept a connection within this is not there (ray.init would wait minutes)
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")  # read per request


class RayWorkers:
    """`sweep.n_workers` Ray tasks, each a worker of the study; this process only submits them and watches."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution]) -> None:
        self.cfg, self.overrides, self.space = cfg, list(overrides), space
        self.refs: list[Any] = []
        self._stopped = False
        self.ray = _connect(cfg.sweep.ray.address)
        checked = False
        try:
            _check_cluster(cfg, [n for n in self.ray.nodes() if n["Alive"]])
            checked = True
        finally:
            if not checked:  # refused (or interrupted): leave the cluster before saying so
                self.ray.shutdown()

    def start(self, parent_run_id: str | None, deadline: float | None) -> None:
        """Submit the workers (None: the study is complete, there is nothing to run)."""
        if parent_run_id is None:
            return
        cpus = float(self.cfg.sweep.ray.cpus_per_worker)
        task = self.ray.remote(_worker).options(
            num_cpus=cpus, max_retries=RETRIES, retry_exceptions=False, scheduling_strategy="SPREAD",
            name=f"gdexp-sweep-{self.cfg.sweep.name}")
        credentials = {k: os.environ[k] for k in CREDENTIALS if k in os.environ}
        args = (self.cfg, self.overrides, self.space, parent_run_id, deadline, os.getcwd(), max(1, int(cpus)),
                credentials)
        self.refs = [task.remote(i, *args) for i in range(self.cfg.sweep.n_workers)]

    def run(self, sweep: Sweep, deadline: float | None, on_trial: Progress) -> None:
        """Watch the workers until each has ended, refreshing the progress (`sweep` and `deadline` went to
        the tasks). A worker's own error is raised here, as itself (a `ConfigError` stays a one-line error);
        a worker Ray could not keep alive is said in one line, and the others go on."""
        pending = list(self.refs)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            for ref in done:
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayTaskError as exc:
                    raise (exc.cause or exc) from None
                except self.ray.exceptions.RayError as exc:
                    print(f"gdexp: a Ray worker was lost for good (after {RETRIES} restarts): "
                          f"{str(exc).splitlines()[0][:300]}", file=sys.stderr)
            on_trial(sweep.records())

    def stop(self, *, interrupt: bool) -> None:
        """On an interruption, pass it to every worker (each ends its trial's run KILLED), kill those still
        running after STOP_S; then leave the cluster (a Ray instance started for this command ends)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if interrupt and self.refs:
                with stopping.shielded():
                    for ref in self.refs:
                        self.ray.cancel(ref)
                    _, late = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=STOP_S)
                    for ref in late:
                        self.ray.cancel(ref, force=True)
        finally:
            self.refs = []
            self.ray.shutdown()


def _connect(address: str | None) -> Any:
    """`ray`, connected to the cluster at `address` (None: a Ray instance of this command's own)."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("sweep.launcher=ray needs Ray, which is not installed: pip install -e '.[ray]'") from exc
    import logging

    if address not in (None, "auto"):  # ray.init waits minutes for a head that is not there: ask first
        where = urlsplit(address if "://" in address else f"ray://{address}")
        try:
            socket.create_connection((where.hostname or "", where.port or 0), timeout=CONNECT_S).close()
        except OSError as exc:
            raise ConfigError(f"sweep.ray.address={address!r}: no Ray cluster answers there "
                              f"({exc.strerror or exc}); start its head with `ray start --head`") from exc
    local: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    for attempt in range(1, SESSION_TRIES + 1):
        try:
            # None is "local": Ray's own None joins a cluster already running on this machine (or $RAY_ADDRESS's)
            ray.init(address=address or "local", namespace="gdexp", logging_level=logging.ERROR, **local)
            break
        except ConnectionError as exc:  # Ray Client's carries the server's traceback: its first and last lines
            if attempt < SESSION_TRIES and compat.ray_client_session_may_start_again(exc):
                time.sleep(1.0)  # the zombie reaped; a fresh fork of the server
                continue
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            said = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
            raise ConfigError(f"sweep.ray.address={address!r}: {said}") from exc
    stopping.reclaim()  # ray.init makes SIGTERM exit at once: this command closes its runs first
    return ray


def _check_cluster(cfg: DictConfig, nodes: list[dict[str, Any]]) -> None:
    """The rules a cluster imposes, checked before anything is submitted."""
    cpus = float(cfg.sweep.ray.cpus_per_worker)
    most = max((float(n["Resources"].get("CPU", 0)) for n in nodes), default=0.0)
    if cpus > most:
        raise ConfigError(f"sweep.ray.cpus_per_worker={cpus:g} is not allowed: no node "
                          f"of the cluster has that many CPUs (the largest has {most:g})")
    if len(nodes) < 2:
        return
    many = f"with {len(nodes)} Ray nodes"
    uri, storage = str(cfg.tracking.uri), str(cfg.sweep.storage or "")
    if scheme(uri) not in ("http", "https"):
        raise ConfigError(f"tracking.uri={mask_secrets(uri)!r} is not allowed {many}: every node records its "
                          "runs, so give an MLflow server, http(s)://host:port (python -m gdexp.server)")
    kind = scheme(storage)
    if kind == "sqlite":
        raise ConfigError(f"sweep.storage={mask_secrets(storage)!r} is not allowed {many}: a SQLite file is not "
                          "shared safely between machines; use postgresql://..., redis://... or a journal on a "
                          "path every node sees")
    if kind not in ("postgresql", "postgres", "mysql", "redis"):
        _journal_is_shared(Path(storage) if storage else Path("sweeps") / cfg.sweep.name / "study.journal", nodes)
    hosts = {n["NodeManagerAddress"] for n in nodes}
    for key, url in (("tracking.uri", uri), ("sweep.storage", storage)):
        if len(hosts) > 1 and _loopback(url):
            raise ConfigError(f"{key}={mask_secrets(url)!r} is not allowed with Ray nodes on {len(hosts)} hosts: "
                              "a loopback address names a different server on each; give one every host reaches")


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname if "://" in url else None
    if not host:
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _journal_is_shared(journal: Path, nodes: list[dict[str, Any]]) -> None:
    """Does every node see the journal's folder? A probe file written here is looked for on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = journal.resolve().parent
    while not folder.exists():
        folder = folder.parent
    probe = folder / f".gdexp-ray-probe-{uuid.uuid4().hex}"
    probe.touch()
    try:
        look = ray.remote(_sees)
        seen = ray.get([look.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe)) for n in nodes])
    finally:
        probe.unlink()
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise ConfigError(f"sweep.storage: the study journal {journal} is not on a path every Ray node sees "
                          f"({', '.join(blind)} cannot); put it on a shared filesystem, or use postgresql://... "
                          "or redis://...")


def _sees(path: str) -> bool:
    return os.path.exists(path)


def _worker(worker: int, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution],
            parent_run_id: str, deadline: float | None, cwd: str, threads: int, credentials: dict[str, str]) -> None:
    """A Ray task: the worker loop, in the submitting command's folder when this node has it (relative
    paths such as `sweeps/<name>/` and `mlruns/` then mean what they meant there), with the submitting user's
    MLflow credentials in place of the node's own (put back after: the process runs other tasks)."""
    import optuna
    import ray
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from threadpoolctl import threadpool_limits

    if os.path.isdir(cwd):
        os.chdir(cwd)
    store.ask_again()  # this process may have run a task of an earlier command that found the store down
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    own = {k: os.environ.pop(k) for k in CREDENTIALS if k in os.environ}
    os.environ.update(credentials)
    stopping.install(once=True)  # ray.cancel arrives as SIGINT's handler: the trial's run ends KILLED
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # as in the submitting command: its summary says it all
    try:
        with contextlib.ExitStack() as stack:
            if not GlobalHydra.instance().is_initialized():  # a trial that searches a group composes anew
                stack.enter_context(initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None))
            stack.enter_context(threadpool_limits(threads))
            node = ray.get_runtime_context().get_node_id()
            sweep = Sweep(cfg, overrides, parent_run_id=parent_run_id, space=space,
                          placement={"host": socket.gethostname(), "worker": f"ray:{node}"})
            sweep.work(deadline)
            if sweep.store_error is not None:  # the command says it, once
                raise sweep.store_error
    except KeyboardInterrupt:
        pass
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for k in CREDENTIALS:
            os.environ.pop(k, None)
        os.environ.update(own)
