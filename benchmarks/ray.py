"""Ray workers against local ones: the same 20-trial sweep with `sweep.launcher=ray` (2 one-CPU tasks) and
with 1 and 2 local workers.

    python benchmarks/ray.py [--epochs 60] [--repeat 1]

The workload is benchmarks/sweep.py's fixed grid (lr 0.003..0.1 x hidden 32..512, pruning off) on digits with
stochastic GD, whose trials train a few seconds each, so the three launchers train exactly the same trials.
Ray runs on a cluster started once beforehand, as a user's would be: one node with 2 CPUs
(tests/raycluster.py, Ray's cluster utilities), so the fixed cost of starting on Ray (command start to the
first trial's MLflow run, against the same for 1 local worker) is what a sweep pays on a running cluster:
connecting, submitting, and each task's imports. Every command runs in the cluster's loopback-only network
namespace (as root): Ray, left to itself, registers at the eth0 address and probes a public DNS server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from sweep import sweep  # noqa: E402 -- benchmarks/sweep.py, beside this script

from tests.raycluster import RayCluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="stochastic-GD epochs per trial")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the three launchers this often; keep the best")
    args = parser.parse_args()
    workload = ["gd=stochastic", f"train.epochs={args.epochs}"]
    cluster = RayCluster(dict(os.environ, PYTHONPATH=str(ROOT)), cpus=(2,))
    ray = ["sweep.launcher=ray", f"sweep.ray.address={cluster.address}", "sweep.ray.cpus_per_worker=1"]
    launchers = {"local, 1 worker": (1, []), "local, 2 workers": (2, []), "Ray, 2 one-CPU tasks": (2, ray)}
    best: dict[str, tuple[float, ...]] = {}
    try:
        for r in range(args.repeat):  # alternated, so that a slower spell of a shared machine hits all alike
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                sweep(folder, "warm-up", 1, ["train.epochs=1"], cluster.command())  # the store made once, untimed
                for i, (label, (workers, extra)) in enumerate(launchers.items()):
                    got = sweep(folder, f"{r}-{i}", workers, [*workload, *extra], cluster.command())
                    best[label] = min(best.get(label, got), got)
    finally:
        cluster.close()
    wall1, _, _, first1 = best["local, 1 worker"]
    print(f"`python -m gdexp +sweep=lr`, 20-trial grid, digits, gd=stochastic x {args.epochs} epochs, "
          f"{os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'launcher':>22} {'wall':>8} {'training':>9} {'first trial':>11} {'speed-up':>8}")
    for label, (wall, train, _, first) in best.items():
        print(f"{label:>22} {wall:7.1f}s {train:8.1f}s {first:10.1f}s {wall1 / wall:7.2f}x")
    ray_wall, local2 = best["Ray, 2 one-CPU tasks"][0], best["local, 2 workers"][0]
    print(f"Ray / local 2 workers: {ray_wall / local2:.2f}x the wall time; fixed cost of starting on Ray: "
          f"{best['Ray, 2 one-CPU tasks'][3] - first1:.1f} s more to the first trial than 1 local worker")


if __name__ == "__main__":
    main()
