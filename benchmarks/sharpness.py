"""The cost of the sharpness diagnostics on the default single run, and how close its numbers are.

    python benchmarks/sharpness.py [--repeat 9] [--every 10 --power-iters 10 --probe-size 512] [--grid]

The default run is `python -m gdexp`'s (digits, 64 ReLU units, mini-batch 32, SGD at lr 0.1, 30 epochs),
with tracking and the progress bar off. Each repeat runs it once without and once with the `Sharpness`
callback, in alternating order, so that a slower spell of a shared machine hits both alike. The overhead is
best-of-repeats wall time with / without − 1, whole `train.run` calls (the measurements, on_begin's
included, are outside `train_time_s`), and beside it the median of the paired ratios. Also shown: the
callback's own time (`sharpness_time_s`, best of the repeats) over the run's training time (best of the runs
without), which a busy machine disturbs least; the Hessian-vector products it took, and its largest
relative error against a converged reference (power iteration to a residual of 1e-10 on the whole
training set) over the measurements (initial one included). The settings are those of
`conf/diagnostics/default.yaml` unless given; when that file has the diagnostics off (`sharpness_every: 0`),
the cost of turning them on with `--every` (10) is measured. `--grid` adds a few other settings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import gdexp.nn.hessian as hessian_module
from gdexp import train
from gdexp.config import CONFIG_DIR
from gdexp.diagnostics import Sharpness

GRID = [(10, 10, 256), (10, 10, 512), (30, 10, 512), (10, 10, 2000), (1, 20, 2000)]


@dataclass
class Cost:
    overhead: float  # best wall time with / best without − 1
    paired: float  # median over the repeats of (with / without − 1)
    inside: float  # best sharpness_time_s / best train_time_s without
    seconds: float  # best sharpness_time_s
    without: float  # best wall time without
    products: int
    error: float  # largest relative error against the converged reference


def counting_products() -> list[int]:
    """Count Hessian-vector products from here on (one list entry per product)."""
    calls: list[int] = []
    plain = hessian_module.Hessian.matvec

    def counted(self: hessian_module.Hessian, v: np.ndarray) -> np.ndarray:
        calls.append(1)
        return plain(self, v)

    hessian_module.Hessian.matvec = counted  # type: ignore[method-assign]
    return calls


def by_epoch(history: train.History) -> dict[int, float]:
    """The measured sharpness by epoch (0: before the first update)."""
    rows = {int(row["epoch"]): row["sharpness"] for row in history.epochs if "sharpness" in row}
    return {0: history.initial["sharpness"], **rows}


def cost(cfg: DictConfig, every: int, iters: int, probe: int, repeat: int, reference: dict[int, float],
         calls: list[int]) -> Cost:
    walls: dict[bool, list[float]] = {True: [], False: []}
    ratios, seconds, trains, error, products = [], [], [], 0.0, 0
    for r in range(repeat):
        timings: dict[bool, float] = {}
        for measured in ((False, True) if r % 2 == 0 else (True, False)):
            callback = Sharpness(every, iters, probe, cfg.train.seed)
            calls.clear()
            began = time.perf_counter()
            history = train.run(cfg, [callback] if measured else [])
            timings[measured] = time.perf_counter() - began
            walls[measured].append(timings[measured])
            if measured:
                products = len(calls)
                seconds.append(history.final["sharpness_time_s"])
                error = max(abs(value / reference[epoch] - 1) for epoch, value in by_epoch(history).items())
            else:
                trains.append(history.final["train_time_s"])
        ratios.append(timings[True] / timings[False] - 1)
    return Cost(min(walls[True]) / min(walls[False]) - 1, statistics.median(ratios), min(seconds) / min(trains),
                min(seconds), min(walls[False]), products, error)


def main() -> None:
    defaults = OmegaConf.load(CONFIG_DIR / "diagnostics" / "default.yaml")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--every", type=int, default=defaults.sharpness_every or 10)
    parser.add_argument("--power-iters", type=int, default=defaults.power_iters)
    parser.add_argument("--probe-size", type=int, default=defaults.probe_size)
    parser.add_argument("--grid", action="store_true", help="also measure a few other settings")
    args = parser.parse_args()
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=["tracking.enabled=false", "train.progress=false"])
    calls = counting_products()
    train.run(cfg)  # loads and caches the data set: no run below pays for it
    converged = Sharpness(1, 10_000, 10**9, cfg.train.seed, tol=1e-10)
    reference = by_epoch(train.run(cfg, [converged]))
    off = "" if defaults.sharpness_every else " (off in conf/diagnostics/default.yaml: the cost of turning them on)"
    print(f"default run: digits, 64 ReLU, mini-batch 32, SGD lr 0.1, {cfg.train.epochs} epochs; {args.repeat} "
          f"interleaved repeats{off}")
    print(f"{'every':>5} {'iters':>5} {'probe':>6} {'overhead':>9} {'paired':>7} {'callback/train':>15} "
          f"{'callback ms':>12} {'products':>9} {'max error':>10}")
    settings = [(args.every, args.power_iters, args.probe_size)]
    settings += [s for s in GRID if s != settings[0]] if args.grid else []
    for every, iters, probe in settings:
        c = cost(cfg, every, iters, probe, args.repeat, reference, calls)
        print(f"{every:5d} {iters:5d} {probe:6d} {c.overhead:+9.1%} {c.paired:+7.1%} {c.inside:15.1%} "
              f"{c.seconds * 1e3:12.1f} {c.products:9d} {c.error:10.2%}   (run without: {c.without:.3f} s)")


if __name__ == "__main__":
    main()
