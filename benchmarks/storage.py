"""Which study storage when: trials per minute with 1, 2 and 4 workers on PostgreSQL, the bookkeeping
cost of one trial (Optuna + MLflow) on SQLite, journal and PostgreSQL storages, and how it grows with
the study's size.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from gdexp.config import database_url

ROOT = Path(__file__).resolve().parents[1]
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
        storage = optuna.storages.RDBStorage(database_url(storage))
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
        print("Sweep throughput on PostgreSQL (digits, 5 epochs, MLflow on SQLite):")
        for workers in (1, 2, 4):
            with pg_database(args.pg) as url:
                rate = throughput(url, workers, args.trials, folder)
            print(f"  {workers} worker(s): {rate:6.1f} trials/min")


if __name__ == "__main__":
    main()
