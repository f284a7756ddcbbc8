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

Within a sweep (`label_siblings`) a run is also compared with its siblings, the runs that differ only
in the learning rate and the hidden size (`SIBLING_FREE`). A run whose own curve overshot (rule 1)
stays too_large wherever it is. The best sibling is the finished run with the lowest final
validation loss among the others. A finished run is just_right when its final validation loss is
within `sibling_tolerance` of the best's; a pruned run is compared as the pruner compared it, by its
value of the sweep's metric at the epoch where it stopped against the best sibling's value at that
same epoch. A run that is not close is too_small or too_large by which side of the best run's learning
rate it lies on. Then the labels are put in order: among siblings of one hidden size, a label never
goes down as the learning rate goes up (too_small < just_right < too_large), so the just-right runs
form one window around the best (`order_violations` states the invariant; the report checks it).

A run that was interrupted or failed is no regime sample: it is labelled `none` (`NONE`).

On a quadratic loss (linear regression with full-batch GD), theory says GD converges for steps
below 2/L and diverges above (L: the largest Hessian eigenvalue); rule 1 and 2 agree with it, as the
tests check with steps of 0.03/L, 1/L and 2.5/L.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EDGE", "NONE", "REGIMES", "SIBLING_FREE", "Sibling", "classify", "label_siblings", "order_violations",
           "overshoot", "stability"]

REGIMES = ("too_small", "just_right", "too_large")  # in the order of the learning rate
EDGE = 2.0  # GD is stable along a direction while η·λ < 2
EDGE_BAND = 0.1  # "at the edge": the stability ratio's median over the last quarter within 2 ± this
FAR_BELOW = 0.05  # steps "far shorter than the curvature allows": η·λmax at most this throughout
NONE = "none"  # the label of a run that is no regime sample: interrupted (KILLED) or failed
SIBLING_FREE = ("optim.lr", "model.hidden_size")  # the searched keys in which siblings may differ


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def overshoot(initial: float, losses: Sequence[float] | np.ndarray, *, diverged: bool, note: str = "",
              rules: Mapping[str, Any]) -> str | None:
    """Why a curve is too_large by itself (rule 1), or None when it did not overshoot. Siblings never
    change this verdict: a run that diverged or whose loss rose is too_large wherever its learning rate is."""
    curve = np.asarray(losses, dtype=float)
    n = len(curve)
    if diverged or n == 0 or not np.all(np.isfinite(curve)) or not math.isfinite(initial):
        return f"the loss diverged: {note}" if note else "the loss diverged"
    final = float(curve[-1])
    if final >= initial:
        return f"the loss ended at {final:.4g}, above its initial {initial:.4g}"
    full = np.concatenate([[initial], curve])
    rises = int(np.sum(full[1:] > full[:-1] * (1 + rules["rise_tolerance"])))
    if n >= 4 and rises / n > rules["oscillation"]:
        return f"the loss rose in {rises} of {n} epochs: the steps overshoot and oscillate"
    return None


def classify(initial: float, losses: Sequence[float] | np.ndarray, *, diverged: bool, note: str = "",
             rules: Mapping[str, Any]) -> tuple[str, str]:
    """(regime, reason) of one run from its initial loss and per-epoch training losses."""
    overshot = overshoot(initial, losses, diverged=diverged, note=note, rules=rules)
    if overshot is not None:
        return "too_large", overshot
    curve = np.asarray(losses, dtype=float)
    n = len(curve)
    final = float(curve[-1])
    full = np.concatenate([[initial], curve])
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


@dataclass(frozen=True)
class Sibling:
    """One run of a sweep, as `label_siblings` and `order_violations` read it."""

    lr: float
    val_loss: float  # final validation loss (NaN or inf when it diverged; a pruned run's: where it stopped)
    regime: str  # the label of its own curve (`classify`): only whether it is too_large matters here
    reason: str
    hidden: float = math.nan  # hidden size: runs of one hidden size are put in order of learning rate
    name: str = ""  # how reasons and messages name the run, e.g. "trial 7"
    pruned_at: int | None = None  # the epoch at which the pruner stopped it; None: it ran to its end
    values: Mapping[int, float] = field(default_factory=dict)  # the sweep's metric by epoch, as the pruner saw it

    @property
    def overshot(self) -> bool:
        """Its own curve diverged or rose: too_large, whatever its siblings did."""
        return self.regime == "too_large"

    @property
    def label(self) -> str:
        return self.name or f"the run at lr {self.lr:.3g}"


