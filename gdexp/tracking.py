"""The MLflow adapter: one run per training run, metrics buffered, status always set.

`MlflowTracker` is a training callback. It creates the run when training begins (so a config or
data error leaves no run behind), keeps metrics in memory and writes them in batches (at most one
write per `tracking.flush_every_s`, asynchronously, and once at the end), and ends the run FINISHED,
FAILED or KILLED after flushing everything it was given. Names (params, metrics, tags, artifacts)
are a public contract: the README lists them.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gdexp import plots, regimes, stopping
from gdexp.config import as_dict, flatten, mask_secrets
from gdexp.data import Dataset
from gdexp.nn import MLP
from gdexp.train import Callback, History

__all__ = ["MlflowTracker", "client_for", "ensure_experiment", "run_name", "ui_command"]

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
FINAL_METRICS = ("test_loss", "test_accuracy", "n_params", "train_time_s", "callback_time_s")
MAX_METRICS_PER_CALL = 1000  # MLflow's limit for one log_batch
MAX_PARAMS_PER_CALL = 100
DEFAULT_URI = "sqlite:///mlruns/mlflow.db"  # tracking.uri's default (conf/tracking/mlflow.yaml)


def client_for(uri: str) -> Any:
    """The MlflowClient for a tracking URI, one per store and process. A relative SQLite path
    (`sqlite:///mlruns/mlflow.db`) is made absolute first: MLflow caches its store by URI, and a cached
    relative one would follow the process into another working folder."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return _client(uri)


@functools.cache
def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_store_missing(uri: str) -> bool:
    """Is `uri` a SQLite store whose file does not exist yet (nothing has been tracked there)?"""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


def log_config(client: Any, run_id: str, cfg: DictConfig) -> None:
    """The resolved config as params with dotted keys, secrets masked, in MLflow's batches of 100."""
    from mlflow.entities import Param

    params = [Param(k, str(mask_secrets(v))[:6000]) for k, v in flatten(as_dict(cfg)).items()]
    for i in range(0, len(params), MAX_PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[i : i + MAX_PARAMS_PER_CALL])


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite store (`mlruns/artifacts/<experiment>`); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts" / experiment).as_uri()


