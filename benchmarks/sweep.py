"""How much of a sweep's wall time is training, and how much 2 local workers gain over 1.

    python benchmarks/sweep.py [--epochs 15,150,500] [--sgd-epochs 60] [--mnist-epochs 4,8] [--repeat 2]

Runs the user's command `python -m gdexp +sweep=lr` on a fixed grid of 20 trials (learning rate 0.003,
0.01, 0.03, 0.1 x hidden size 32 to 512; `sweep.sampler=grid`, pruning off), so that one and two workers
train exactly the same trials: on digits with the default mini-batches for each trial length in `--epochs`,
with stochastic GD (one update per example: an epoch does 32 times the Python work of a mini-batch epoch,
and no product is large enough for a second BLAS thread) for each length in `--sgd-epochs`, and on an
MNIST-shaped data set for each length in `--mnist-epochs` (70,000 x 784 random pixels, labels a linear function of them,
written to a temporary .npz and read with `data=file`). It reads every trial's `train_time_s` (the loop's
updates and evaluations) and `callback_time_s` (its per-epoch callbacks: MLflow buffering, Optuna's
report) back from the MLflow store. Training share = the trials' summed training time / the command's
wall time; the rest is start-up, data loading, Optuna, MLflow and plots.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRID = ['sweep.sampler=grid', 'sweep.pruner=none', 'sweep.n_trials=20',
        'sweep.params.optim.lr="choice(0.003, 0.01, 0.03, 0.1)"',
        'sweep.params.model.hidden_size="choice(32, 64, 128, 256, 512)"']


def mnist_shaped(folder: Path) -> list[str]:
    """Write the MNIST-shaped data set; the overrides that train on it."""
    rng = np.random.default_rng(0)
    X = rng.random((70_000, 784), dtype=np.float32)
    y = np.argmax((X - 0.5) @ rng.standard_normal((784, 10)).astype(np.float32), axis=1)
    np.savez(folder / "mnist_shaped.npz", X=X, y=y)
    return ["data=file", f"data.path={folder / 'mnist_shaped.npz'}", f"data.test_fraction={10_000 / 70_000}"]


def sweep(folder: Path, name: str, workers: int, overrides: list[str], prefix: Sequence[str] = ()
          ) -> tuple[float, float, float, float]:
    """(wall seconds of the command, summed training seconds, summed callback seconds of its trials,
    seconds from the command's start to its first trial's MLflow run). `prefix` runs the command inside
    another (a network namespace)."""
    from mlflow.tracking import MlflowClient

    began, start = time.perf_counter(), time.time()
    subprocess.run([*prefix, sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.name={name}",
                    f"sweep.n_workers={workers}", *GRID, *overrides], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - began
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gdexp")
    runs = client.search_runs([exp.experiment_id], f"tags.`optuna.study` = '{name}'", max_results=10000)
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 20, (name, len(trials))
    first = min(r.info.start_time for r in trials) / 1000 - start
    metrics = [r.data.metrics for r in trials]
    return wall, sum(m["train_time_s"] for m in metrics), sum(m["callback_time_s"] for m in metrics), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="15,150,500", help="digits trial lengths in epochs, comma-separated")
    parser.add_argument("--sgd-epochs", default="60", help="digits with gd=stochastic, comma-separated ('': none)")
    parser.add_argument("--mnist-epochs", default="4,8", help="MNIST-shaped trial lengths, comma-separated ('': none)")
    parser.add_argument("--repeat", type=int, default=2, help="alternate 1 and 2 workers this often; keep the best")
    args = parser.parse_args()
    results: dict[str, tuple[list[tuple[float, ...]], list[tuple[float, ...]]]] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        workloads = {f"digits x {e}": [f"train.epochs={e}"] for e in map(int, args.epochs.split(","))}
        for e in (int(e) for e in args.sgd_epochs.split(",") if e):
            workloads[f"digits SGD x {e}"] = ["gd=stochastic", f"train.epochs={e}"]
        mnist = mnist_shaped(Path(data_dir)) if args.mnist_epochs else []
        for e in (int(e) for e in args.mnist_epochs.split(",") if e):
            workloads[f"MNIST-shaped x {e}"] = [*mnist, f"train.epochs={e}"]
        for _ in range(args.repeat):  # alternated, so that a slower spell of a shared machine hits both alike
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                sweep(folder, "warm-up", 1, ["train.epochs=1"])  # the MLflow store made once, untimed
                for i, (label, overrides) in enumerate(workloads.items()):
                    ones, twos = results.setdefault(label, ([], []))
                    ones.append(sweep(folder, f"w1-{i}", 1, overrides))
                    twos.append(sweep(folder, f"w2-{i}", 2, overrides))
    print(f"`python -m gdexp +sweep=lr`, a 20-trial grid (lr 0.003..0.1 x hidden 32..512), pruning off, "
          f"{os.cpu_count()} cores, best of {args.repeat} (1 and 2 workers alternated)")
    print(f"{'data x epochs':>20} {'train/trial':>11} {'1-worker wall':>13} {'training':>9} {'share':>6} "
          f"{'callbacks':>9} {'other/trial':>11} {'2-worker wall':>13} {'training':>9} {'speed-up':>8}")
    for label, (ones, twos) in results.items():
        (wall1, train1, hooks1, _), (wall2, train2, *_) = min(ones), min(twos)
        print(f"{label:>20} {train1 / 20:10.2f}s {wall1:12.1f}s {train1:8.1f}s {train1 / wall1:6.0%} "
              f"{hooks1:8.2f}s {(wall1 - train1) / 20:10.2f}s {wall2:12.1f}s {train2:8.1f}s {wall1 / wall2:7.2f}x")
    print("share = summed training time / wall (1 worker); callbacks = summed per-epoch callback time (part of "
          "the rest); other/trial = (wall - training) / 20, start-up included; training with 2 workers is summed "
          "over both (more than with 1 worker where they slow each other down)")


if __name__ == "__main__":
    main()
