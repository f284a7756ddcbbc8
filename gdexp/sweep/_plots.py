"""The parent run's figures: optimisation history, parameter importances, the metric over lr x hidden size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from gdexp import compat, plots


def study_plots(cfg: DictConfig, study: optuna.Study, folder: Path) -> None:
    """optimization_history.png, param_importances.png, and the metric over learning rate x hidden size."""
    metric = cfg.sweep.metric
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return
    numbers = [t.number for t in done]
    values = np.array([t.value for t in done], dtype=float)
    best = np.minimum.accumulate(values) if cfg.sweep.direction == "minimize" else np.maximum.accumulate(values)
    fig, ax = plots.axes()
    ax.scatter(numbers, values, s=14, label=metric)
    ax.plot(numbers, best, color="C1", label="best so far")
    if plots.positive(values):
        plots.log_y(ax)
    ax.set(xlabel="trial", ylabel=metric, title=f"{cfg.sweep.name}: optimization history")
    ax.legend()
    plots.save(fig, folder / "optimization_history.png")

    importances = param_importances(study) if len(done) >= 3 else {}
    if importances:  # margins in inches: the parameter names at the left, the axis label below the bars
        height, names = 1.7 + 0.45 * len(importances), 0.35 + 0.085 * max(len(k) for k in importances)
        fig, ax = plots.axes(6.5, height, left=names / 6.5, bottom=0.65 / height, top=1 - 0.4 / height)
        ax.barh(list(importances)[::-1], list(importances.values())[::-1])
        ax.set(xlabel="importance (PED-ANOVA)", title=f"{cfg.sweep.name}: parameter importances")
        plots.save(fig, folder / "param_importances.png")

    lrs = np.array([t.params.get("optim.lr", cfg.optim.lr) for t in done], dtype=float)
    hidden = np.array([t.params.get("model.hidden_size", cfg.model.hidden_size) for t in done], dtype=float)
    fig, ax = plots.axes(left=0.14)
    points = ax.scatter(lrs, values, c=np.log2(hidden), cmap="viridis", s=22)
    fig.colorbar(points, label="log2 hidden size")
    ax.set_xscale("log")
    if plots.positive(values):
        plots.log_y(ax)
    ax.set(xlabel="learning rate", ylabel=metric, title=f"{cfg.sweep.name}: {metric} over lr and hidden size")
    plots.save(fig, folder / f"{metric}_vs_lr_hidden.png")

def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's PED-ANOVA importances of the searched parameters ({} when they cannot be computed): computed
    from the trials alone, in milliseconds, without scikit-learn (`compat.import_optuna_importance`)."""
    importance = compat.import_optuna_importance()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental in Optuna 4
        try:
            return importance.get_param_importances(study, evaluator=importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):
            return {}
