"""How much of a sweep's wall time is training, and how much 2 local workers gain over 1.

    python benchmarks/sweep.py [--trials 20] [--epochs 15] [--repeat 2]

Runs the user's command `python -m gdexp +sweep=lr` (digits, defaults of conf/sweep/lr.yaml, pruning
off so every trial trains its full epochs) in a fresh folder, once with one worker and once with two,
and reads every trial's `train_time_s` back from the MLflow store. Training share = the sum of the
trials' training times / the command's wall time (start-up, Optuna, MLflow, plots make the rest).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(folder: Path, workers: int, trials: int, epochs: int) -> tuple[float, float]:
    """(wall seconds of the command, summed training seconds of its trials)."""
    from mlflow.tracking import MlflowClient

    name = f"bench{workers}"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.name={name}", f"sweep.n_trials={trials}",
                    f"sweep.n_workers={workers}", f"train.epochs={epochs}", "sweep.pruner=none"],
                   cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - began
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gdexp")
    runs = client.search_runs([exp.experiment_id], f"tags.`optuna.study` = '{name}'",
                              max_results=10000)
    runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return wall, sum(r.data.metrics.get("train_time_s", 0.0) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=2, help="alternate 1 and 2 workers this often; keep the best")
    args = parser.parse_args()
    ones, twos = [], []
    for _ in range(args.repeat):  # alternated, so that a slower spell of a shared machine hits both alike
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            sweep(folder, 1, 1, 1)  # make the MLflow store once, so neither timed run pays for its migrations
            ones.append(sweep(folder, 1, args.trials, args.epochs))
            twos.append(sweep(folder, 2, args.trials, args.epochs))
    (wall1, train1), (wall2, train2) = min(ones), min(twos)
    print(f"{args.trials} trials x {args.epochs} epochs on digits, {os.cpu_count()} cores, "
          f"best of {args.repeat} (1-worker walls {', '.join(f'{w:.1f}' for w, _ in ones)} s; "
          f"2-worker {', '.join(f'{w:.1f}' for w, _ in twos)} s)")
    print(f"1 worker : wall {wall1:6.1f} s, training {train1:6.1f} s, training share {train1 / wall1:.0%}, "
          f"overhead {(wall1 - train1) / args.trials:.2f} s per trial (start-up included)")
    print(f"2 workers: wall {wall2:6.1f} s, training {train2:6.1f} s (summed over both), "
          f"speed-up over 1 worker {wall1 / wall2:.2f}x")


if __name__ == "__main__":
    main()
