"""The cost of recording the trajectory (`diagnostics.trajectory=true`), as a ratio to the same run without it.

    python benchmarks/trajectory.py [--repeat 5]

The runs are `+sweep=landscape`'s just-right ones (the seeds' linear regression for 20 epochs and the 16-unit digits
MLP for 100; batch, mini-batch and stochastic GD) and the default `python -m gdexp` run (digits, 64 ReLU units,
mini-batch 32, 30 epochs), with tracking and the progress bar off. Each repeat runs a config once without and once
with the `Trajectory` callback, in alternating order, so that a slower spell of a shared machine hits both alike.
Printed: the overhead, best wall time with / best without − 1 (whole `train.run` calls, the data set cached); the
recording inside the loop (the callback time, `callback_time_s`, of the runs with it: copying the weights after an
epoch or an update) and the plane, path losses and grid at the end (`trajectory_time_s` less that), each over the
run's training time (`train_time_s`, best of the runs without), the latter also in seconds; and the points
recorded. Off, the trajectory costs
nothing by construction: `callbacks_for` adds no callback, and the loop's only trace of it is one integer comparison
per update (`Callback.watched_updates`).
"""

from __future__ import annotations

import argparse
import time

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gdexp import train
from gdexp.config import CONFIG_DIR
from gdexp.trajectory import Trajectory

CASES = [  # (name, overrides): the landscape sweep's just-right runs, then the default run
    ("linear, batch, lr 0.5", ["+landscape=linear", "gd=batch", "optim.lr=0.5"]),
    ("linear, minibatch, lr 0.5", ["+landscape=linear", "gd=minibatch", "optim.lr=0.5"]),
    ("linear, stochastic, lr 0.03", ["+landscape=linear", "gd=stochastic", "optim.lr=0.03"]),
    ("digits h16, batch, lr 0.5", ["+landscape=digits", "gd=batch", "optim.lr=0.5"]),
    ("digits h16, minibatch, lr 0.5", ["+landscape=digits", "gd=minibatch", "optim.lr=0.5"]),
    ("digits h16, stochastic, lr 0.03", ["+landscape=digits", "gd=stochastic", "optim.lr=0.03"]),
    ("default run (digits h64, minibatch)", []),
]


def measure(cfg: DictConfig, repeat: int) -> dict[str, float]:
    walls: dict[bool, list[float]] = {True: [], False: []}
    trains, inside, total, points = [], [], [], 0
    for r in range(repeat):
        for recorded in ((False, True) if r % 2 == 0 else (True, False)):
            callback = Trajectory()
            began = time.perf_counter()
            history = train.run(cfg, [callback] if recorded else [])
            walls[recorded].append(time.perf_counter() - began)
            if recorded:
                inside.append(history.final["callback_time_s"])
                total.append(history.final["trajectory_time_s"])
                points = len(history.artifacts["trajectory"]["path"])
            else:
                trains.append(history.final["train_time_s"])
    best = min(trains)
    end = min(t - i for t, i in zip(total, inside, strict=True))
    return {"overhead": min(walls[True]) / min(walls[False]) - 1, "without": min(walls[False]),
            "inside": min(inside) / best, "end": end / best, "end_s": end, "train": best, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.repeat} interleaved repeats; ratios to the run's training time (train_time_s, best without)")
    print(f"{'run':36} {'overhead':>9} {'recording':>10} {'plane+grid':>11} {'(s)':>7} {'train s':>8} {'points':>7}")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        for name, overrides in CASES:
            cfg = compose("config", overrides=["tracking.enabled=false", "train.progress=false", *overrides])
            train.run(cfg)  # loads and caches the data set: no run below pays for it
            c = measure(cfg, args.repeat)
            print(f"{name:36} {c['overhead']:+9.1%} {c['inside']:10.1%} {c['end']:11.1%} {c['end_s']:7.3f} "
                  f"{c['train']:8.3f} {c['points']:7.0f}   (run without: {c['without']:.3f} s)")


if __name__ == "__main__":
    main()
