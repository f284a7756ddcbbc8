"""What a run measured (`History`) and the hooks that observe it (`Callback`): the leaf every other module
builds on. The training loop fills the history and calls the hooks; it knows nothing of who listens.

Callbacks talk to each other only through the history, so their order matters: `gdexp.callbacks.callbacks_for`
is the one place that builds a run's callbacks and writes that order down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gdexp.data import Dataset
    from gdexp.nn import MLP
    from gdexp.optim import Optimizer

__all__ = ["Callback", "History"]


@dataclass
class History:
    """Everything a run measured, as data. Epoch rows hold `epoch` (1-based), `train_loss` and `train_accuracy`
    (on the whole training set, after the epoch's last update), `val_loss`, `val_accuracy`, `lr`, and what the
    updates cost so far: `examples_processed` (the rows of every batch an update trained on, summed) and
    `update_time_s` (seconds spent in the updates themselves: batching, forward, backward and step; not the
    per-epoch evaluation, nor any callback), so that GD variants compare by cost, not by epochs.

    The training loss is measured on the whole set rather than averaged over the epoch's batches: a batch mean
    mixes the weights of every update of the epoch and the noise of each batch, and the regime labels read
    rises of this curve as overshoot."""

    batch_loss: np.ndarray  # loss of every update, in order; valid up to `updates`
    lr: np.ndarray  # learning rate of every update
    updates: int = 0
    epochs: list[dict[str, float]] = field(default_factory=list)
    initial: dict[str, float] = field(default_factory=dict)  # losses before the first update
    final: dict[str, float] = field(default_factory=dict)  # test_loss, ..., train_time_s, callback_time_s
    diverged: bool = False
    stop_reason: str | None = None  # "diverged", "pruned", ... : why the loop stopped before its end
    note: str = ""  # a sentence on how the run ended early
    regime: str = ""  # too_small / just_right / too_large; "" when not labelled (interrupted, failed, range test)
    regime_reason: str = ""  # the label's reason in one sentence
    edge_of_stability: bool | None = None  # ended with η·λmax at 2 (None: the sharpness was not measured)
    blas: dict[str, str] = field(default_factory=dict)  # threads, library, version, kernel the loop ran on
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> arrays, logged as <name>.npz

    def curve(self, key: str) -> np.ndarray:
        """One epoch metric as an array (NaN where an epoch has no value)."""
        return np.array([row.get(key, math.nan) for row in self.epochs], dtype=float)


class Callback:
    """Hooks around a run; the loop calls them once per run or per epoch, and per update only after the updates a
    callback names in `watched_updates` (none by default: then the loop pays one integer comparison per update)."""

    watched_updates: frozenset[int] = frozenset()  # 1-based update numbers for `on_update`; read after on_begin

    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, optimizer: Optimizer, history: History) -> None:
        """After data, model and optimizer exist, before the first update."""

    def on_update(self, update: int, model: MLP) -> None:
        """Right after update number `update` (1-based) when it is in `watched_updates`, the weights just stepped.
        Its time counts as callback time, not as the update's."""

    def on_epoch_end(self, history: History) -> None:
        """After each epoch's row is appended; set `history.stop_reason` to stop the run."""

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        """Called whenever on_begin was (also when on_begin itself raised), in the order the callbacks were
        given: status FINISHED, FAILED (an error was raised) or KILLED (KeyboardInterrupt)."""
