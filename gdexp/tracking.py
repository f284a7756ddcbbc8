"""The training callback that records a run in MLflow: metrics buffered, status always set.

`MlflowTracker` keeps everything in memory and writes it in as few writes as it can: the run is created at
its first write -- `tracking.flush_every_s` after training began, or at the end, whichever comes first --
with the time training began as its start, so a config or data error leaves no run behind and a short run
(a sweep's trial) costs one create, its artifacts, one batch of params, metrics and end tags, and one end. A long
run is flushed every `tracking.flush_every_s` (asynchronously), so the UI follows it. Whatever happens, the
run is ended FINISHED, FAILED or KILLED after everything it was given is written. It records what the run's
`History` says (the regime label and the arrays of `History.artifacts` included) and talks to MLflow only
through `gdexp.store`. Names (params, metrics, tags, artifacts) are a public contract: the README lists them.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gdexp import errors, plots, processes, stopping, store
from gdexp.config import mask_secrets
from gdexp.data import Dataset
from gdexp.history import Callback, History
from gdexp.nn import MLP
from gdexp.nn.mlp import save_npz
from gdexp.optim import Optimizer

__all__ = ["MlflowTracker", "run_name"]

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "sharpness", "stability_ratio",
                 "examples_processed", "update_time_s")
FINAL_METRICS = ("test_loss", "test_accuracy", "n_params", "train_time_s", "callback_time_s", "sharpness_time_s",
                 "trajectory_time_s")
# history.initial key -> the metrics it is recorded as (at step 0); the rest are `initial_<key>`
INITIAL_NAMES = {"sharpness": ("sharpness", "sharpness_initial"), "stability_ratio": ("stability_ratio",),
                 "lr_edge": ("lr_edge",)}


def run_name(cfg: DictConfig) -> str:
    """`lr0.1-h64-minibatch32-sgd`: learning rate, hidden layers, GD variant (+ batch size), optimizer.

    What a sweep varies comes first, so that the name the UI cuts at its column width still tells the
    runs apart. A range test sweeps the learning rate within the run: `lr_range-sgd-minibatch32-h64`."""
    variant = cfg.gd.variant + (str(cfg.gd.batch_size) if cfg.gd.variant == "minibatch" else "")
    layers = cfg.model.hidden_layers
    hidden = "linear" if layers == 0 else f"h{cfg.model.hidden_size}" + (f"x{layers}" if layers > 1 else "")
    if cfg.get("lr_range") is not None:
        return f"lr_range-{cfg.optim.name}-{variant}-{hidden}"
    return f"lr{cfg.optim.lr:.3g}-{hidden}-{variant}-{cfg.optim.name}"


def _blas_tags(blas: Mapping[str, str]) -> dict[str, str]:
    """`blas_threads` (the loop's BLAS thread count) and `blas` (`openblas 0.3.31 Haswell`): what two runs
    must share to give the same bits."""
    if not blas:
        return {}
    described = " ".join(blas[k] for k in ("library", "version", "kernel") if blas.get(k))
    return {"blas_threads": blas.get("threads", ""), "blas": described}


def close_lost_runs(uri: str, experiment_id: str) -> list[str]:
    """The runs of single commands that a process left RUNNING and is gone (SIGKILL, a power cut: nothing ended
    them), ended KILLED; their ids. Judged on this machine only (`processes.process_gone`); a sweep's trials and
    parents are its reapers' (`sweep._claim`, `sweep._reconcile`)."""
    running = store.search_runs(uri, experiment_id, "attributes.status = 'RUNNING' and tags.`gdexp.process` LIKE '%'")
    lost = [run.info.run_id for run in running if processes.process_gone(run.data.tags.get("gdexp.process", ""))]
    for run_id in lost:
        store.end_run(uri, run_id, "KILLED")
    return lost


class MlflowTracker(Callback):
    """Records one training run in MLflow. `parent_run_id` makes it a child (a sweep's trial);
    `tags` are set at creation, `end_tags(history, status)` adds tags when the run ends, and
    `on_run(run_id)` is told the id as soon as the run exists."""

    def __init__(self, cfg: DictConfig, *, parent_run_id: str | None = None, tags: Mapping[str, str] | None = None,
                 end_tags: Callable[[History, str], Mapping[str, str]] | None = None,
                 on_run: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.uri: str = cfg.tracking.uri
        self.parent_run_id, self.extra_tags, self.end_tags, self.on_run = parent_run_id, tags or {}, end_tags, on_run
        self.run_id: str | None = None
        self._tags: dict[str, str] = {}
        self._buffer: list[Any] = []
        self._pending: list[Any] = []
        self._began = time.time()
        self._last_flush = time.monotonic()
        self._logged_updates = 0
        self._stride = 1
        self._started = False
        self._params: dict[str, Any] = {}

    # -------------------------------------------------------------------------------- callbacks
    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, optimizer: Optimizer, history: History) -> None:
        self._started, self._began, self._last_flush = True, time.time(), time.monotonic()
        self._tags = {"dataset": data.name, "task": data.task, "gd.variant": cfg.gd.variant,
                      "optimizer": cfg.optim.name, **self.extra_tags}
        if self.parent_run_id:
            self._tags["mlflow.parentRunId"] = self.parent_run_id
        else:  # a sweep's trials name their owner in the study; a run alone, here (`close_lost_runs`)
            self._tags["gdexp.process"] = processes.identity()
        stride = cfg.tracking.batch_loss_stride
        total = len(history.batch_loss)
        self._stride = max(1, math.ceil(total / cfg.tracking.batch_loss_points)) if stride == "auto" else int(stride)
        now = int(self._began * 1000)
        self._buffer += [store.metric(name, v, 0, now) for k, v in history.initial.items()
                         for name in INITIAL_NAMES.get(k, (f"initial_{k}",))]

    def on_epoch_end(self, history: History) -> None:
        now = int(time.time() * 1000)
        row = history.epochs[-1]
        epoch = int(row["epoch"])
        self._buffer += [store.metric(k, row[k], epoch, now) for k in EPOCH_METRICS if k in row]
        first, last = self._logged_updates, history.updates
        steps = np.arange(first, last)
        steps = steps[(steps + 1) % self._stride == 0]  # update numbers are 1-based: step = index + 1
        self._buffer += [store.metric("batch_loss", history.batch_loss[i], int(i) + 1, now) for i in steps]
        self._logged_updates = last
        if time.monotonic() - self._last_flush >= self.cfg.tracking.flush_every_s:
            with stopping.shielded():
                self._flush(synchronous=False)

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if not self._started:
            return
        with stopping.shielded():  # a signal now would leave the run RUNNING, or a store connection locked
            self._end(history, model, status, error)

    def _end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        """The run made if need be, then the artifacts, then the metrics with the end tags, then the status: an
        artifact write that fails makes the run FAILED, with the tags (and a sweep's `optuna.state`) saying so,
        and is raised after the run is ended, so that the run and the trial that reads the error agree."""
        now = int(time.time() * 1000)
        epochs = len(history.epochs)
        self._buffer += [store.metric(k, history.final[k], epochs, now) for k in FINAL_METRICS if k in history.final]
        self._buffer.append(store.metric("epochs_run", epochs, epochs, now))
        failed: Exception | None = None
        try:
            self._create()
            if self.cfg.tracking.artifacts and status != "KILLED":
                with errors.captured() as caught:
                    self._log_artifacts(history, model)
                if caught.error is not None:
                    failed, status, error = caught.error, "FAILED", caught.error
            # the end tags last, with the metrics: a run that carries them (optuna.state, regime) holds its curves,
            # whenever the process dies (created with them, 3 ms a trial sooner, a run killed before its metrics
            # were written said COMPLETE over an empty curve, which the report read as an overshoot)
            self._flush(synchronous=True, tags=self._end_tags(history, status, error))
        finally:
            if self.run_id is not None:
                store.end_run(self.uri, self.run_id, status)
        if self.parent_run_id is None:
            for run_id in close_lost_runs(self.uri, store.ensure_experiment(self.uri, self.cfg.tracking.experiment)):
                errors.say(f"gdexp: run {run_id} was left RUNNING by a process that is gone (killed before it could "
                           "end it): ended KILLED")
        if failed is not None:
            raise failed

    def _end_tags(self, history: History, status: str, error: BaseException | None) -> dict[str, str]:
        tags = {"diverged": str(history.diverged).lower(), **_blas_tags(history.blas)}
        if history.regime and status == "FINISHED":  # the label the run's curve gave; none for one that did not finish
            tags.update(regime=history.regime, regime_reason=history.regime_reason)
        if history.stop_reason:
            tags["stop_reason"] = history.stop_reason
        if history.edge_of_stability is not None and self.cfg.gd.variant == "batch":  # the edge is full-batch GD's
            tags["edge_of_stability"] = str(history.edge_of_stability).lower()
        if error is not None and status == "FAILED":
            tags["error"] = mask_secrets(f"{type(error).__name__}: {error}"[:5000])
        if self.end_tags:
            tags.update(self.end_tags(history, status))
        return tags

    # ---------------------------------------------------------------------------------- writing
    def run(self) -> str:
        """The run's id, the run created now if it does not exist yet: for a callback that records results of
        its own into the run before the tracker ends it (the range test's)."""
        with stopping.shielded():
            self._create()
        assert self.run_id is not None
        return self.run_id

    def _create(self) -> None:
        """The run, at its first write: created with its tags and the time training began; its params (the
        config) go with the first batch of metrics."""
        if self.run_id is not None:
            return
        experiment_id = store.ensure_experiment(self.uri, self.cfg.tracking.experiment)
        self.run_id = store.create_run(self.uri, experiment_id, run_name(self.cfg), self._tags,
                                       start_ms=int(self._began * 1000))
        self._params = store.config_params(self.cfg)
        if self.on_run:
            self.on_run(self.run_id)

    def _flush(self, *, synchronous: bool, tags: Mapping[str, str] | None = None) -> None:
        """Write the buffered metrics (with the params, the first time); the last, synchronous flush also waits
        for the earlier asynchronous ones, so nothing handed to the tracker is lost when the run ends."""
        self._create()
        assert self.run_id is not None
        buffered, self._buffer = self._buffer, []
        params, self._params = self._params, {}
        self._pending += store.log_batch(self.uri, self.run_id, metrics=buffered, params=params,
                                         tags=tags if synchronous else None, synchronous=synchronous)
        if synchronous:
            pending, self._pending = self._pending, []
            for op in pending:
                op.wait()
        self._last_flush = time.monotonic()

    def _log_artifacts(self, history: History, model: MLP) -> None:
        assert self.run_id is not None
        with tempfile.TemporaryDirectory(prefix="gdexp-artifacts-") as tmp:
            folder = Path(tmp)
            text = OmegaConf.to_yaml(self.cfg, resolve=True)
            (folder / "config.yaml").write_text(mask_secrets(text))
            model.save(folder / "weights.npz")
            for name, arrays in history.artifacts.items():  # trajectory.npz
                save_npz(folder / f"{name}.npz", arrays)
            if self.cfg.tracking.loss_curve:
                plots.loss_curve(history, folder / "loss_curve.png", title=run_name(self.cfg))
            store.log_artifacts(self.uri, self.run_id, folder)
