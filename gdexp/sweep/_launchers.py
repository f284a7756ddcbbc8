"""What runs a study's workers: local processes forked by the command, or Ray tasks. Both are a `Launcher`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution

from gdexp.sweep._study import Progress, Sweep

__all__ = ["Launcher", "launcher"]


class Launcher(Protocol):
    """A study's workers beside the command: made before the command opens any connection (a forked process
    must not share one), started once the parent run exists, watched, and stopped exactly once."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution]) -> None: ...

    def start(self, parent_run_id: str | None, deadline: float | None) -> None:
        """Let the workers run trials under this parent run (None: the study is complete, they end), claiming none
        after `deadline` (`time.time()`; None: no limit)."""

    def run(self, sweep: Sweep, deadline: float | None, on_trial: Progress) -> None:
        """Until every worker has ended: run trials here too (local) or watch (Ray), showing `on_trial` the study's
        records as trials end."""

    def stop(self, *, interrupt: bool) -> None:
        """End the workers (`interrupt`: each closes its trial's run KILLED first); a second call does nothing."""


def launcher(cfg: DictConfig) -> type[Launcher]:
    """Local worker processes, or Ray tasks (Ray is imported only then)."""
    if cfg.sweep.launcher == "ray":
        from gdexp.sweep._ray import RayWorkers

        return RayWorkers
    from gdexp.sweep._workers import Workers

    return Workers
