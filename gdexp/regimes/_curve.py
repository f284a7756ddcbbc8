"""One run's regime from its own training-loss curve: overshoot, slowness, or neither.

The curve is the training loss on the whole training set after every epoch, starting from the loss before
the first update: the quantity gradient descent minimises, measured the same way at every epoch, so a rise
in it is the optimiser's doing and not the noise of a batch or of a small validation set.

1. too_large when the steps overshoot: the run diverged (NaN, inf, past `train.divergence_factor`); its loss
   ended at or above where it started; one rise gave back more than `spike` of the ground gained so far
   (the loss jumped back up the hill; a rise above the initial loss counts however early); or the loss rose,
   by more than `rise_tolerance` of the ground gained so far, in more than `oscillation` of the epochs.
2. too_small when the steps are too short to get near the bottom in the time given: the loss fell by less
   than `min_progress` of its initial value (a loss that never moved included: a float32 step below the
   weights' precision), its one epoch shows no pace to call levelled off, or it was still falling over the last
   `tail_fraction` of the epochs at a pace that, continued for as many epochs again (the decrease shrinking at
   the rate it shrank from the first half of those epochs to the second), would add more than `still_falling`
   of the decrease so far. But a full-batch run that rose (by more than `rise_tolerance` of the ground gained)
   is too_large instead: its steps carry no noise, so a rise is a step that overshot.
3. just_right otherwise: the loss fell and levelled off, with no overshoot.

Rises are measured against the ground gained (initial − lowest so far), not against the previous value:
near the bottom a loss of 0.004 that wobbles to 0.005 has risen 25 %, yet it gave back nothing a reader
could see on the curve. On a quadratic loss (linear regression, full-batch GD) every mode decays
monotonically for steps below 2/L, so no rise appears there, and above 2/L the loss grows: the rule agrees
with theory (tests/test_regimes.py checks 0.02/L ... 10/L and 1.95/L against 2.05/L).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gdexp.regimes._stability import flipped

__all__ = ["classify", "overshoot", "pct", "slowness"]


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def pct(x: float, beside: float = 1.0) -> str:
    """`73.5 %`; a share just short of the whole, or of the threshold `beside` it is read against, keeps the
    digits that tell it apart (`99.98 %`; `9.996 %` beside a 10 % rule, which a reason's "only 10 %" would
    contradict)."""
    digits = 3
    while digits < 6 and x != beside and f"{100 * x:.{digits}g}" == f"{100 * beside:.{digits}g}":
        digits += 1
    return f"{100 * x:.{digits}g} %"


def _rises(initial: float, curve: np.ndarray, rules: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Each epoch's rise above the lowest loss before it, that rise as a share of the ground gained (initial −
    lowest so far, at least `rise_tolerance` of the initial loss), and how many epochs rose by more than
    `rise_tolerance` of the ground gained over the epoch before."""
    full = np.concatenate([[initial], curve])
    lowest = np.minimum.accumulate(full)[:-1]  # before each epoch
    ground = np.maximum(initial - lowest, rules["rise_tolerance"] * abs(initial))
    rise = full[1:] - lowest
    rises = int(np.sum(full[1:] - full[:-1] > rules["rise_tolerance"] * ground))
    return rise, rise / ground, rises


