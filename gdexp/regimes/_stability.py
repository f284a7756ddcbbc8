"""Why a learning rate is in its regime in terms of curvature: the stability ratio η·λmax over a run.

Gradient descent with step η is stable along a direction of curvature λ only while η·λ < 2; with full-batch GD
on a network the sharpness typically rises until η·λmax reaches 2 and then hovers there (the edge of
stability, Cohen et al., ICLR 2021). `stability` puts what a run's measurements did into one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["EDGE", "flipped", "stability"]

EDGE = 2.0  # GD is stable along a direction while η·λ < 2
EDGE_BAND = 0.1  # "at the edge": the stability ratio's median over the last quarter within 2 ± this
FAR_BELOW = 0.05  # steps "far shorter than the curvature allows": η·λmax at most this throughout
FLIP_SLOWER = 1.5  # the sharpest direction is the curve's slow part when its rate is within this factor of the curve's


def flipped(initial: float, last: float, kept: float) -> str | None:
    """Why a full-batch run that is still falling slowly is too_large after all, or None: η·λmax was between 1 and 2
    before the first update (`initial`) and after the last (`last`), so each step flips the sharpest direction and
    keeps |1 − η·λmax| of it, and there that direction falls no faster than the curve does (which keeps `kept` of
    each epoch's decrease): a smaller step would bring it down faster. On a quadratic at η = c·2/L the sharpest
    direction keeps |1 − 2c| a step, as at (1 − c)·2/L, so a step just below 2/L and a tiny one draw the same
    curve; only η·λmax tells them apart. Both ends are asked for: a network's sharpness rises as it trains until
    η·λmax reaches 2 (the edge of stability), where the rule does not apply."""
    if not (1 < initial <= EDGE and 1 < last <= EDGE and 0 < kept <= 1):
        return None
    flip = (last - 1) ** 2  # what an epoch (one update) leaves of the loss along the sharpest direction
    if flip < kept ** FLIP_SLOWER:
        return None
    return (f"η·λmax = {last:.3g}: each step flips the sharpest direction and keeps {abs(last - 1):.2g} of it, "
            f"so the loss along it keeps {flip:.3g} an epoch, as slow as the curve ({kept:.3g}): a smaller step "
            "would bring it down faster")


def stability(initial: float, epochs: Sequence[int], ratios: Sequence[float], *, fell: bool = True
              ) -> tuple[str, bool | None]:
    """Why, in terms of curvature: a sentence on the stability ratio η·λmax (`initial` before training,
    `ratios` measured after the given epochs; NaN where not measured) and whether the run ended at the
    edge of stability (None when nothing was measured).

    At the edge: the loss came down (`fell`: it ended below where it started) and the median of the last quarter
    of the measurements (at least three) is within 2 ± `EDGE_BAND`; the sentence gives the mean and range from the
    first epoch where the ratio reached 1.9 (what the sharpness plot shows from there: the ratio may still be
    climbing through 2). A loss that grew is no edge of stability, whatever the ratio: on a quadratic at a step
    just past 2/L, η·λmax stays at 2.08 while the loss grows geometrically."""
    pairs = [(e, r) for e, r in zip(epochs, ratios, strict=True) if math.isfinite(r)]
    if not pairs and not math.isfinite(initial):
        return "", None
    values = np.array([r for _, r in pairs])
    start = f"{initial:.3g}" if math.isfinite(initial) else "?"
    if len(values) >= 3 and fell:
        last = values[-max(3, len(values) // 4):]
        if abs(float(np.median(last)) - EDGE) <= EDGE_BAND:
            first = next(e for e, r in pairs if r >= EDGE - EDGE_BAND)
            settled = values[[i for i, (e, _) in enumerate(pairs) if e >= first]]
            if not (math.isfinite(initial) and initial >= EDGE - EDGE_BAND):
                rose = f"η·λmax rose from {start}, reached {EDGE - EDGE_BAND:g} at epoch {first}"
            elif first == pairs[0][0]:  # at the edge from the start, every measurement at 1.9 or more
                rose = f"η·λmax was {start} at the start"
            else:  # it fell below 1.9 first
                rose = f"η·λmax started at {start}, was below {EDGE - EDGE_BAND:g}, then back at epoch {first}"
            return (f"{rose} and from then on averaged {settled.mean():.3g} (from {settled.min():.3g} to "
                    f"{settled.max():.3g}): the run trains at the edge of stability"), True
    top = max([initial, *values.tolist()]) if math.isfinite(initial) else float(values.max())
    if math.isfinite(initial) and initial > EDGE:
        later = f", then {values[-1]:.3g} at the end" if len(values) else ""
        return (f"η·λmax = {initial:.3g} at the start: the first steps overshot the sharpest direction (stable below "
                f"2){later}"), False
    if top <= FAR_BELOW:
        return f"η·λmax ≤ {top:.2g} throughout: steps are far shorter than the curvature allows (up to 2)", False
    end = f"{values[-1]:.3g}" if len(values) else start
    return f"η·λmax went from {start} to {end} (GD is stable below 2)", False
