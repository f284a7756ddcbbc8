"""Which study storage when: trials per minute with 1, 2 and 4 workers on PostgreSQL, the bookkeeping
cost of one trial (Optuna + MLflow) on SQLite, journal and PostgreSQL storages, how it grows with
the study's size, and Optuna's bookkeeping on PostgreSQL directly against the same through Optuna's
`GrpcStorageProxy` (a proxy server on 127.0.0.1 in a process of its own; needs grpcio, in the `ray` and
`dev` extras), with 1 and 2 worker processes.

    python benchmarks/storage.py [--sizes 100,1000,10000] [--pg postgresql://postgres@127.0.0.1:5432]

Bookkeeping of one trial, as a gdexp trial does it: Optuna asks (TPE over two parameters), stores three
user attributes, reports 15 epochs, tells; MLflow creates a run, logs ~60 params, 15 epochs x 4 metrics
and the end tags in batches, and ends it. The study-size rows fill a study to that many finished trials
(random sampler, bulk) and then time further trials. Databases are created and dropped here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from gdexp.config import database_url

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the gRPC proxy's
SPACE = {"optim.lr": FloatDistribution(1e-4, 10, log=True), "model.hidden_size": IntDistribution(8, 512, log=True)}


@contextmanager
def pg_database(base: str) -> Iterator[str]:
    import psycopg

    name = f"gdexp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def storages(tmp: Path, pg: str) -> dict[str, Callable[[], object]]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    def journal() -> object:
        return JournalStorage(JournalFileBackend(str(tmp / f"{uuid.uuid4().hex}.journal")))

    def sqlite() -> object:
        return optuna.storages.RDBStorage(f"sqlite:///{tmp / uuid.uuid4().hex}.db")

    return {"journal": journal, "sqlite": sqlite, "postgresql": lambda: pg}


def _rdb(url: str) -> optuna.storages.BaseStorage:
    return optuna.storages.RDBStorage(database_url(url))


def optuna_trial(study: optuna.Study) -> None:
    trial = study.ask(SPACE)
    for key in ("worker", "mlflow_run_id", "lr"):
        trial.set_user_attr(key, "x")
    for epoch in range(1, 16):
        trial.report(1.0 / epoch, epoch)
        trial.should_prune()
    study.tell(trial, 0.5)


def optuna_cost(make: Callable[[], object], sizes: list[int], per: int = 20) -> dict[int, float]:
    """ms per trial at each study size."""
    storage = make()
    if isinstance(storage, str):
        storage = _rdb(storage)
    study = optuna.create_study(study_name="bench", storage=storage,  # type: ignore[arg-type]
                                sampler=optuna.samplers.TPESampler(seed=0), pruner=optuna.pruners.MedianPruner())
    result, have = {}, 0
    for size in sizes:
        filler = [create_trial(params={"optim.lr": 0.1, "model.hidden_size": 64}, distributions=SPACE, value=1.0,
                               state=TrialState.COMPLETE) for _ in range(size - have)]
        study.add_trials(filler)
        have = size
        began = time.perf_counter()
        for _ in range(per):
            optuna_trial(study)
        have += per
        result[size] = (time.perf_counter() - began) / per * 1000
    return result


def mlflow_cost(uri: str, per: int = 20) -> float:
    """ms per trial of MLflow bookkeeping on one store."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from gdexp.store import ensure_experiment

    client = MlflowClient(tracking_uri=uri)  # MLflow's own costs, measured directly
    exp = ensure_experiment(uri, f"bench-{uuid.uuid4().hex[:6]}")  # artifacts beside the store
    now = int(time.time() * 1000)
    began = time.perf_counter()
    for i in range(per):
        run = client.create_run(exp, tags={"optuna.trial": str(i)})
        client.log_batch(run.info.run_id, params=[Param(f"p{k}", "1") for k in range(60)])
        keys = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
        client.log_batch(run.info.run_id, metrics=[Metric(m, 0.5, now, e) for e in range(1, 16) for m in keys],
                         tags=[RunTag("regime", "just_right"), RunTag("diverged", "false")])
        client.set_terminated(run.info.run_id, "FINISHED")
    return (time.perf_counter() - began) / per * 1000


