"""Learning-rate regime labels: `too_small`, `just_right`, `too_large`, each with a plain reason.

The rule reads the training-loss curve (one value per epoch, plus the loss before training):

1. too_large when the run diverged (NaN, inf, or a loss past the divergence factor), when the loss
   ended above where it started, or when more than `oscillation` of the epochs rose (by more than
   `rise_tolerance`): the steps overshoot.
2. too_small when the loss fell by less than `min_progress` of its initial value, or when it was
   still falling steadily at the end: it fell in every epoch of the last `tail_fraction` of the
   run, and, continuing at the pace those epochs set (each epoch's decrease shrinking by the ratio
   it shrank by over the tail), as many epochs again would add more than `still_falling` of the
   decrease so far. The steps are so short that the run stopped far from where it was heading.
3. just_right otherwise: the loss fell and flattened out.

Within a sweep (`label_siblings`) a run is also compared with its siblings that differ only in the
learning rate (and the hidden size, when the sweep searches both): a run that did not overshoot is
just_right when its final validation loss is within
`sibling_tolerance` of the best sibling's, and otherwise too_small or too_large by which side of the
best learning rate it lies on.

On a quadratic loss (linear regression with full-batch GD), theory says GD converges for steps
below 2/L and diverges above (L: the largest Hessian eigenvalue); rule 1 and 2 agree with it, as the
tests check with steps of 0.03/L, 1/L and 2.5/L.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EDGE", "REGIMES", "Siblings", "classify", "label_siblings", "stability"]

REGIMES = ("too_small", "just_right", "too_large")
EDGE = 2.0  # GD is stable along a direction while η·λ < 2
EDGE_BAND = 0.1  # "at the edge": the stability ratio's median over the last quarter within 2 ± this
FAR_BELOW = 0.05  # steps "far shorter than the curvature allows": η·λmax at most this throughout


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def classify(initial: float, losses: Sequence[float] | np.ndarray, *, diverged: bool, note: str = "",
             rules: Mapping[str, Any]) -> tuple[str, str]:
    """(regime, reason) of one run from its initial loss and per-epoch training losses."""
    curve = np.asarray(losses, dtype=float)
    n = len(curve)
    if diverged or n == 0 or not np.all(np.isfinite(curve)) or not math.isfinite(initial):
        return "too_large", f"the loss diverged: {note}" if note else "the loss diverged"
    final = float(curve[-1])
    if final >= initial:
        return "too_large", f"the loss ended at {final:.4g}, above its initial {initial:.4g}"
    full = np.concatenate([[initial], curve])
    rises = int(np.sum(full[1:] > full[:-1] * (1 + rules["rise_tolerance"])))
    if n >= 4 and rises / n > rules["oscillation"]:
        return "too_large", f"the loss rose in {rises} of {n} epochs: the steps overshoot and oscillate"
    progress = (initial - final) / initial if initial > 0 else 1.0
    if progress < rules["min_progress"]:
        return "too_small", f"the loss fell only {_pct(progress)} in {n} epochs"
    tail = max(2, round(n * rules["tail_fraction"]))
    segment = full[-(tail + 1):]
    steps = -np.diff(segment)
    if np.all(steps > 0):
        share = _ahead(steps, n) / (initial - final)
        if share > rules["still_falling"]:
            return "too_small", (f"the loss fell {_pct(progress)} in {n} epochs and was still falling: at its "
                                 f"last pace another {n} epochs would add {_pct(share)} more")
    return "just_right", f"the loss fell {_pct(progress)} in {n} epochs and levelled off"


def _ahead(steps: np.ndarray, epochs: int) -> float:
    """The decrease the next `epochs` epochs would bring if the per-epoch decrease kept shrinking at the
    rate it shrank over `steps` (the last epochs' decreases): d·r(1 − r^epochs)/(1 − r). For GD on a
    quadratic the decrease shrinks geometrically, so this is the exact forecast of its slowest mode."""
    ratio = float((steps[-1] / steps[0]) ** (1 / (len(steps) - 1))) if len(steps) > 1 else 0.5
    ratio = min(ratio, 1.0)
    if ratio == 1.0:
        return float(steps[-1] * epochs)
    return float(steps[-1] * ratio * (1 - ratio**epochs) / (1 - ratio))


@dataclass
class Siblings:
    """One run of a group that differs only in the learning rate, as `label_siblings` reads it."""

    lr: float
    val_loss: float  # final validation loss (NaN or inf when it diverged)
    regime: str  # the label from `classify`
    reason: str


def label_siblings(runs: Sequence[Siblings], tolerance: float) -> list[tuple[str, str]]:
    """Relabel a group of runs by their place among each other (see the module docstring)."""
    ok = [r for r in runs if r.regime != "too_large" and math.isfinite(r.val_loss)]
    if len(runs) < 2 or not ok:
        return [(r.regime, r.reason) for r in runs]
    best = min(ok, key=lambda r: r.val_loss)
    labels = []
    for r in runs:
        if r.regime == "too_large" or not math.isfinite(r.val_loss):
            labels.append((r.regime, r.reason))
        elif r.val_loss <= best.val_loss * (1 + tolerance):
            labels.append(("just_right", f"{r.reason}; its val_loss {r.val_loss:.4g} is within "
                                         f"{_pct(tolerance)} of the best sibling's {best.val_loss:.4g}"))
        else:
            side = "too_small" if r.lr < best.lr else "too_large"
            word = "smaller" if side == "too_small" else "larger"
            labels.append((side, f"{r.reason}; its val_loss {r.val_loss:.4g} is {r.val_loss / best.val_loss:.3g}x "
                                 f"the best sibling's {best.val_loss:.4g} (lr {best.lr:.3g}), with a {word} step"))
    return labels


def stability(initial: float, epochs: Sequence[int], ratios: Sequence[float]) -> tuple[str, bool | None]:
    """Why, in terms of curvature: a sentence on the stability ratio η·λmax (`initial` before training,
    `ratios` measured after the given epochs; NaN where not measured) and whether the run ended at the
    edge of stability (None when nothing was measured).

    At the edge: the median of the last quarter of the measurements (at least three) is within
    2 ± `EDGE_BAND`; the sentence gives the spread from the first epoch where the ratio reached 1.9."""
    pairs = [(e, r) for e, r in zip(epochs, ratios, strict=True) if math.isfinite(r)]
    if not pairs and not math.isfinite(initial):
        return "", None
    values = np.array([r for _, r in pairs])
    start = f"{initial:.2g}" if math.isfinite(initial) else "?"
    if len(values) >= 3:
        last = values[-max(3, len(values) // 4):]
        if abs(float(np.median(last)) - EDGE) <= EDGE_BAND:
            first = next(e for e, r in pairs if r >= EDGE - EDGE_BAND)
            settled = values[[i for i, (e, _) in enumerate(pairs) if e >= first]]
            return (f"η·λmax rose from {start} and stayed at {settled.mean():.2f} ± {settled.std():.2f} from epoch "
                    f"{first}: the run trains at the edge of stability"), True
    top = max([initial, *values.tolist()]) if math.isfinite(initial) else float(values.max())
    if math.isfinite(initial) and initial > EDGE:
        return f"η·λmax = {initial:.2g} at the start: steps overshoot the sharpest direction (stable below 2)", False
    if top <= FAR_BELOW:
        return f"η·λmax ≤ {top:.2g} throughout: steps are far shorter than the curvature allows (up to 2)", False
    end = f"{values[-1]:.2g}" if len(values) else start
    return f"η·λmax went from {start} to {end} (GD is stable below 2)", False
