"""Regime labels across a sweep: each trial's run placed among its siblings (`regimes.label_siblings`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import TrialState

from gdexp import regimes, store
from gdexp.sweep._reconcile import unlabelled
from gdexp.sweep._record import TrialRecord

__all__ = ["label_trials", "relabel"]


def label_trials(records: Sequence[TrialRecord], rules: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """run id -> (regime, reason, sibling group) of every finished or pruned trial, by its place among the
    trials of its sibling group; an interrupted, lost or failed trial's run -> `none` and why. Trials still
    running are left out, and so are trials of an older gdexp that kept no outcome (their runs keep their tags)."""
    labels: dict[str, tuple[str, str, str]] = {}
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.run_id is None or r.active:
            continue
        if r.state in (TrialState.COMPLETE, TrialState.PRUNED):
            if r.outcome is not None:
                groups.setdefault(r.outcome.group, []).append(r)
        else:
            tags = unlabelled(r.unfinished)
            labels[r.run_id] = (tags["regime"], tags["regime_reason"], "")
    for group, members in groups.items():
        siblings = [_sibling(r) for r in members]
        for r, (regime, reason) in zip(members, regimes.label_siblings(siblings, rules), strict=True):
            assert r.run_id is not None
            labels[r.run_id] = (regime, reason, group)
    return labels


def relabel(uri: str, records: Sequence[TrialRecord], rules: Mapping[str, Any]) -> None:
    """Write every run's `regime`, `regime_reason` and `sibling_group` tags (`label_trials`); a run the user
    deleted in MLflow is left as it is (its trial still places its siblings)."""
    for run_id, (regime, reason, group) in label_trials(records, rules).items():
        tags = {"regime": regime, "regime_reason": reason}
        if group:
            tags["sibling_group"] = group
        store.set_tags_unless_deleted(uri, run_id, tags)


def _sibling(r: TrialRecord) -> regimes.Sibling:
    o = r.outcome
    assert o is not None
    return regimes.Sibling(o.lr, o.initial, o.losses, o.regime, o.reason, name=f"trial {r.number}",
                           pruned=r.state == TrialState.PRUNED)
