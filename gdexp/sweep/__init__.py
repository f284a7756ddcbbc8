"""Optuna sweeps: `python -m gdexp +sweep=lr` -- one study, one MLflow parent run, one child run per trial.

The study lives in an Optuna storage (a journal file under `sweeps/<name>/` by default, or any RDB
URL such as `postgresql://...`), so a sweep can be stopped and started again, and several worker
processes or machines can share it. `sweep.n_trials` is the study's total: workers count the trials
already counted (COMPLETE, PRUNED, or FAIL because training raised) and the ones in flight, and only
ask for a new trial while that is short of the total, so the total is exact; a trial interrupted by
Ctrl-C, or whose worker died, does not count and is replaced.

Each trial composes the config with its sampled values as Hydra overrides (a group such as `gd`
can be searched too), trains in-process, reports `sweep.metric` every epoch so pruners work, and
is logged as a child MLflow run tagged `optuna.study`, `optuna.trial` and `optuna.state`. A diverged
trial is COMPLETE with a penalty value (the worst finite value it reached times
`train.divergence_factor`), so the sampler learns from it and the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig

from gdexp import console, stopping
from gdexp.sweep._labels import relabel_siblings
from gdexp.sweep._parent import best_trial, best_value, finish_parent, parent_run, summary_table
from gdexp.sweep._space import parse_space, validate_sweep
from gdexp.sweep._storage import exclusive, open_storage
from gdexp.sweep._study import Sweep
from gdexp.sweep._trials import counted, tally, trial_value
from gdexp.sweep._workers import Workers

if TYPE_CHECKING:
    from gdexp.sweep._ray import RayWorkers

__all__ = ["Sweep", "counted", "open_storage", "parse_space", "relabel_siblings", "run", "tally", "trial_value",
           "validate_sweep"]


def run(cfg: DictConfig, overrides: Sequence[str]) -> float | None:
    """Run (or resume, or join) the study `cfg.sweep` describes; return the best value."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = validate_sweep(cfg, overrides)  # before any worker is forked, any folder or run exists
    deadline = time.time() + cfg.sweep.timeout if cfg.sweep.timeout else None
    workers = _launcher(cfg)(cfg, overrides, space, deadline)
    status = "KILLED"
    sweep: Sweep | None = None
    bar: Any = None
    try:
        sweep = Sweep(cfg, overrides, lock=workers.lock, space=space)
        study, n = sweep.study, cfg.sweep.n_trials
        counts = tally(study.get_trials(deepcopy=False))
        if counts["done"] >= n:
            status = "FINISHED"  # nothing to run: no parent run is reopened, the workers are told to end
            workers.start(None)
            with stopping.shielded():  # by this gdexp's rule, also for a study an older one labelled
                relabel_siblings(cfg, study)
            print(summary_table(cfg, study, sweep.where))
            return best_value(study)
        with stopping.shielded(), exclusive(sweep.storage, cfg, sweep.where):
            sweep.parent_run_id = parent_run(cfg, study)
        workers.start(sweep.parent_run_id)
        bar = console.progress(n, f"sweep {cfg.sweep.name}", "trial", initial=counts["done"])

        def refresh(*_: Any) -> None:
            trials = study.get_trials(deepcopy=False)
            bar.n = min(n, tally(trials).get("done", 0))
            best = best_trial(study)
            if best is not None:
                bar.set_postfix_str(f"best {cfg.sweep.metric}={best.value:.4g} (trial {best.number})", refresh=False)
            bar.refresh()

        workers.run(sweep, deadline, refresh)
        workers.stop(interrupt=False)
        refresh()
        status = "FINISHED"
    finally:
        workers.stop(interrupt=status == "KILLED")
        if bar is not None:
            bar.close()
        if sweep is not None and sweep.parent_run_id is not None:
            with stopping.shielded():  # a second Ctrl-C waits until the parent run is ended
                sweep.reap_stale()
                finish_parent(cfg, sweep.study, sweep.parent_run_id, status)
    print(summary_table(cfg, sweep.study, sweep.where))
    return best_value(sweep.study)


def _launcher(cfg: DictConfig) -> type[Workers] | type[RayWorkers]:
    """Local worker processes, or Ray tasks (Ray is imported only then)."""
    if cfg.sweep.launcher == "ray":
        from gdexp.sweep._ray import RayWorkers

        return RayWorkers
    return Workers
