"""Kill a sweep's process at a chosen instant: `python tests/faultpoints.py POINT MARKER <gdexp args>` runs
`python -m gdexp <args>` with POINT armed; the first process (the command or a forked worker) that reaches it
SIGKILLs itself, once (MARKER is created when it fires; once it exists the point is disarmed).

The points wrap the real code paths at the instant named, after it did its part of the write:
- `after_create`: right after the storage wrote a new RUNNING trial (inside the study's lock);
- `holding_lock`: right after taking the study's lock, before claiming;
- `before_parent`: a forked worker, as it starts, before it received the parent run's id;
- `before_run_recorded`: the trial's MLflow run made, before its id is written to the study;
- `during_mlflow_write`: as the trial's MLflow run is about to be ended (its metrics flushed, the run RUNNING);
- `during_tell`: after the MLflow run ended FINISHED, as the study is told the trial's state.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

POINTS = ("after_create", "holding_lock", "before_parent", "before_run_recorded", "during_mlflow_write",
          "during_tell")


def _fire(marker: str) -> None:
    """SIGKILL this process unless the point fired already (the marker is made atomically: one process only)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _after(original: Callable[..., Any], marker: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _fire(marker)
        return result

    return wrapped


def _before(original: Callable[..., Any], marker: str, when: Callable[..., bool] = lambda *a, **k: True
            ) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            _fire(marker)
        return original(*args, **kwargs)

    return wrapped


def arm(point: str, marker: str) -> None:
    """Patch the code path of `point` (module docstring)."""
    import contextlib

    import optuna
    from optuna.storages._cached_storage import _CachedStorage  # what a study on an RDB storage writes through
    from optuna.trial import TrialState

    from gdexp import store
    from gdexp.sweep import _storage, _study, _workers

    storages = (optuna.storages.JournalStorage, _CachedStorage)
    if point == "after_create":
        for cls in storages:
            cls.create_new_trial = _after(cls.create_new_trial, marker)  # type: ignore[method-assign]
    elif point == "holding_lock":
        original = _storage.Storage.lock

        @contextlib.contextmanager
        def lock(self: Any, what: str = "claim") -> Any:
            with original(self, what):
                if what == "claim":
                    _fire(marker)
                yield

        _storage.Storage.lock = lock  # type: ignore[method-assign]
    elif point == "before_parent":
        _workers._worker_main = _before(_workers._worker_main, marker)
    elif point == "before_run_recorded":
        _study.write = _before(_study.write, marker, lambda *args, **kwargs: "run_id" in kwargs)
    elif point == "during_mlflow_write":
        store.end_run = _before(store.end_run, marker, lambda uri, run_id, status: status == "FINISHED")
    elif point == "during_tell":
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        for cls in storages:
            cls.set_trial_state_values = _before(  # type: ignore[method-assign]
                cls.set_trial_state_values, marker, lambda self, trial_id, state, values=None: state in finished)
    else:
        raise SystemExit(f"unknown fault point {point!r}: choose one of {', '.join(POINTS)}")


if __name__ == "__main__":
    point, marker, *args = sys.argv[1:]
    arm(point, marker)
    sys.argv = ["gdexp", *args]
    from gdexp.__main__ import main

    main()