def overshoot(initial: float, losses: Sequence[float] | np.ndarray, *, diverged: bool, note: str = "",
              rules: Mapping[str, Any]) -> str | None:
    """Why a curve is too_large by itself (rule 1), or None when it did not overshoot. Siblings never change
    this verdict: a run whose own curve overshot is too_large wherever its learning rate is."""
    curve = np.asarray(losses, dtype=float)
    n = len(curve)
    if diverged or n == 0 or not np.all(np.isfinite(curve)) or not math.isfinite(initial):
        return f"the loss diverged: {note}" if note else "the loss diverged"
    final = float(curve[-1])
    if final > initial or (final == initial and np.any(curve != initial)):  # a curve that never moved is rule 2's
        return f"the loss ended at {final:.4g}, not below its initial {initial:.4g}"
    full = np.concatenate([[initial], curve])
    rise, share, rises = _rises(initial, curve, rules)
    k = int(np.argmax(share))
    if share[k] > rules["spike"]:
        lowest = float(np.min(full[: k + 1]))
        at = int(np.argmax(full[: k + 1] == lowest))  # the epoch of the lowest value before the jump
        if full[k + 1] > initial:
            return (f"the loss rose from {lowest:.4g} (epoch {at}) to {full[k + 1]:.4g} in epoch {k + 1}, above "
                    f"its initial {initial:.4g}: the steps overshot")
        return (f"the loss jumped from {lowest:.4g} (epoch {at}) to {full[k + 1]:.4g} in epoch {k + 1}, giving back "
                f"{pct(rise[k] / (initial - lowest), rules['spike'])} of the ground it had gained: a step overshot the "
                "valley")
    if n >= 4 and rises / n > rules["oscillation"]:
        return (f"the loss rose by more than {pct(rules['rise_tolerance'])} of the ground gained in {rises} of {n} "
                "epochs: the steps overshoot and oscillate")
    return None


