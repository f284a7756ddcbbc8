"""The `Sharpness` callback in the real training loop: exact on linear regression, the edge of stability on a
tanh MLP, the preconditioned sharpness of adaptive optimizers, and a run's numbers left as they were."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gdexp import train
from gdexp.callbacks import callbacks_for
from gdexp.data import load
from gdexp.diagnostics import Sharpness, measure_sharpness
from gdexp.history import History
from gdexp.nn.hessian import Hessian
from gdexp.optim import Adam, RMSprop
from tests.test_hessian import small_problem

QUIET = ("tracking.enabled=false",)


def test_linear_regression_sharpness_is_the_top_eigenvalue_of_the_closed_form_every_epoch(make_cfg) -> None:
    """Depth 0, MSE (1/2m)Σ: H = X̃ᵀX̃/m with X̃ = [X, 1] at every weight, so λmax is known exactly."""
    cfg = make_cfg("data=linear", "data.d=3", "model.hidden_layers=0", "gd=batch", "optim.lr=0.2",
                   "train.epochs=8", *QUIET)
    history = train.run(cfg, [Sharpness(1, power_iters=100, probe_size=10_000, tol=1e-10)])
    X = load(cfg.data, cfg.train.dtype).X_train.astype(np.float64)
    Xt = np.c_[X, np.ones(len(X))]
    top = np.linalg.eigvalsh(Xt.T @ Xt / len(Xt))[-1]
    measured = np.r_[history.initial["sharpness"], history.curve("sharpness")]
    assert len(measured) == 9
    np.testing.assert_allclose(measured, top, rtol=1e-6)
    np.testing.assert_allclose(history.curve("stability_ratio"), 0.2 * top, rtol=1e-6)
    assert history.initial["lr_edge"] == pytest.approx(2 / top, rel=1e-6)


def test_full_batch_gd_settles_at_the_edge_of_stability(make_cfg) -> None:
    """A tanh MLP with MSE on digits (the digit's value as target), full-batch GD at η = 0.8 · 2/λmax(0): the
    sharpness rises past 2/η (progressive sharpening), then hovers at 2/η while the loss keeps falling."""
    base = ("gd=batch", "model.activation=tanh", "data.task=regression", *QUIET)
    edge = train.run(make_cfg(*base, "train.epochs=1"), [Sharpness(1, 30, 5000)]).initial["lr_edge"]
    lr = 0.8 * edge
    history = train.run(make_cfg(*base, f"optim.lr={lr!r}", "train.epochs=400"), [Sharpness(20, 20, 5000)])
    ratio = history.curve("stability_ratio")[19::20]
    assert history.initial["stability_ratio"] == pytest.approx(1.6, rel=1e-6)
    assert not history.diverged and np.all(np.isfinite(ratio))
    assert ratio.max() > 2.0
    assert history.curve("sharpness")[-1] == pytest.approx(2 / lr, rel=0.05)
    assert history.curve("train_loss")[-1] < history.initial["train_loss"] / 5


def test_measuring_changes_no_number_of_the_run(make_cfg) -> None:
    cfg = make_cfg("train.epochs=3", "data.val_fraction=0.2", *QUIET)
    plain = train.run(cfg)
    measured = train.run(cfg, [Sharpness(1, power_iters=5, probe_size=300, seed=3)])
    np.testing.assert_array_equal(plain.batch_loss, measured.batch_loss)
    assert plain.final["test_loss"] == measured.final["test_loss"]
    assert np.all(np.isfinite(measured.curve("sharpness"))) and measured.final["sharpness_time_s"] > 0
    again = train.run(cfg, [Sharpness(1, power_iters=5, probe_size=300, seed=3)])
    np.testing.assert_array_equal(again.curve("sharpness"), measured.curve("sharpness"))


def test_every_k_epochs_and_the_last_and_zero_is_off(make_cfg) -> None:
    cfg = make_cfg("train.epochs=7", *QUIET)
    history = train.run(cfg, [Sharpness(3, power_iters=3, probe_size=200)])
    assert [int(r["epoch"]) for r in history.epochs if "sharpness" in r] == [3, 6, 7]
    off = train.run(cfg, [Sharpness(0)])
    assert "sharpness" not in off.initial and not any("sharpness" in r for r in off.epochs)


def test_a_diverging_run_records_nan_and_ends_as_before(make_cfg) -> None:
    history = train.run(make_cfg("optim.lr=1000", *QUIET), [Sharpness(1, power_iters=3, probe_size=200)])
    assert history.diverged and math.isfinite(history.initial["sharpness"])
    assert "sharpness" in history.epochs[-1]


@pytest.mark.parametrize("bad,shown", [({"every": -1}, "every=-1"), ({"every": 1.5}, "every=1.5"),
                                       ({"power_iters": 0}, "power_iters=0"), ({"probe_size": 0}, "probe_size=0"),
                                       ({"tol": 1.0}, "tol=1.0")])
def test_bad_settings_are_refused_with_their_value(bad: dict, shown: str) -> None:
    with pytest.raises(ValueError, match=shown):
        Sharpness(**{"every": 1, **bad})


@pytest.mark.parametrize("optimizer", [Adam(0.01, weight_decay=0.01), RMSprop(0.01, momentum=0.5, centered=True)])
def test_preconditioned_sharpness_of_adaptive_optimizers(optimizer) -> None:
    """λmax(P^{-1/2} (H + wd·I) P^{-1/2}) with P the next step's preconditioner, from the whole Hessian."""
    model, X, y = small_problem("tanh", "regression", layers=1)
    for _ in range(3):
        model.train_step(X, y)
        optimizer.step(model.params, model.grads)
    hessian = Hessian(model, X, y)
    model.train_step(X, y)  # the gradient at the current weights, as the next step will see it
    h, conditioner = optimizer.stability(model.params, model.grads)
    assert conditioner is not None
    scale = 1 / np.sqrt(np.concatenate([p.ravel() for p in conditioner.values()]))
    H = hessian.dense() + optimizer.weight_decay * np.eye(hessian.size)
    top = np.linalg.eigvalsh(scale[:, None] * H * scale[None, :])[-1]
    value, ratio, _ = measure_sharpness(model, X, y, optimizer, iters=3000, tol=1e-12, rng=np.random.default_rng(0))
    assert value == pytest.approx(top, rel=1e-4)
    assert ratio == pytest.approx(h * top, rel=1e-4)


def test_adam_in_the_real_loop_edge_is_38_over_lr(make_cfg) -> None:
    """The loop hands the run's own optimizer to the callback: Adam's stability ratio is η(1 − β1)/(1 + β1) ·
    λmax(P⁻¹H) with P from its state, and its edge 38/η."""
    cfg = make_cfg("optim=adam", "gd=batch", "train.epochs=5", *QUIET)
    history = train.run(cfg, [Sharpness(1, power_iters=30, probe_size=5000)])
    np.testing.assert_allclose(history.curve("stability_ratio"), 0.001 * 0.1 / 1.9 * history.curve("sharpness"))
    assert history.initial["lr_edge"] == pytest.approx(38 / history.initial["sharpness"], rel=1e-9)


def test_the_eos_sweep_starts_every_learning_rate_below_the_edge(make_cfg) -> None:
    """`+sweep=eos` is full-batch GD on a tanh MLP with MSE, and each of its learning rates starts with
    η·λmax(0) < 2, so that every run shows progressive sharpening before it reaches the edge."""
    cfg = make_cfg("+sweep=eos", "train.epochs=1", *QUIET)
    assert (cfg.gd.variant, cfg.model.activation, cfg.data.task) == ("batch", "tanh", "regression")
    lrs = [float(x) for x in re.findall(r"[\d.]+", str(cfg.sweep.params.optim.lr))]
    d = cfg.diagnostics
    history = train.run(cfg, [Sharpness(d.sharpness_every, d.power_iters, d.probe_size, cfg.train.seed)])
    assert len(lrs) == cfg.sweep.n_trials == 4
    assert max(lrs) * history.initial["sharpness"] < 2


def test_the_label_says_why_in_terms_of_the_stability_ratio(make_cfg) -> None:
    """The run of the edge-of-stability test, labelled: its reason says it trains at the edge, and a full-batch
    run far below the edge, or one that starts above it, says that instead."""
    base = ("gd=batch", "model.activation=tanh", "data.task=regression", "diagnostics.power_iters=20",
            "diagnostics.probe_size=5000", *QUIET)
    def run(*overrides: str) -> History:
        cfg = make_cfg(*base, *overrides)
        return train.run(cfg, callbacks_for(cfg))

    edge = run("train.epochs=1", "diagnostics.sharpness_every=1").initial["lr_edge"]
    at_edge = run(f"optim.lr={0.8 * edge!r}", "train.epochs=400", "diagnostics.sharpness_every=20")
    assert at_edge.edge_of_stability is True and "the run trains at the edge of stability" in at_edge.regime_reason
    tiny = run(f"optim.lr={0.01 * edge!r}", "train.epochs=20", "diagnostics.sharpness_every=5")
    assert tiny.edge_of_stability is False and tiny.regime == "too_small"
    assert "far shorter than the curvature allows" in tiny.regime_reason
    over = run(f"optim.lr={2.5 * edge!r}", "train.epochs=20", "diagnostics.sharpness_every=5")
    assert over.regime == "too_large" and "the first steps overshot the sharpest direction" in over.regime_reason


def test_a_quadratic_past_its_edge_is_no_edge_of_stability(make_cfg) -> None:
    """Linear regression, full-batch GD at 1.04 x 2/L: η·λmax stays at 2.08, inside the band around 2, while the
    loss grows every epoch. That is divergence, not the edge of stability, where the loss keeps falling."""
    base = ("data=linear", "model.hidden_layers=0", "gd=batch", "diagnostics.power_iters=100",
            "diagnostics.probe_size=10000", *QUIET)
    def run(*overrides: str) -> History:
        cfg = make_cfg(*base, "diagnostics.sharpness_every=1", *overrides)
        return train.run(cfg, callbacks_for(cfg))

    past = run(f"optim.lr={1.04 * run('train.epochs=1').initial['lr_edge']!r}", "train.epochs=20")
    assert np.allclose(past.curve("stability_ratio"), 2.08, rtol=1e-4)
    assert past.curve("train_loss")[-1] > past.initial["train_loss"]
    assert past.regime == "too_large" and past.edge_of_stability is False
    assert "edge of stability" not in past.regime_reason and "η·λmax = 2.08 at the start" in past.regime_reason


def test_mlflow_records_the_sharpness_names_the_issue_fixes(make_cfg, project) -> None:
    from gdexp.tracking import MlflowTracker
    from tests.conftest import mlflow_client

    cfg = make_cfg("gd=batch", "train.epochs=4", "diagnostics.sharpness_every=2", "diagnostics.power_iters=5",
                   "diagnostics.probe_size=300", "tracking.artifacts=false")
    tracker = MlflowTracker(cfg)
    history = train.run(cfg, callbacks_for(cfg, tracker=tracker))
    client = mlflow_client(cfg.tracking.uri)
    run = client.get_run(tracker.run_id)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "sharpness")] == [0, 2, 4]
    assert [m.step for m in client.get_metric_history(tracker.run_id, "stability_ratio")] == [0, 2, 4]
    assert run.data.metrics["sharpness_initial"] == pytest.approx(history.initial["sharpness"])
    assert run.data.metrics["lr_edge"] == pytest.approx(2 / history.initial["sharpness"])
    assert run.data.tags["edge_of_stability"] == "false" and "η·λmax" in run.data.tags["regime_reason"]


@pytest.mark.slow
def test_the_eos_sweep_and_its_report(project) -> None:
    """`+sweep=eos` (shortened) then `report eos`: sharpness.png, η·λmax in the table, the recommended rate."""
    import json

    from tests.conftest import gdexp

    result = gdexp("+sweep=eos", "train.epochs=60", "sweep.n_trials=2", "diagnostics.sharpness_every=10",
                   "sweep.params.optim.lr='choice(0.04,0.05)'", cwd=project)
    assert result.returncode == 0, result.stderr
    result = gdexp("-m", "gdexp.report", "eos", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Recommended learning rate, batch: 5.00e-02" in result.stdout
    out = project / "sweeps" / "eos" / "report"
    assert (out / "sharpness.png").stat().st_size > 10_000
    doc = json.loads((out / "regimes.json").read_text())
    assert doc["recommended"][0]["gd_variant"] == "batch" and doc["recommended"][0]["lr_edge"] > 0
    assert "batch η·λmax" in (out / "regimes.md").read_text()
