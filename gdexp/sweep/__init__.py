"""Optuna sweeps: `python -m gdexp +sweep=lr` -- one study, one MLflow parent run, one child run per trial.

The study lives in an Optuna storage (a journal file under `sweeps/<name>/` by default, or any RDB URL such as
`postgresql://...`, or Redis), so a sweep can be stopped and started again, and several worker processes,
commands or machines can share it. `sweep.n_trials` is the study's total: trials are claimed one at a time
under the study's lock (`_claim.py`), so the total is exact however many workers there are; a trial
interrupted by Ctrl-C, or whose worker died, does not count and is replaced (a dead worker's trial is retried
once with the same parameters).

Each trial composes its config with its sampled values (a group such as `gd` can be searched too), trains
in-process, reports `sweep.metric` every epoch so pruners work, and is logged as a child MLflow run tagged
`optuna.study`, `optuna.trial` and `optuna.state`. A diverged trial is COMPLETE with a penalty value (the worst
finite value it reached times `train.divergence_factor`), so the sampler learns from it and the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from omegaconf import DictConfig

from gdexp import console, errors, stopping, store
from gdexp.sweep._accounting import tally, trial_value
from gdexp.sweep._labels import relabel
from gdexp.sweep._launchers import Launcher, launcher
from gdexp.sweep._parent import best_trial, best_value, finish_parent, parent_run, summary_table, trials_done
from gdexp.sweep._reconcile import reconcile
from gdexp.sweep._record import TrialRecord
from gdexp.sweep._space import parse_space, same_trials, validate_sweep
from gdexp.sweep._storage import open_storage
from gdexp.sweep._study import Sweep

__all__ = ["Launcher", "Sweep", "TrialRecord", "open_storage", "parse_space", "run", "tally", "trial_value",
           "validate_sweep"]


def run(cfg: DictConfig, overrides: Sequence[str]) -> float | None:
    """Run (or resume, or join) the study `cfg.sweep` describes; return the best value."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = validate_sweep(cfg, overrides)  # before any worker is forked, any folder or run exists
    workers = launcher(cfg)(cfg, overrides, space)
    status = "KILLED"
    sweep: Sweep | None = None
    bar: Any = None
    try:
        sweep = Sweep(cfg, overrides, space=space)
        study, n, uri = sweep.study, cfg.sweep.n_trials, cfg.tracking.uri
        with stopping.shielded(), sweep.storage.lock("parent"):
            same_trials(study, sweep.configs.shared(sweep.space))
            sweep.parent_run_id = parent_run(cfg, study)
        with stopping.shielded():  # lost trials failed, their runs and those of gone trials ended
            sweep.reap()
            reconcile(uri, sweep.parent_run_id, sweep.records())
        if tally(sweep.records())["done"] >= n:  # nothing to run; a parent a stopped command left open is finished
            status = "FINISHED"
            workers.start(None, None)
            if store.get_run(uri, sweep.parent_run_id).info.status != "FINISHED":
                store.reopen_run(uri, sweep.parent_run_id)
            else:  # ended already: its plots stand; its runs are labelled anew (a store an older gdexp labelled)
                with stopping.shielded():
                    relabel(uri, sweep.records(), cfg.regimes)
                sweep.parent_run_id = None
        else:
            store.reopen_run(uri, sweep.parent_run_id)
            # counted from here, as Optuna's own timeout from the start of optimize(): the set-up is not the trials'
            deadline = time.time() + cfg.sweep.timeout if cfg.sweep.timeout else None
            workers.start(sweep.parent_run_id, deadline)
            bar = console.progress(n, f"sweep {cfg.sweep.name}", "trial", initial=tally(sweep.records())["done"])

            def refresh(records: Sequence[TrialRecord]) -> None:
                bar.n = min(n, tally(records).get("done", 0))
                best = best_trial(study)
                if best is not None:
                    bar.set_postfix_str(f"best {cfg.sweep.metric}={best.value:.4g} (trial {best.number})",
                                        refresh=False)
                bar.refresh()

            workers.run(sweep, deadline, refresh)
            if sweep.store_error is not None:
                raise sweep.store_error
            refresh(sweep.records())
            done = tally(sweep.records())["done"]
            if deadline is not None and done < n:
                errors.say(f"gdexp: sweep.timeout={cfg.sweep.timeout:g} s reached after {done} of {n} trials; run "
                           "the same command again to go on")
            status = "FINISHED"
    finally:
        workers.stop(interrupt=status == "KILLED")
        if bar is not None:
            bar.close()
        if sweep is not None and sweep.parent_run_id is not None:
            with stopping.shielded():  # a second Ctrl-C waits until the parent run is ended
                sweep.reap()
                finish_parent(cfg, sweep.study, sweep.parent_run_id, status)
    from gdexp.multirun import in_multirun
    from gdexp.ui import hint, run_hint

    best = best_value(sweep.study)
    if in_multirun():  # one UI hint after the jobs, and a line of this sweep in the multirun's table
        print(summary_table(cfg, sweep.study, sweep.where, ""))
        shown = f", best {cfg.sweep.metric} {best:.4g}" if best is not None else ""
        trials = trials_done(tally(sweep.records())["done"], cfg.sweep.n_trials)
        console.record_job(" ".join(overrides), f"study {cfg.sweep.name!r}: {trials}{shown}",
                           run_hint(cfg.tracking.uri, cfg.tracking.experiment), noun="sweep")
        return best
    with stopping.shielded():
        ui = hint(cfg.tracking.uri, cfg.tracking.experiment, cfg.sweep.name)
    print(summary_table(cfg, sweep.study, sweep.where, ui))
    return best

