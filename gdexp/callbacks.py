"""Which callbacks a run gets, and in which order: `callbacks_for`, the one place that decides it.

Single runs (`python -m gdexp`), the learning-rate range test and every sweep trial get their callbacks here;
the training loop (`gdexp.train.run`) runs what it is given and adds nothing. Callbacks talk only through the
run's `History`, so the order below is part of their contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from omegaconf import DictConfig

from gdexp import regimes, stopping
from gdexp.history import Callback, History

if TYPE_CHECKING:
    from gdexp.data import Dataset
    from gdexp.nn import MLP
    from gdexp.optim import Optimizer

__all__ = ["Labeller", "ProgressBar", "Pruning", "Reporter", "callbacks_for"]


class Reporter(Protocol):
    """What pruning needs of a trial (Optuna's `Trial` has it)."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


def callbacks_for(cfg: DictConfig, *, tracker: Callback | None = None, trial: Reporter | None = None,
                  extra: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks of one run, in this order (each may read what the ones before it wrote in the history):

    1. `Sharpness` (`diagnostics.sharpness_every` > 0): adds `sharpness` and `stability_ratio` to the epoch rows
       first, so that the pruner, the tracker and the bar see each row whole;
    2. `Trajectory` (`diagnostics.trajectory`): records the weights (after every epoch, and inside the first ones
       through `on_update`); at the end of a finished run, its plane, path and loss grid into
       `history.artifacts`, before the tracker writes the artifacts;
    3. `Pruning` (a sweep's trial): reports `sweep.metric` to the trial every epoch; when the pruner says so it sets
       `stop_reason="pruned"`, which the loop obeys after the epoch's callbacks;
    4. `Labeller` (every run but the range test, which sweeps the learning rate inside one run and so is no regime
       sample): at the end, the regime read from the training curve, into the history, before anything records it;
    5. `extra`: the caller's own (the range test's log), after the label and before the tracker ends the run;
    6. the tracker (`tracking.enabled`; the caller builds it, to know its run): buffers every row and at the end
       writes what the history holds (label and artifacts included) and the status;
    7. `ProgressBar` (`train.progress`): last, its line shows the row as the others left it.
    """
    chosen: list[Callback] = []
    d = cfg.diagnostics
    if d.sharpness_every:
        from gdexp.diagnostics import Sharpness

        chosen.append(Sharpness(d.sharpness_every, d.power_iters, d.probe_size, cfg.train.seed))
    if d.trajectory:
        from gdexp.trajectory import Trajectory

        chosen.append(Trajectory())
    if trial is not None:
        chosen.append(Pruning(trial, cfg.sweep.metric))
    if cfg.get("lr_range") is None:
        chosen.append(Labeller(cfg.regimes, plain=cfg.optim.name == "sgd" and not cfg.optim.get("momentum", 0)))
    chosen += list(extra)
    if tracker is not None:
        chosen.append(tracker)
    if cfg.train.progress:
        chosen.append(ProgressBar())
    return chosen


class Labeller(Callback):
    """At the end of a run that finished, its regime and reason from its own training-loss curve
    (`regimes.classify`); when the sharpness was measured, the reason also says what η·λmax did
    (`regimes.stability`), and on a full-batch run it tells a step just below the edge from a tiny one, whose
    curves look alike. A full-batch run's rises are its steps' overshoots (no noise) when it is plain GD (no
    momentum, whose heavy ball may rise on a stable step; no adaptive step): `classify` is told which runs are.
    A run that was interrupted or failed gets no label."""

    def __init__(self, rules: Any, *, plain: bool = True) -> None:
        self.rules = rules
        self.plain = plain  # plain GD: no momentum, no adaptive step, so a full-batch rise is an overshoot

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if status != "FINISHED" or not history.epochs:
            return
        initial, ratios = history.initial.get("stability_ratio", math.nan), history.curve("stability_ratio")
        start, losses = history.initial.get("train_loss", math.nan), history.curve("train_loss")
        measured = ratios[np.isfinite(ratios)]
        full_batch = history.updates == len(history.epochs)  # one update an epoch: the curve is the steps'
        history.regime, history.regime_reason = regimes.classify(
            start, losses, diverged=history.diverged, note=history.note, rules=self.rules,
            full_batch=full_batch and self.plain,  # momentum's heavy ball may rise on a stable step
            ratios=(initial, float(measured[-1])) if full_batch and measured.size else (math.nan, math.nan))
        why, history.edge_of_stability = regimes.stability(
            initial, [int(e) for e in history.curve("epoch")], ratios.tolist(), fell=bool(losses[-1] < start))
        if why:
            history.regime_reason += f"; {why}"


class Pruning(Callback):
    """Reports the sweep's metric to the trial every epoch and stops the run when the pruner says so."""

    def __init__(self, trial: Reporter, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, history: History) -> None:
        row = history.epochs[-1]
        value = row.get(self.metric, math.nan)
        if not math.isfinite(value):
            return
        step = int(row["epoch"])
        with stopping.shielded():  # a journal record cut short (or its lock left behind) would stall every worker
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if prune:
            history.stop_reason = "pruned"
            history.note = f"pruned at epoch {step} with {self.metric}={value:.4g}"


class ProgressBar(Callback):
    """A bar over epochs with the latest losses (a line per tenth of the epochs when not on a terminal)."""

    bar: Any = None

    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, optimizer: Optimizer, history: History) -> None:
        from gdexp.console import progress

        epochs = cfg.train.epochs
        self.bar = progress(epochs, "train", "epoch", every=max(1, epochs // 10), leave=False)

    def on_epoch_end(self, history: History) -> None:
        row = history.epochs[-1]
        self.bar.set_postfix(train_loss=f"{row['train_loss']:.4g}", val_loss=f"{row.get('val_loss', math.nan):.4g}")
        self.bar.update()

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if self.bar is not None:
            self.bar.close()
