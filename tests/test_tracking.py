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