def label_siblings(runs: Sequence[Sibling], tolerance: float, *, minimize: bool = True,
                   metric: str = "val_loss") -> list[tuple[str, str]]:
    """(regime, reason) of each run of one sibling group, by its place among the others (module docstring).

    `minimize` and `metric` are the sweep's direction and metric: a pruned run is compared in them, as
    the pruner compared it; a finished run by its final validation loss."""
    if len(runs) < 2:
        return [(r.regime, r.reason) for r in runs]  # no sibling to be placed among
    best = _best(runs)
    labels = [(r.regime, r.reason) if r.overshot
              else _at_end(r, best, tolerance) if r.pruned_at is None
              else _at_stop(r, runs, best, tolerance, minimize, metric) for r in runs]
    return labels if best is None else _in_order(runs, labels, best)


def order_violations(runs: Sequence[Sibling], labels: Sequence[str]) -> list[str]:
    """What breaks the order invariant in one sibling group, one sentence each (empty when it holds).

    The invariant: a run whose own curve overshot is too_large; the best run is just_right; no run
    whose learning rate is above the best run's is too_small; among runs of one hidden size, labels
    never go down as the learning rate goes up, except below a run that overshot (too_large wherever
    it is). Runs labelled `none` are not regime samples and are left out. A run without siblings, and a
    group without a best run (no finished run that did not overshoot), have nothing to be placed
    against: their runs keep their own labels, in no promised order."""
    placed = [(r, label) for r, label in zip(runs, labels, strict=True) if label in REGIMES]
    problems = [f"{r.label} overshot by its own curve but is labelled {label}"
                for r, label in placed if r.overshot and label != "too_large"]
    best = _best([r for r, _ in placed])
    if best is None or len(placed) < 2:
        return problems
    problems += [f"{r.label} has the lowest val_loss of its siblings but is labelled {label}"
                 for r, label in placed if r is best and label != "just_right"]
    problems += [f"{r.label} (lr {r.lr:.3g}) is too_small, above the best run {best.label} (lr {best.lr:.3g})"
                 for r, label in placed if label == "too_small" and r.lr > best.lr]
    rank = {regime: i for i, regime in enumerate(REGIMES)}
    for r, label in placed:
        higher = [(s, other) for s, other in placed if not r.overshot and s.lr > r.lr
                  and _same_size(r, s) and rank[other] < rank[label]]
        problems += [f"{r.label} (lr {r.lr:.3g}) is {label} but {s.label} (lr {s.lr:.3g}, same hidden size) is "
                     f"{other}" for s, other in higher]
    return problems


def _best(runs: Sequence[Sibling]) -> Sibling | None:
    """The finished run with the lowest final validation loss among those that did not overshoot."""
    candidates = [r for r in runs if r.pruned_at is None and not r.overshot and math.isfinite(r.val_loss)]
    return min(candidates, key=lambda r: r.val_loss, default=None)


def _close(value: float, reference: float, tolerance: float, minimize: bool) -> bool:
    slack = tolerance * abs(reference)
    return value <= reference + slack if minimize else value >= reference - slack


def _side(r: Sibling, anchor: Sibling) -> tuple[str, str]:
    """The label of a run that is not close to the best, by its learning rate against the anchor's, and why."""
    if r.lr < anchor.lr:
        return "too_small", f"its step is smaller than the best run's ({anchor.label}, lr {anchor.lr:.3g})"
    if r.lr > anchor.lr:
        return "too_large", f"its step is larger than the best run's ({anchor.label}, lr {anchor.lr:.3g})"
    return "just_right", f"its learning rate is the best run's ({anchor.label}): the gap is not the step's"


