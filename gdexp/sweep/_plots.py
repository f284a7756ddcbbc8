"""The parent run's figures: optimisation history, parameter importances, the metric over lr x hidden size."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from gdexp import compat, plots
from gdexp.sweep._record import TrialRecord


def study_plots(cfg: DictConfig, study: optuna.Study, folder: Path) -> None:
    """optimization_history.png, param_importances.png, and the metric over learning rate x hidden size."""
    from matplotlib.ticker import MaxNLocator

    metric = cfg.sweep.metric
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return
    numbers = np.array([t.number for t in done], dtype=float)
    values = np.array([t.value for t in done], dtype=float)
    outcomes = [TrialRecord.of(t).outcome for t in done]
    diverged = np.array([o is not None and o.diverged for o in outcomes])
    best = np.minimum.accumulate(values) if cfg.sweep.direction == "minimize" else np.maximum.accumulate(values)
    fig, ax = plots.axes()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered: no tick at trial 2.5
    ax.scatter(numbers[~diverged], values[~diverged], s=14, label=metric)
    ax.plot(numbers, best, color="C1", label="best so far")
    _penalties_on_top(ax, numbers, values, diverged)
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

    _over_lr_and_hidden(cfg, done, outcomes, values, diverged, folder)


def _penalties_on_top(ax: Any, x: np.ndarray, values: np.ndarray, diverged: np.ndarray) -> None:
    """The value axis spans the trials that did not diverge (log where all are positive); a diverged trial's value
    is a penalty (its worst loss times `train.divergence_factor`, 1e3 to 1e7) that would squash them into a
    corner: it is a triangle along the top instead, at its x."""
    kept = values[~diverged] if (~diverged).any() else values
    if plots.positive(kept):
        plots.log_y(ax)
        low, high, top = float(np.nanmin(kept)) / 1.5, float(np.nanmax(kept)) * 2.0, float(np.nanmax(kept)) * 1.5
    else:
        pad = 0.05 * (float(np.nanmax(kept)) - float(np.nanmin(kept)) or 1.0)
        low, high, top = float(np.nanmin(kept)) - pad, float(np.nanmax(kept)) + 2 * pad, float(np.nanmax(kept)) + pad
    if diverged.any() and (~diverged).any():
        ax.scatter(x[diverged], np.full(int(diverged.sum()), top), marker="^", s=30, zorder=3,
                   color=plots.REGIME_COLORS["too_large"], label="diverged (penalty value, off the axis)")
        ax.set_ylim(low, high)


def _over_lr_and_hidden(cfg: DictConfig, done: list[FrozenTrial], outcomes: list[Any], values: np.ndarray,
                        diverged: np.ndarray, folder: Path) -> None:
    """The metric over the learning rate, coloured by hidden size where it varies, a marker per GD variant where
    the sweep searched it, hollow grey for a linear model: what each trial trained (its record), searched or not;
    diverged trials at the top edge (`_penalties_on_top`)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    metric = cfg.sweep.metric
    lrs = np.array([math.nan if o is None else o.lr for o in outcomes], dtype=float)
    hidden = np.array([math.nan if o is None else o.hidden_size for o in outcomes], dtype=float)
    variants = np.array([t.params.get("gd", t.params.get("gd.variant", cfg.gd.variant)) for t in done])
    several = np.unique(variants).size > 1  # the sweep searched the GD variant: a marker for each
    sizes = np.unique(hidden[hidden > 0])
    shade: dict[str, Any] = ({"cmap": "viridis", "vmin": np.log2(sizes.min()), "vmax": np.log2(sizes.max())}
                             if sizes.size > 1 else {"color": "C0"})  # colours by hidden size where it varies
    fig, ax = plots.axes(left=0.14)
    points, handles = None, []
    for variant in np.unique(variants):
        marker = plots.VARIANT_MARKS.get(variant, "D") if several else "o"
        these = (variants == variant) & ~diverged
        nets, linear = these & (hidden > 0), these & (hidden == 0)
        if nets.any():
            colour = {"c": np.log2(hidden[nets])} if sizes.size > 1 else {}
            points = ax.scatter(lrs[nets], values[nets], s=24, marker=marker, **colour, **shade)
        if linear.any():
            ax.scatter(lrs[linear], values[linear], s=26, marker=marker, facecolors="none", edgecolors="0.35")
        if several:  # legend entries in grey: the colours are the hidden sizes'
            handles.append(Line2D([], [], ls="", marker=marker, color="0.35", label=f"{variant} GD"))
    if (hidden == 0).any():
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="0.35", label="linear (no hidden layer)"))
    if points is not None and sizes.size > 1:  # the sizes themselves on a log2 scale: 8, 16, ..., 512
        fig.colorbar(points, label="hidden size", format=FuncFormatter(lambda v, _: f"{2**v:.0f}"))
    ax.set_xscale("log")
    _penalties_on_top(ax, lrs, values, diverged)
    if diverged.any():
        handles.append(Line2D([], [], ls="", marker="^", color=plots.REGIME_COLORS["too_large"],
                              label="diverged (penalty value, off the axis)"))
    if handles:
        ax.legend(handles=handles, fontsize="small")
    over = "lr and hidden size" if sizes.size > 1 else f"lr (hidden size {sizes[0]:g})" if sizes.size else "lr"
    ax.set(xlabel="learning rate", ylabel=metric, title=f"{cfg.sweep.name}: {metric} over {over}")
    plots.save(fig, folder / f"{metric}_vs_lr_hidden.png")


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's PED-ANOVA importances of the searched parameters ({} when they cannot be computed): computed
    from the trials alone, in milliseconds, without scikit-learn (`compat.import_optuna_importance`)."""
    importance = compat.import_optuna_importance()
    with warnings.catch_warnings(record=True) as said:  # ExperimentalWarning: experimental in Optuna 4
        warnings.simplefilter("always")
        try:
            found = importance.get_param_importances(study, evaluator=importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):
            return {}
    # too few trials apart (every trial diverged, say): Optuna warns and returns equal importances, no figure's worth
    return {} if any("importances will be equal" in str(w.message) for w in said) else found
