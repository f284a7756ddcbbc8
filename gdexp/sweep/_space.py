"""The search space: Hydra's sweep syntax -> Optuna distributions; samplers and pruners by their Optuna names."""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from gdexp import data
from gdexp.config import CONFIG_DIR, ConfigError, as_dict, close_match, flatten, validate
from gdexp.config._errors import explain
from gdexp.sweep._samplers import make_sampler


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
            raise ConfigError(f"{where}: {key} is not a key of the config (nor a config group){_near(str(key), cfg)}")
        if isinstance(spec, str):
            text = spec
        elif isinstance(spec, list):
            text = f"choice({','.join(map(str, spec))})"
        else:
            raise ConfigError(f"{where}={spec!r} is not a search space: use interval(), choice() or range() (a fixed "
                              f"value is set on the key itself: {key}={spec!r})")
        try:
            value = parser.parse_override(f"{key}={text}").value()
        except HydraException as exc:  # a parse error, or a grammar function refusing its arguments (`choice()`)
            raise ConfigError(f"{where}={text!r} cannot be parsed: {str(exc).splitlines()[0]}") from exc
        space[str(key)] = _distribution(where, value)
    if not space:
        raise ConfigError("sweep.params is empty: give at least one key to search")
    return space

def _near(key: str, cfg: DictConfig) -> str:
    """What `key` was likely meant to be: its node's keys, and the nearest of them (`optim.momentumm`)."""
    node, _, leaf = key.rpartition(".")
    held = OmegaConf.select(cfg, node, default=None) if node else cfg
    if not isinstance(held, DictConfig):  # no such node (`optimm.lr`): the nearest group
        return close_match(key.partition(".")[0], [str(k) for k in cfg])
    keys = [str(k) for k in held if isinstance(held.get(k), (int, float, str, bool))]  # what a space can search
    return f": the keys of {node or 'the config'} are {', '.join(keys)}{close_match(leaf, keys)}" if keys else ""


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
        if value.step == 0:  # Hydra's range() would raise a bare ValueError
            raise ConfigError(f"{where}: range({value.start}, {value.stop}, 0) has a step of 0: give a step other "
                              "than 0 (or leave it out: 1)")
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

