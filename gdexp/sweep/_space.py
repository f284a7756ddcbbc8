"""The search space: Hydra's sweep syntax -> Optuna distributions; samplers and pruners by their Optuna names."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from gdexp.config import (
    CONFIG_DIR,
    ConfigError,
    as_dict,
    flatten,
)


def parse_space(params: Mapping[str, Any], cfg: DictConfig) -> dict[str, BaseDistribution]:
    """`sweep.params` (Hydra sweep syntax) -> Optuna distributions, refusing unknown keys and empty ranges.

    `interval(a, b)` -> float in [a, b]; `int(interval(a, b))` -> integer; `tag(log, ...)` -> log
    scale; `choice(x, y, ...)` -> categorical; `range(a, b[, step])` -> integers (or floats) a, a+step, ...
    A key is a dotted config key (`optim.lr`) or a config group (`gd`).
    """
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    for key, spec in flatten(as_dict(params)).items():  # +sweep.params.optim.momentum=... nests: flatten it
        where = f"sweep.params.{key}"
        is_group = (CONFIG_DIR / str(key)).is_dir()
        if not is_group and OmegaConf.select(cfg, str(key), default=KeyError) is KeyError:
            raise ConfigError(f"{where}: {key} is not a key of the config (nor a config group)")
        text = spec if isinstance(spec, str) else f"choice({','.join(map(str, spec))})"
        try:
            value = parser.parse_override(f"{key}={text}").value()
        except Exception as exc:
            raise ConfigError(f"{where}={text!r} cannot be parsed: {exc}") from exc
        space[str(key)] = _distribution(where, value)
    if not space:
        raise ConfigError("sweep.params is empty: give at least one key to search")
    return space

def _distribution(where: str, value: Any) -> BaseDistribution:
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{where}: the interval ({low}, {high}) is empty")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log-scale interval needs a lower bound > 0, got {low}")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, RangeSweep):
        values = list(value.range())
        if not values:
            raise ConfigError(f"{where}: range({value.start}, {value.stop}, {value.step}) is empty")
        return CategoricalDistribution(values)
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise ConfigError(f"{where}: choice() is empty")
        return CategoricalDistribution(list(value.list))  # type: ignore[arg-type]
    raise ConfigError(f"{where}={value!r} is not a search space: use interval(), choice() or range()")

def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)

def make_sampler(name: str, seed: int, space: Mapping[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
    if name == "grid":
        grid = {}
        for key, dist in space.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ConfigError(f"sweep.sampler=grid needs choice() or range() for every key; sweep.params.{key} "
                                  "is an interval")
            grid[key] = list(dist.choices)
        return optuna.samplers.GridSampler(grid, seed=seed)
    makers: dict[str, Any] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
    }
    return makers[name]()

def make_pruner(name: str) -> optuna.pruners.BasePruner:
    makers: dict[str, Any] = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=2),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    return makers[name]()

def validate_sweep(cfg: DictConfig) -> dict[str, BaseDistribution]:
    """Parse and check the search space (the `sweep.*` keys themselves are checked by `config.validate`)."""
    s = cfg.sweep
    space = parse_space(s.params, cfg)
    if s.sampler == "grid":
        make_sampler("grid", 0, space)
    if s.sampler == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError("sweep.sampler=gp needs PyTorch, which Optuna's GPSampler runs on: "
                          "pip install torch==2.13.0 (or pip install -e '.[bench]'), or choose tpe, random, cmaes, qmc")
    return space
