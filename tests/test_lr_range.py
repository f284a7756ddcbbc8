"""The learning-rate range test: the reading of its curve, and its run in a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdexp import lr_range
from gdexp.lr_range import exponential, suggest
from tests.conftest import mlflow_client


@pytest.mark.parametrize(("jitter", "smoothing"), [(0.0, 0.0), (0.3, 0.9)])
def test_range_test_reads_a_known_curve(jitter: float, smoothing: float) -> None:
    """A loss that is flat below 1e-3, falls fastest near 1e-2, is lowest at 0.3 and explodes past 1; and the same
    with its first batches' losses jittering by ±15 %, as a fresh network's do: the smoothed average, warming up
    on them 0.01 decade apart, fell 5x faster there than anywhere after, and the first rate tried was read as
    the steepest fall."""
    schedule = exponential(1e-5, 10.0)
    lrs = np.array([schedule(i, 600) for i in range(600)])
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(10.0)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 2) * 3)) + np.where(x > np.log10(0.3), 40 * (x - np.log10(0.3)) ** 2, 0)
    losses[1:6] += jitter * np.array([1, -1, 1, -1, 1])
    result = suggest(lrs, losses, smoothing=smoothing)
    assert 5e-3 < result["steepest_lr"] < 2e-2
    assert 0.2 < result["min_loss_lr"] < 0.45 and result["suggested_lr"] == pytest.approx(result["min_loss_lr"] / 10)
    assert 0.3 < result["divergence_lr"] < 3.0
    assert result["window_low"] < result["window_high"] < result["divergence_lr"]


def test_the_range_test_run_is_recorded_as_no_regime_sample(make_cfg, project: Path) -> None:
    cfg = make_cfg("+sweep=lr_range", "train.epochs=2", "tracking.artifacts=false")
    suggested = lr_range.run(cfg)
    (run,) = mlflow_client(cfg.tracking.uri).search_runs(
        [mlflow_client(cfg.tracking.uri).get_experiment_by_name("gdexp").experiment_id])
    assert run.info.run_name == "lr_range-sgd-minibatch32-h64" and run.data.tags["gdexp.role"] == "lr_range"
    assert "regime" not in run.data.tags, "one run that sweeps the learning rate is no regime sample"
    assert float(run.data.params["lr_range.suggested_lr"]) == pytest.approx(suggested, rel=1e-5)
    lrs = mlflow_client(cfg.tracking.uri).get_metric_history(run.info.run_id, "lr")
    assert lrs[0].value == pytest.approx(1e-5) and [m.step for m in lrs[:3]] == [1, 2, 3]


def test_the_range_test_figure_marks_what_the_suggestion_reads(tmp_path: Path, monkeypatch) -> None:
    """lr_range.png drew the raw batch losses only, with neither the steepest fall, the lowest point nor the
    suggested rate on it: now the smoothed curve the suggestion reads, both points, the suggested rate and the
    edge, at the report figures' 150 dpi; the y range cut the noisy batch losses off below the smoothed curve."""
    from gdexp import plots
    from tests.test_report_landscape import kept_figures

    figures = kept_figures(monkeypatch)
    schedule = exponential(1e-5, 10.0)
    lrs = np.array([schedule(i, 600) for i in range(600)])
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 2) * 3)) + np.where(x > np.log10(0.3), 40 * (x - np.log10(0.3)) ** 2, 0)
    losses *= 1 + 0.5 * np.sin(1.7 * np.arange(600))  # batch noise
    result = suggest(lrs, losses, smoothing=0.9)
    plots.lr_range(lrs, losses, lr_range.smoothed(losses, 0.9), result, tmp_path / "lr_range.png")
    (ax,) = figures["lr_range.png"].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith(f"steepest fall: lr {result['steepest_lr']:.3g}") for t in labels)
    assert any(t.startswith(f"lowest loss: lr {result['min_loss_lr']:.3g}") for t in labels)
    assert any(t.startswith(f"suggested lr {result['suggested_lr']:.3g}") for t in labels)
    assert any(t.startswith("smoothed") for t in labels)
    assert ax.get_ylim()[0] < np.percentile(losses, 1.5), "the batch losses near the lowest point stay in view"
    assert int.from_bytes((tmp_path / "lr_range.png").read_bytes()[16:20], "big") >= 1200
