"""Run names the tracker gives."""

from __future__ import annotations

import pytest

from gdexp.tracking import run_name


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
    from gdexp.tracking import MlflowTracker
    from tests.conftest import mlflow_client

    def no_upload(*args, **kwargs):
        raise OSError("the artifact store is gone")

    monkeypatch.setattr(store, "log_artifacts", no_upload)
    cfg = make_cfg("train.epochs=2")
    state = {"FINISHED": "COMPLETE"}
    tracker = MlflowTracker(cfg, end_tags=lambda history, status: {"optuna.state": state.get(status, "FAIL")})
    with pytest.raises(OSError, match="artifact store is gone"):
        train.run(cfg, [tracker])
    run = mlflow_client(cfg.tracking.uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert "artifact store is gone" in run.data.tags["error"] and "regime" not in run.data.tags
    assert len(mlflow_client(cfg.tracking.uri).get_metric_history(tracker.run_id, "train_loss")) == 2