def _at_end(r: Sibling, best: Sibling | None, tolerance: float) -> tuple[str, str]:
    """A finished run against the best sibling's final validation loss."""
    if best is None:
        return r.regime, r.reason
    if not math.isfinite(r.val_loss):
        regime, why = _side(r, best)
        return regime, f"{r.reason}; it has no final val_loss: {why}"
    if r is best:
        return "just_right", f"{r.reason}; its val_loss {r.val_loss:.4g} is the best of its siblings"
    if _close(r.val_loss, best.val_loss, tolerance, minimize=True):
        return "just_right", (f"{r.reason}; its val_loss {r.val_loss:.4g} is within {_pct(tolerance)} of the best "
                              f"sibling's {best.val_loss:.4g} ({best.label}, lr {best.lr:.3g})")
    regime, why = _side(r, best)
    ratio = f"{r.val_loss / best.val_loss:.3g}x" if best.val_loss > 0 else "above"
    return regime, f"{r.reason}; its val_loss {r.val_loss:.4g} is {ratio} the best sibling's {best.val_loss:.4g}: {why}"


def _at_stop(r: Sibling, runs: Sequence[Sibling], best: Sibling | None, tolerance: float, minimize: bool,
             metric: str) -> tuple[str, str]:
    """A pruned run, as the pruner saw it: its metric at the epoch where it stopped against the best sibling's
    at that same epoch (its own two-epoch curve says little about where it was heading)."""
    epoch = r.pruned_at
    assert epoch is not None, "only a pruned run is compared at the epoch where it stopped"
    head = f"pruned at epoch {epoch}"
    value = r.values.get(epoch, math.nan)
    others = [s for s in runs if s is not r and math.isfinite(s.values.get(epoch, math.nan))]
    if not others or not math.isfinite(value):
        head = f"{head}, with no {metric} at that epoch to compare with siblings'"
        if best is None:
            return r.regime, f"{head}; its own curve: {r.reason}"
        regime, why = _side(r, best)
        return regime, f"{head}: {why}"
    ref = (min if minimize else max)(others, key=lambda s: s.values[epoch])
    at = ref.values[epoch]
    close = _close(value, at, tolerance, minimize)
    how = (f"within {_pct(tolerance)} of" if close else f"{value / at:.3g}x" if minimize and at > 0 else "worse than")
    seen = (f"{head}: its {metric} there, {value:.4g}, was {how} the best sibling's at epoch {epoch}, "
            f"{at:.4g} ({ref.label}, lr {ref.lr:.3g})")
    if close:
        return "just_right", seen
    regime, why = _side(r, best if best is not None else ref)
    return regime, f"{seen}; {why}"


def _same_size(a: Sibling, b: Sibling) -> bool:
    return a.hidden == b.hidden or not (math.isfinite(a.hidden) or math.isfinite(b.hidden))


def _in_order(runs: Sequence[Sibling], labels: list[tuple[str, str]], best: Sibling) -> list[tuple[str, str]]:
    """Make the labels monotone in the learning rate among runs of one hidden size: walking away from the best
    learning rate, once a run is too_small (downwards) or too_large (upwards), every run further out is too.
    Noise can put a run inside the tolerance beyond one that is outside it; a window of just-right rates with
    a hole in it is not a claim a reader could sign, so the window ends at the first run outside it."""
    out = list(labels)
    sizes: dict[float | None, list[int]] = {}
    for i, r in enumerate(runs):
        sizes.setdefault(r.hidden if math.isfinite(r.hidden) else None, []).append(i)
    for members in sizes.values():
        below = sorted((i for i in members if runs[i].lr < best.lr), key=lambda i: -runs[i].lr)
        above = sorted((i for i in members if runs[i].lr > best.lr), key=lambda i: runs[i].lr)
        _spread(runs, out, below, "too_small", "larger")
        _spread(runs, out, above, "too_large", "smaller")
    return out


def _spread(runs: Sequence[Sibling], out: list[tuple[str, str]], walk: Sequence[int], regime: str, word: str) -> None:
    """Along `walk` (away from the best), every run past the first one labelled `regime` gets it too;
    a run that overshot keeps its too_large."""
    first: Sibling | None = None
    for i in walk:
        if first is None:
            first = runs[i] if out[i][0] == regime else None
        elif out[i][0] != regime and not runs[i].overshot:
            out[i] = (regime, f"{out[i][1]}; but {first.label} (lr {first.lr:.3g}), of the same hidden size and a "
                              f"{word} step, is {regime}, so this one is too")


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
