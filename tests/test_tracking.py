"""Run names and the experiment gdexp creates, on a real MLflow SQLite store (no server, no process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdexp.tracking import EXPERIMENT_KIND, client_for, ensure_experiment, run_name


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


def test_the_experiment_is_marked_as_model_training(project: Path) -> None:
    """MLflow 3's UI opens a GenAI overview unless the experiment says it holds model training; an experiment
    made before gdexp set the mark gets it when it is used again."""
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = client_for(uri)
    created = ensure_experiment(uri, "gdexp")
    assert client.get_experiment(created).tags["mlflow.experimentKind"] == "custom_model_development"
    assert EXPERIMENT_KIND == {"mlflow.experimentKind": "custom_model_development"}
    older = client.create_experiment("older")
    assert "mlflow.experimentKind" not in client.get_experiment(older).tags
    assert ensure_experiment(uri, "older") == older
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
