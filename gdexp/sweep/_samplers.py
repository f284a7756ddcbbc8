"""Samplers by their Optuna names, seeded so that processes sharing a study do not suggest the same points.

A sampler seeded once per process gives two commands that join one study at the same moment the same
suggestions: each sees the same finished trials and draws from the same random stream, so one point would be
evaluated twice. So TPE, random and GP sampling are made afresh for every trial, seeded by (`train.seed`, the
trial's place in the sweep: `_record.place`, its number less the reruns before it; a rerun of an interrupted or
lost trial takes its original's place and point). No two new trials share a place, so every process draws from
its own stream; and one process alone makes the same suggestions for the same config and seed, however often the
sweep is stopped and resumed: the finished trials a resumed sweep's sampler sees, and its seed, are those of the
uninterrupted sweep. The others keep one seed, which must be the same in every process: grid sampling
shuffles its grid by it and gives trial n the n-th point (a rerun keeps its original's point, and the points
left over go to the trials past the grid's size); CMA-ES mixes the trial number into its own draws;
QMC keeps its place in the sequence in the study, under a key that holds the seed. Their independent sampler
(first trials, keys outside the relative search space) is per trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from gdexp.config import ConfigError
from gdexp.sweep._record import place, study_records

__all__ = ["TrialSeeded", "make_sampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s sampler: independent streams for neighbouring numbers (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0] % (2**31))


class TrialSeeded(BaseSampler):
    """`make(seed)` afresh for each trial, seeded by `trial_seed(seed, place)` (`_record.place`); every call is passed
    on."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(trial_seed(self._seed, place(study_records(study), trial.number)))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its end-of-grid `study.stop()`: that call only works inside
    `Study.optimize`, and gdexp's workers claim trials themselves and stop when the study holds
    `sweep.n_trials` (a grid of that size is then visited once)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Nothing to do after a trial: the claiming loop decides when the study is done."""


def make_sampler(name: str, seed: int, space: Mapping[str, BaseDistribution]) -> BaseSampler:
    """The sampler `sweep.sampler=name` names, for the search space `space`, from the base seed `seed`."""
    def per_trial() -> BaseSampler:
        return TrialSeeded(lambda s: optuna.samplers.RandomSampler(seed=s), seed)

    if name == "grid":
        grid = {}
        for key, dist in space.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ConfigError(f"sweep.sampler=grid needs choice() or range() for every key; sweep.params.{key} "
                                  "is an interval")
            grid[key] = list(dist.choices)
        return GridSampler(grid, seed=seed)
    makers: dict[str, Callable[[], BaseSampler]] = {
        "tpe": lambda: TrialSeeded(lambda s: optuna.samplers.TPESampler(seed=s), seed),
        "random": per_trial,
        "gp": lambda: TrialSeeded(lambda s: optuna.samplers.GPSampler(seed=s), seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=per_trial()),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, independent_sampler=per_trial()),
    }
    return makers[name]()