def warmup(epochs: int) -> int:
    """The epochs the median and percentile pruners wait before they judge: a third of the run (at least two). A
    curve stopped after an epoch or two says little about where it was going, and the regime labels read each
    pruned run's curve up to where it stopped."""
    return max(2, epochs // 3)


def first_report(name: str, epochs: int) -> int | None:
    """The first epoch whose value the pruner reads (None: it reads none). A report is a write to the study's
    storage, so the epochs before a pruner's warm-up are not reported."""
    return None if name == "none" else warmup(epochs) if name in ("median", "percentile") else 1


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner `sweep.pruner` names (its Optuna name); median and percentile wait `warmup(epochs)`."""
    wait = warmup(epochs)
    makers: dict[str, Any] = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=wait),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=wait),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    return makers[name]()


class TrialConfigs:
    """The composed config of each trial: the sweep's own config with the sampled values set. A trial that
    searches a config group (`gd`) needs that group's option composed anew, with its own keys; Hydra composes
    it once per distinct choice of the groups, and every trial after that is a copy with values set."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str]) -> None:
        self.cfg, self.overrides = cfg, list(overrides)
        self._bases: dict[tuple[tuple[str, str], ...], DictConfig] = {}

    def of(self, params: Mapping[str, Any]) -> DictConfig:
        """The trial's config; `ConfigError` naming the key when a value does not fit its type."""
        groups = tuple(sorted((k, str(v)) for k, v in params.items() if (CONFIG_DIR / k).is_dir()))
        if groups not in self._bases:
            if groups:
                from hydra import compose

                chosen = dict(groups)
                kept = [o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") not in chosen]
                self._bases[groups] = compose(config_name="config", overrides=kept + [f"{k}={v}" for k, v in groups])
            else:
                self._bases[groups] = self.cfg
        trial = copy.deepcopy(self._bases[groups])
        for key, value in params.items():
            if (CONFIG_DIR / key).is_dir():
                continue
            try:
                OmegaConf.update(trial, key, value, merge=False)
            except ValidationError as exc:
                raise ConfigError(f"{key}={value!r} is not allowed: {str(exc).splitlines()[0]}") from exc
        return trial

    def shared(self, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
        """The values every trial of this command trains with (dotted keys): the config less what the sweep
        searches and less `FREE`. Two commands with the same values run trials that compare as siblings."""
        searched = tuple(space)
        flat = flatten(as_dict(self.cfg))
        return {k: v for k, v in flat.items()
                if k in KEPT or (not _under(k, FREE) and not _under(k, searched))}


# what a command may change on a study it resumes or extends: how long, where and by how many workers it runs,
# how trials are sampled and pruned, what is tracked and measured of each and how it is labelled (the labels of
# all the study's runs are written again at its end), and where data is fetched to. `KEPT`: what the values mean
FREE = ("sweep", "tracking", "diagnostics", "regimes", "train.progress", "train.threads", "data.cache_dir",
        "data.timeout_s", "data.urls")
KEPT = ("sweep.metric", "sweep.direction")
SHARED_ATTR = "gdexp_trial_config"  # the study's user attribute: `TrialConfigs.shared` of the command that made it


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def same_trials(study: optuna.Study, shared: Mapping[str, Any]) -> None:
    """Record what the study's trials share when it has none yet; refuse (`ConfigError`, before any trial
    runs) a command that would add trials of another config: the study would mix, say, Adam full-batch runs
    with the SGD mini-batch runs it holds, label them as siblings, and its parent run would describe the
    first config only. Call it under the study's lock. A study an older gdexp made, which kept no record,
    is not checked."""
    before = study.user_attrs.get(SHARED_ATTR)
    if before is None:
        if not study.get_trials(deepcopy=False):
            study.set_user_attr(SHARED_ATTR, dict(shared))
        return
    changed = [k for k in sorted(shared.keys() & before.keys()) if shared[k] != before[k]]
    if changed:
        def values(of: Mapping[str, Any]) -> str:
            shown = ", ".join(f"{k}={'null' if of[k] is None else of[k]}" for k in changed[:6])
            return shown + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")

        name = study.study_name
        raise ConfigError(f"study {name!r} holds trials run with {values(before)}, not {values(shared)}: to "
                          f"resume or extend it, leave these as they were; for a new study, name it "
                          f"(sweep.name={name}-2, say)")


def _corners(dist: BaseDistribution) -> list[Any]:
    """The values that bound a distribution: both ends of a range, every choice."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert isinstance(dist, FloatDistribution | IntDistribution)
    return [dist.low, dist.high]


def validate_sweep(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, BaseDistribution]:
    """Parse the search space and check all of it before anything exists: every bound and every choice,
    composed into a trial's config, must pass `config.validate` (a learning rate of -1 or inf, a hidden
    size of 0, a GD variant nobody has); the data set must load, and hold what `sweep.metric` reads. The
    `sweep.*` keys themselves are checked by `config.validate`. The data stays loaded for the trials."""
    s = cfg.sweep
    space = checked_space(cfg, overrides)
    loaded = data.load(cfg.data, cfg.train.dtype)
    if s.metric.startswith("val_") and len(loaded.X_val) == 0:
        raise ConfigError(f"sweep.metric={s.metric} needs a validation split: data.val_fraction="
                          f"{cfg.data.val_fraction} leaves none")
    if s.metric.endswith("_accuracy") and loaded.task == "regression":
        raise ConfigError(f"sweep.metric={s.metric} is not allowed on a regression task: choose val_loss or "
                          "train_loss")
    return space


def checked_space(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, BaseDistribution]:
    """`validate_sweep` but the data: the search space and the sweep's settings, from the config alone (a
    multirun checks each of its sweeps so before the first one runs, `gdexp.config.JobsChecked`)."""
    s = cfg.sweep
    space = parse_space(s.params, cfg)
    configs = TrialConfigs(cfg, overrides)
    for key, dist in space.items():
        for value in _corners(dist):
            try:
                validate(configs.of({key: value}))
            except (ConfigError, ConfigCompositionException, MissingConfigException) as exc:
                found = exc if isinstance(exc, ConfigError) else explain(exc, CONFIG_DIR)
                raise ConfigError(f"sweep.params.{key} reaches {value!r}, which is not allowed: {found}") from exc
    if s.sampler == "grid":
        make_sampler("grid", 0, space)
        points = math.prod(len(dist.choices) for dist in space.values() if isinstance(dist, CategoricalDistribution))
        if s.n_trials > points:  # past the grid, Optuna's sampler runs its points again, at random
            raise ConfigError(f"sweep.n_trials={s.n_trials} is more than the grid's {points} points (sweep.sampler="
                              f"grid runs each once): give sweep.n_trials={points}, or fewer")
    best = "maximize" if s.metric.endswith("_accuracy") else "minimize"
    if s.direction != best:
        raise ConfigError(f"sweep.direction={s.direction} with sweep.metric={s.metric} searches for the worst run: "
                          f"give sweep.direction={best}")
    if s.sampler == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError("sweep.sampler=gp needs PyTorch, which Optuna's GPSampler runs on: "
                          "pip install torch==2.13.0 (or pip install -e '.[bench]'), or choose tpe, random, cmaes, qmc")
    return space
