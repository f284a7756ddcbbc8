"""Run names the tracker gives; what it writes, and when MLflow is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gdexp.tracking import run_name
from tests.conftest import child_env


@pytest.mark.parametrize("overrides,name", [
    ([], "lr0.1-h64-minibatch32-sgd"),
    (["optim=adam", "optim.lr=0.001", "gd=batch", "model.hidden_size=128", "model.hidden_layers=2"],
     "lr0.001-h128x2-batch-adam"),
    (["gd=stochastic", "model.hidden_layers=0", "optim.lr=0.25"], "lr0.25-linear-stochastic-sgd"),
    (["+sweep=lr_range"], "lr_range-sgd-minibatch32-h64"),
])
def test_run_names_start_with_what_a_sweep_varies(make_cfg, overrides: list[str], name: str) -> None:
    """The UI cuts names at its column width: the learning rate and the hidden size come first."""
    assert run_name(make_cfg(*overrides)) == name


def test_an_artifact_upload_that_fails_makes_the_run_failed_and_is_raised(make_cfg, project, monkeypatch) -> None:
    """The run and a sweep trial must agree: not FINISHED with optuna.state=COMPLETE while the trial FAILs."""
    import pytest

    from gdexp import store, train
    from gdexp.callbacks import callbacks_for
    from gdexp.tracking import MlflowTracker
    from tests.conftest import mlflow_client

    def no_upload(*args, **kwargs):
        raise OSError("the artifact store is gone")

    monkeypatch.setattr(store, "log_artifacts", no_upload)
    cfg = make_cfg("train.epochs=2")
    state = {"FINISHED": "COMPLETE"}
    tracker = MlflowTracker(cfg, end_tags=lambda history, status: {"optuna.state": state.get(status, "FAIL")})
    with pytest.raises(OSError, match="artifact store is gone"):  # labelled: the run is born with its regime tags
        train.run(cfg, callbacks_for(cfg, tracker=tracker))
    run = mlflow_client(cfg.tracking.uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert "artifact store is gone" in run.data.tags["error"] and "regime" not in run.data.tags
    assert len(mlflow_client(cfg.tracking.uri).get_metric_history(tracker.run_id, "train_loss")) == 2


@pytest.mark.slow  # a fresh interpreter, where MLflow is not imported yet
def test_a_run_trains_before_mlflow_is_imported_and_is_recorded_whole(tmp_path: Path) -> None:
    """Importing MLflow and opening its store take about 2 s: the tracker buffers its points as plain tuples, so a
    single run's first epochs come that much sooner, and MLflow is imported at the run's first write."""
    code = """
import sys
from hydra import compose, initialize_config_dir
from gdexp import train
from gdexp.callbacks import callbacks_for
from gdexp.config import CONFIG_DIR
from gdexp.history import Callback
from gdexp.tracking import MlflowTracker

class Look(Callback):
    seen = []
    def on_epoch_end(self, history):
        self.seen.append("mlflow" in sys.modules)

with initialize_config_dir(str(CONFIG_DIR), version_base=None):
    cfg = compose("config", overrides=["train.progress=false", "train.epochs=3"])
tracker = MlflowTracker(cfg)
train.run(cfg, callbacks_for(cfg, tracker=tracker, extra=[Look()]))
assert Look.seen == [False, False, False], Look.seen
from mlflow.tracking import MlflowClient
points = MlflowClient(cfg.tracking.uri).get_metric_history(tracker.run_id, "train_loss")
assert sorted(p.step for p in points) == [1, 2, 3], points
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=child_env(), check=False)
    assert result.returncode == 0, result.stderr


def test_the_loss_curve_starts_at_epoch_0_with_that_level_dotted(tmp_path: Path, monkeypatch) -> None:
    """A too_large reason reads "rose from 2.466 (epoch 0) to 3.026 in epoch 1, above its initial 2.466": the
    run's own figure shows epoch 0 (`initial_train_loss`, which the `train_loss` metric does not hold) and the
    level a rise is measured against, on whole epochs."""
    import numpy as np

    from gdexp import plots
    from gdexp.history import History

    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or path)
    history = History(batch_loss=np.zeros(2), lr=np.zeros(2), initial={"train_loss": 2.466, "val_loss": 2.5},
                      epochs=[{"epoch": 1.0, "train_loss": 3.026, "val_loss": 3.1},
                              {"epoch": 2.0, "train_loss": 0.7, "val_loss": 0.8}])
    plots.loss_curve(history, tmp_path / "loss_curve.png", title="lr1")
    (ax,) = drawn[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["training set"].get_xdata()) == [0, 1, 2]
    assert list(lines["training set"].get_ydata()) == [2.466, 3.026, 0.7]
    assert list(lines["validation set"].get_ydata()) == [2.5, 3.1, 0.8]
    assert list(lines["training loss at epoch 0"].get_ydata()) == [2.466, 2.466]
    assert all(float(t).is_integer() for t in ax.get_xticks())