# MLflow 3's UI opens an experiment by its kind: GenAI ("genai_development": traces, an assistant) or
# machine learning ("custom_model_development": the runs table). gdexp trains models.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name`, created if needed (safe when several workers race to create it), and
    marked as model training (`EXPERIMENT_KIND`), so that MLflow's UI opens it on its runs table; an
    experiment made by an older gdexp gets the mark the first time it is used again."""
    from mlflow.exceptions import MlflowException

    client = client_for(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        for key, value in EXPERIMENT_KIND.items():
            if found.tags.get(key) != value:
                client.set_experiment_tag(found.experiment_id, key, value)
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_location(uri, name),
                                            tags=EXPERIMENT_KIND))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


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


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {mask_secrets(uri)} --host 127.0.0.1 --port 5000   (or: python -m gdexp.ui)"


def _metric(key: str, value: float, step: int, timestamp: int) -> Any:
    from mlflow.entities import Metric

    return Metric(key, float(value), timestamp, step)


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
        self._buffer: list[Any] = []
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self._logged_updates = 0
        self._stride = 1

    # -------------------------------------------------------------------------------- callbacks
    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, history: History) -> None:
        with stopping.shielded():  # the run exists and is known (run_id, on_run) together, or not at all
            self._begin(cfg, data, history)

    def _begin(self, cfg: DictConfig, data: Dataset, history: History) -> None:
        client = client_for(self.uri)
        experiment_id = ensure_experiment(self.uri, cfg.tracking.experiment)
        tags = {
            "dataset": data.name,
            "task": data.task,
            "gd.variant": cfg.gd.variant,
            "optimizer": cfg.optim.name,
            **self.extra_tags,
        }
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = client.create_run(experiment_id, run_name=run_name(cfg), tags=tags)
        self.run_id = run.info.run_id
        if self.on_run:
            self.on_run(self.run_id)
        log_config(client, self.run_id, cfg)
        stride = cfg.tracking.batch_loss_stride
        total = len(history.batch_loss)
        self._stride = max(1, math.ceil(total / cfg.tracking.batch_loss_points)) if stride == "auto" else int(stride)
        now = int(time.time() * 1000)
        self._buffer += [_metric(f"initial_{k}", v, 0, now) for k, v in history.initial.items()]

    def on_epoch_end(self, history: History) -> None:
        now = int(time.time() * 1000)
        row = history.epochs[-1]
        epoch = int(row["epoch"])
        self._buffer += [_metric(k, row[k], epoch, now) for k in EPOCH_METRICS if k in row]
        first, last = self._logged_updates, history.updates
        steps = np.arange(first, last)
        steps = steps[(steps + 1) % self._stride == 0]  # update numbers are 1-based: step = index + 1
        self._buffer += [_metric("batch_loss", history.batch_loss[i], int(i) + 1, now) for i in steps]
        self._logged_updates = last
        if time.monotonic() - self._last_flush >= self.cfg.tracking.flush_every_s:
            with stopping.shielded():
                self._flush(synchronous=False)

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if self.run_id is None:
            return
        with stopping.shielded():  # a signal now would leave the run RUNNING, or a store connection locked
            self._end(history, model, status, error)

    def _end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        client = client_for(self.uri)
        now = int(time.time() * 1000)
        epochs = len(history.epochs)
        self._buffer += [_metric(k, history.final[k], epochs, now) for k in FINAL_METRICS if k in history.final]
        self._buffer.append(_metric("epochs_run", epochs, epochs, now))
        regime, reason = regimes.classify(
            history.initial.get("train_loss", math.nan), history.curve("train_loss"),
            diverged=history.diverged, note=history.note, rules=self.cfg.regimes,
        ) if history.epochs else ("", "")
        tags = {"diverged": str(history.diverged).lower(), "regime": regime, "regime_reason": reason}
        if history.stop_reason:
            tags["stop_reason"] = history.stop_reason
        if error is not None and status == "FAILED":
            tags["error"] = f"{type(error).__name__}: {error}"[:5000]
        if self.end_tags:
            tags.update(self.end_tags(history, status))
        try:
            self._flush(synchronous=True, tags=tags)
            if self.cfg.tracking.artifacts and status != "KILLED":
                self._log_artifacts(history, model)
        finally:
            client.set_terminated(self.run_id, status)

    # ---------------------------------------------------------------------------------- writing
    def _flush(self, *, synchronous: bool, tags: Mapping[str, str] | None = None) -> None:
        """Write the buffered metrics in batches; the last, synchronous flush also waits for the earlier
        asynchronous ones, so nothing handed to the tracker is lost when the run ends."""
        from mlflow.entities import RunTag

        client = client_for(self.uri)
        buffered, self._buffer = self._buffer, []
        for i in range(0, len(buffered), MAX_METRICS_PER_CALL):
            chunk = buffered[i : i + MAX_METRICS_PER_CALL]
            op = client.log_batch(self.run_id, metrics=chunk, synchronous=synchronous)
            if op is not None:
                self._pending.append(op)
        if synchronous:
            pending, self._pending = self._pending, []
            for op in pending:
                op.wait()
            if tags:
                client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._last_flush = time.monotonic()

    def _log_artifacts(self, history: History, model: MLP) -> None:
        client = client_for(self.uri)
        with tempfile.TemporaryDirectory(prefix="gdexp-artifacts-") as tmp:
            folder = Path(tmp)
            text = OmegaConf.to_yaml(self.cfg, resolve=True)
            (folder / "config.yaml").write_text("\n".join(mask_secrets(line) for line in text.splitlines()) + "\n")
            model.save(folder / "weights.npz")
            plots.loss_curve(history, folder / "loss_curve.png", title=run_name(self.cfg))
            client.log_artifacts(self.run_id, str(folder))
