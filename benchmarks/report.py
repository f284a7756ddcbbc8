"""`python -m gdexp.report` over a 1,000-run sweep: made here in a fresh SQLite store, then timed.

    python benchmarks/report.py [--runs 1000] [--epochs 20]

The store is filled through MLflow's client with what a real sweep logs per run (params, per-epoch
val_loss and train_loss, final metrics, regime and Optuna tags), under one parent run; then the report
command runs as a user runs it (a new process, imports included) and its wall time is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fill(uri: str, runs: int, epochs: int) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from gdexp.store import ensure_experiment

    client = MlflowClient(tracking_uri=uri)  # MLflow's own costs, measured directly
    exp = ensure_experiment(uri, "gdexp")  # artifacts beside the store, in the temporary folder
    parent = client.create_run(exp, run_name="sweep-big", tags={"gdexp.role": "sweep", "gdexp.sweep": "big"})
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    for i in range(runs):
        lr = float(10 ** rng.uniform(-4, 1))
        variant = ("batch", "minibatch", "stochastic")[i % 3]
        hidden = int(2 ** rng.integers(3, 10))
        start = 2.3
        floor = 0.05 + abs(np.log10(lr) + 0.7) / 4
        curve = floor + (start - floor) * np.exp(-np.arange(1, epochs + 1) * min(1.0, lr * 3))
        regime = "too_small" if lr < 0.03 else "too_large" if lr > 2 else "just_right"
        run = client.create_run(exp, run_name=f"lr{lr:.3g}-h{hidden}-{variant}-sgd", tags={
            "mlflow.parentRunId": parent.info.run_id, "optuna.study": "big", "optuna.trial": str(i),
            "optuna.state": "COMPLETE", "gd.variant": variant, "optimizer": "sgd", "dataset": "digits",
            "diverged": "false", "regime": regime, "regime_reason": "synthetic"})
        metrics = [Metric("val_loss", float(v), now, e + 1) for e, v in enumerate(curve)]
        metrics += [Metric("train_loss", float(v) * 0.9, now, e + 1) for e, v in enumerate(curve)]
        metrics += [Metric(k, v, now, epochs) for k, v in (("initial_val_loss", start), ("val_accuracy", 0.9),
                                                            ("test_accuracy", 0.9), ("test_loss", float(curve[-1])),
                                                            ("epochs_run", float(epochs)), ("train_time_s", 0.5))]
        params = [Param(k, str(v)) for k, v in (
            ("optim.lr", lr), ("gd.variant", variant), ("model.hidden_size", hidden), ("optim.name", "sgd"),
            ("gd.batch_size", 32), ("model.hidden_layers", 1))]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("x", "y")])
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        began = time.perf_counter()
        fill(uri, args.runs, args.epochs)
        print(f"made {args.runs} runs x {args.epochs} epochs in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gdexp.report", "big", "--uri", uri, "--out", f"{tmp}/report"],
                       check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        wall = time.perf_counter() - began
        print(f"python -m gdexp.report over {args.runs} runs: {wall:.1f} s wall (target < 10 s), "
              f"files: {len(list(Path(tmp, 'report').iterdir()))}")


if __name__ == "__main__":
    main()