PROXY_TRIALS = 40  # per worker process


def _serve(url: str, port: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.storages.run_grpc_proxy_server(_rdb(url), host="127.0.0.1", port=port)


def _bookkeeper(url: str, proxy: int | None, name: str, times: Any) -> None:
    """A worker process: `PROXY_TRIALS` trials' Optuna bookkeeping on the study, directly (at `url`) or through the
    proxy on port `proxy`."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = _rdb(url) if proxy is None else optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=proxy)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=os.getpid()))
    times.put(time.time())
    for _ in range(PROXY_TRIALS):
        optuna_trial(study)
    times.put(time.time())


def bookkeeping_rate(url: str, workers: int, *, proxy: int | None) -> float:
    """Trials per minute of Optuna's bookkeeping with `workers` processes (directly, or through the proxy on port
    `proxy`), from the last one's start."""
    import multiprocessing

    name = uuid.uuid4().hex[:8]
    optuna.create_study(study_name=name, storage=_rdb(url))
    ctx = multiprocessing.get_context("spawn")
    times = ctx.Queue()
    procs = [ctx.Process(target=_bookkeeper, args=(url, proxy, name, times)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    stamps = sorted(times.get() for _ in range(2 * workers))
    for proc in procs:
        proc.join()
    return 60 * PROXY_TRIALS * workers / (stamps[-1] - stamps[workers - 1])


def proxy_against_direct(url: str) -> dict[tuple[str, int], float]:
    """{(direct | proxy, workers): trials per minute} on one PostgreSQL database."""
    import multiprocessing
    import socket

    from gdexp.serving import free_port

    rates = {("direct", w): bookkeeping_rate(url, w, proxy=None) for w in (1, 2)}
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(url, port), daemon=True)
    server.start()
    try:
        deadline = time.time() + 60
        while True:  # until the proxy answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        rates.update({("proxy", w): bookkeeping_rate(url, w, proxy=port) for w in (1, 2)})
    finally:
        server.terminate()
        server.join()
    return rates


def throughput(storage: str, workers: int, trials: int, folder: Path) -> float:
    """Trials per minute of `python -m gdexp +sweep=lr` with that many local workers on one PG study."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.storage={storage}", f"sweep.name=w{workers}",
                    f"sweep.n_trials={trials}", f"sweep.n_workers={workers}", "train.epochs=5", "sweep.pruner=none"],
                   cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return trials / (time.perf_counter() - began) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--trials", type=int, default=16, help="trials per throughput run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"MLflow bookkeeping per trial on SQLite: {mlflow_cost(f'sqlite:///{folder}/mlflow.db'):.0f} ms")
        print(f"Optuna bookkeeping per trial (ms) at study size {', '.join(map(str, sizes))}:")
        for name, make in storages(folder, args.pg).items():
            if name == "postgresql":
                with pg_database(args.pg) as url:
                    cost = optuna_cost(lambda url=url: url, sizes)
            else:
                cost = optuna_cost(make, sizes)
            print(f"  {name:<10} " + "  ".join(f"{cost[s]:8.1f}" for s in sizes))
        with pg_database(args.pg) as url:
            rates = proxy_against_direct(url)
        print(f"Optuna's bookkeeping on PostgreSQL, trials/min ({PROXY_TRIALS} per worker process):")
        for how, label in (("direct", "RDBStorage, direct"), ("proxy", "GrpcStorageProxy")):
            one, two = rates[(how, 1)], rates[(how, 2)]
            print(f"  {label:<19} 1 worker {one:6.0f}, 2 workers {two:6.0f} ({two / one:.2f}x)")
        print(f"  the proxy against direct access: {rates[('proxy', 1)] / rates[('direct', 1)]:.2f}x with 1 worker, "
              f"{rates[('proxy', 2)] / rates[('direct', 2)]:.2f}x with 2")
        print("Sweep throughput on PostgreSQL (digits, 5 epochs, MLflow on SQLite):")
        for workers in (1, 2, 4):
            with pg_database(args.pg) as url:
                rate = throughput(url, workers, args.trials, folder)
            print(f"  {workers} worker(s): {rate:6.1f} trials/min")


if __name__ == "__main__":
    main()
