"""Regime labels across a sweep: each trial's run placed among its siblings, and why a run has none."""

from __future__ import annotations

import math
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from gdexp import regimes, store


def unlabelled(why: str) -> dict[str, str]:
    """The tags of a run that is no regime sample (interrupted, failed): `regime=none` and why."""
    return {"regime": regimes.NONE, "regime_reason": f"{why}: not a regime sample"}

def relabel_siblings(cfg: DictConfig, study: optuna.Study) -> None:
    """Label every trial's run among its siblings (`regimes.label_siblings`) and write its `regime` and
    `regime_reason` tags. Siblings are the trials that differ only in the learning rate and the hidden
    size (`regimes.SIBLING_FREE`): the hidden size moves the loss far less than the learning rate does,
    and in the `lr` sweep, where both are sampled, no two runs would otherwise share a group. A pruned
    trial is compared as the pruner compared it, by its intermediate values; an interrupted or failed
    trial's run is labelled `none`; a trial still running is left alone."""
    labels: dict[str, tuple[str, str]] = {}
    groups: dict[tuple[Any, ...], list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id is None or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            key = tuple(sorted((k, str(v)) for k, v in t.params.items() if k not in regimes.SIBLING_FREE))
            groups.setdefault(key, []).append(t)
        else:
            tags = unlabelled(_why_not_labelled(t))
            labels[run_id] = (tags["regime"], tags["regime_reason"])
    for trials in groups.values():
        members = [_sibling(cfg, t) for t in trials]
        placed = regimes.label_siblings(members, cfg.regimes.sibling_tolerance,
                                        minimize=cfg.sweep.direction == "minimize", metric=cfg.sweep.metric)
        labels.update((t.user_attrs["mlflow_run_id"], label) for t, label in zip(trials, placed, strict=True))
    for run_id, (regime, reason) in labels.items():
        store.set_tags(cfg.tracking.uri, run_id, {"regime": regime, "regime_reason": reason})

def _sibling(cfg: DictConfig, t: FrozenTrial) -> regimes.Sibling:
    """A finished or pruned trial as `regimes.label_siblings` reads it."""
    a = t.user_attrs
    if "regime" in a:
        own = (str(a["regime"]), str(a.get("regime_reason", "")))
    else:  # a trial of an older gdexp: its run's tag, as the tracker wrote it
        tags = store.get_run(cfg.tracking.uri, a["mlflow_run_id"]).data.tags
        own = (tags.get("regime", ""), tags.get("regime_reason", ""))
    pruned = t.state == TrialState.PRUNED and bool(t.intermediate_values)
    return regimes.Sibling(
        float(a.get("lr", math.nan)), float(a.get("final_val_loss", math.nan)), *own,
        hidden=float(a.get("hidden_size", t.params.get("model.hidden_size", cfg.model.hidden_size))),
        name=f"trial {t.number}", pruned_at=max(t.intermediate_values) if pruned else None,
        values=t.intermediate_values)

def _why_not_labelled(t: FrozenTrial) -> str:
    if t.user_attrs.get("interrupted"):
        return "interrupted"
    error = t.user_attrs.get("error")
    return f"training failed ({error})" if error else "its worker stopped"
