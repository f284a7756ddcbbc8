"""What a command shows on the console: progress while it works, one summary when it ends.

A terminal gets a tqdm bar redrawn in place. A log file or CI job (stderr not a terminal) would get one
line per redraw from tqdm, so there `progress` writes a plain line each time the count moves by a
step instead (`every`: one line per trial for a sweep, one per tenth of the epochs for a run).
A Hydra multirun ends with one summary of its jobs (`MultirunSummary`), not a UI hint after each job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

__all__ = ["LineProgress", "MultirunSummary", "progress", "record_job"]


class LineProgress:
    """tqdm's small interface (`update`, `n`, `set_postfix`, `set_postfix_str`, `refresh`, `close`) as one
    plain line per `every` steps and one at the end."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, every: int = 1) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, max(1, every)
        self.n = initial
        self._shown = initial
        self._postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        self.refresh()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()), refresh=False)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text

    def refresh(self) -> None:
        if self.n >= self._shown + self.every or (self.n >= self.total > self._shown):
            self._shown = self.n
            tail = f"  {self._postfix}" if self._postfix else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to clear: the lines stay in the log."""


def progress(total: int, desc: str, unit: str, *, initial: int = 0, every: int = 1, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, else a `LineProgress` that writes a line every `every` steps."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, unit, initial=initial, every=every)


@dataclass
class _Job:
    overrides: str
    line: str
    noun: str  # what the job made: a run, a sweep


@dataclass
class _Jobs:
    ui_hint: str = ""
    done: list[_Job] = field(default_factory=list)


_JOBS = _Jobs()


def record_job(overrides: str, line: str, ui_hint: str, *, noun: str = "run") -> None:
    """A finished job of a Hydra multirun: its one-line result, kept for the summary at the end (its overrides
    with any password of a storage or tracking URL masked, as everything gdexp prints)."""
    from gdexp.config import mask_secrets

    _JOBS.done.append(_Job(mask_secrets(overrides), line, noun))
    _JOBS.ui_hint = ui_hint


class MultirunSummary(HydraCallback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): after the last job of a multirun, one table of
    every job's result and the one command that opens the UI."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _JOBS.done.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not _JOBS.done:
            return
        width = max(len(job.overrides) for job in _JOBS.done)
        nouns = {job.noun for job in _JOBS.done}
        noun = nouns.pop() if len(nouns) == 1 else "job"
        print(f"\n{len(_JOBS.done)} {noun}{'s' * (len(_JOBS.done) != 1)}:")
        for job in _JOBS.done:
            print(f"  {job.overrides:<{width}}  {job.line}")
        if _JOBS.ui_hint:
            print(f"Open the UI: {_JOBS.ui_hint}")