def _tail(initial: float, curve: np.ndarray, rules: Mapping[str, Any]) -> tuple[int, bool, float, float]:
    """The end of a curve of two epochs or more, read as two halves of h epochs each (the last 2h epochs; 2h is
    `tail_fraction` of the epochs rounded up to even, at least 2): (h, whether the loss fell over the last h epochs,
    the share of the decrease so far that as many epochs again would add at the pace it was slowing at, that pace:
    the share of an epoch's decrease the next kept, (decrease over the last h / over the h before)^(1/h), 1 when
    it did not slow).

    Halves, not single epochs: a decrease that alternates big, small, big (a step that flips the sharpest
    direction; a noisy epoch) is read at the pace of its trend, not at whichever epoch came last, and one small
    uptick inside a falling end does not hide the fall. On a geometric decay the ratio of the halves is the exact
    pace."""
    n = len(curve)
    half = min(math.ceil(max(2, round(n * rules["tail_fraction"])) / 2), n // 2)
    full = np.concatenate([[initial], curve])
    last, before = float(full[-1 - half] - full[-1]), float(full[-1 - 2 * half] - full[-1 - half])
    gained = initial - float(curve[-1])
    if last <= 0 or gained <= 0:
        return half, False, 0.0, 1.0
    pace = min((last / before) ** (1 / half), 1.0) if before > 0 else 1.0
    return half, True, _ahead(last, pace, half, n) / gained, pace


def slowness(initial: float, losses: Sequence[float] | np.ndarray, *, rules: Mapping[str, Any]) -> str | None:
    """Why a curve that did not overshoot is too_small by itself (rule 2), or None."""
    curve = np.asarray(losses, dtype=float)
    n = len(curve)
    final = float(curve[-1])
    progress = (initial - final) / initial if initial > 0 else 1.0
    if progress < rules["min_progress"]:
        return f"the loss fell only {pct(progress, rules['min_progress'])} in {_epochs(n)}"
    if n == 1:  # one decrease shows no pace: nothing says it levelled off
        return (f"the loss fell {pct(progress)} in its only epoch: one epoch shows no pace, so nothing says it "
                "levelled off")
    _n_tail, falling, share, _pace = _tail(initial, curve, rules)
    if falling and share > rules["still_falling"]:
        return (f"the loss fell {pct(progress)} in {n} epochs and was still falling: at its last pace another "
                f"{n} epochs would add {pct(share, rules['still_falling'])} more")
    return None


def classify(initial: float, losses: Sequence[float] | np.ndarray, *, diverged: bool, note: str = "",
             rules: Mapping[str, Any], full_batch: bool = False,
             ratios: tuple[float, float] = (math.nan, math.nan)) -> tuple[str, str]:
    """(regime, reason) of one run from its initial loss and per-epoch training losses (rules 1-3). Every reason
    that is not an overshoot's says whether and how much the curve rose, so that a bump on the plot is accounted
    for. `full_batch`: one update an epoch on the whole training set, whose steps carry no noise: a slow run that
    rose is then too_large, as each rise is a step that overshot. `ratios`: η·λmax before the first and after the
    last update of a full-batch run, when measured; a slow run whose sharpest direction is flipped at every step,
    as slowly as its curve falls, is too_large (`_stability.flipped`): its curve alone reads as a tiny step's."""
    why = overshoot(initial, losses, diverged=diverged, note=note, rules=rules)
    if why is not None:
        return "too_large", why
    curve = np.asarray(losses, dtype=float)
    n, final = len(curve), float(curve[-1])
    _rise, shares, rises = _rises(initial, curve, rules)
    steady = bool(np.all(np.diff(np.concatenate([[initial], curve])) < 0))  # fell in every epoch
    why = slowness(initial, losses, rules=rules)
    if why is not None:
        flipping = flipped(*ratios, _tail(initial, curve, rules)[3]) if n > 1 else None
        if flipping:
            return "too_large", f"{why}; but {flipping}"
        if full_batch and rises:
            return "too_large", (f"{why}; but it rose by more than {pct(rules['rise_tolerance'])} of the ground gained "
                                 f"in {rises} of {n} epochs, and full-batch GD has no noise: each rise is a step that "
                                 "overshot, so the steps are too long to settle, not too short")
        return "too_small", f"{why}{_bumps(n, shares, rises, rules, falling=steady)}"
    progress = (initial - final) / initial if initial > 0 else 1.0
    half, falling, share, _pace = _tail(initial, curve, rules)
    if falling:
        end = f"levelled off: at its last pace another {n} epochs would add only {pct(share, rules['still_falling'])}"
    else:
        end = f"levelled off: its last {f'{half} epochs' if half > 1 else 'epoch'} brought it no lower"
    bumps = _bumps(n, shares, rises, rules, falling=steady)
    return "just_right", f"the loss fell {pct(progress)} in {_epochs(n)} and {end}{bumps}"


def _bumps(n: int, shares: np.ndarray, rises: int, rules: Mapping[str, Any], *, falling: bool) -> str:
    """How much a curve that did not overshoot rose, for its reason: the rises past `rise_tolerance` and the
    largest, or the largest rise within the tolerance (visible on a log scale near the bottom, yet a tiny share of
    the ground gained), or that it fell in every epoch (`falling`), or at least never rose (a flat stretch)."""
    largest = float(shares.max()) if shares.size else 0.0
    tolerance = pct(rules["rise_tolerance"])
    if rises:
        return (f"; it rose by more than {tolerance} of the ground gained in {rises} of {n} epochs, the largest "
                f"rise giving back {pct(largest)} of the ground gained (an overshoot gives back over "
                f"{pct(rules['spike'])}, or rises in over {pct(rules['oscillation'])} of the epochs)")
    if largest > 0:
        return (f", with no rise of more than {tolerance} of the ground gained (the largest gave back "
                f"{pct(largest, rules['rise_tolerance'])} of it): no overshoot")
    return ", falling in every epoch: no overshoot" if falling else ", never rising: no overshoot"


def _ahead(last: float, ratio: float, span: int, epochs: int) -> float:
    """The decrease the next `epochs` epochs would bring if the per-epoch decrease kept shrinking by `ratio` an
    epoch, from `last` over the last `span` epochs: last·r^span·(1 − r^epochs)/(1 − r^span). For GD on a quadratic
    the decrease shrinks geometrically, so this is the exact forecast of its slowest mode."""
    if ratio == 1.0:
        return float(last * epochs / span)
    return float(last * ratio**span * (1 - ratio**epochs) / (1 - ratio**span))
