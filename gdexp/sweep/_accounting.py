"""What counts toward `sweep.n_trials`, and a trial's objective value."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
from optuna.trial import TrialState

from gdexp.history import History
from gdexp.sweep._record import TrialRecord

__all__ = ["tally", "trial_value"]


def tally(records: Iterable[TrialRecord]) -> Counter[str]:
    """Counts by what they mean to the total: `done` (counted: `complete`, `pruned`, `failed`; `diverged`
    among them), `active` (running or waiting), `not counted` (interrupted, lost, store failed)."""
    counts: Counter[str] = Counter()
    for r in records:
        if r.counted:
            counts["done"] += 1
            counts[{TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(r.state, "failed")] += 1
            counts["diverged"] += bool(r.outcome is not None and r.outcome.diverged)
        elif r.active:
            counts["active"] += 1
        else:
            counts["not counted"] += 1
    return counts


def trial_value(history: History, metric: str, direction: str, factor: float) -> float:
    """The trial's objective: the metric's last value; for a diverged run a finite penalty worse than
    anything it reached (minimize: worst finite value x divergence factor; maximize: its worst value)."""
    values = history.curve(metric)
    finite = values[np.isfinite(values)]
    if not history.diverged and len(values) and math.isfinite(values[-1]):
        return float(values[-1])
    initial = history.initial.get(metric, math.nan)
    seen = np.concatenate([finite, [initial] if math.isfinite(initial) else []])
    if direction == "minimize":
        return float(np.max(np.abs(seen)) * factor) if seen.size else 1e30
    return float(np.min(seen)) if seen.size else -1e30
