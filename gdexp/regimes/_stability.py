"""Why a learning rate is in its regime in terms of curvature: the stability ratio η·λmax over a run.

Gradient descent with step η is stable along a direction of curvature λ only while η·λ < 2; with full-batch GD
on a network the sharpness typically rises until η·λmax reaches 2 and then hovers there (the edge of
stability, Cohen et al., ICLR 2021). `stability` puts what a run's measurements did into one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["EDGE", "stability"]

EDGE = 2.0  # GD is stable along a direction while η·λ < 2
EDGE_BAND = 0.1  # "at the edge": the stability ratio's median over the last quarter within 2 ± this
FAR_BELOW = 0.05  # steps "far shorter than the curvature allows": η·λmax at most this throughout


def stability(initial: float, epochs: Sequence[int], ratios: Sequence[float]) -> tuple[str, bool | None]:
    """Why, in terms of curvature: a sentence on the stability ratio η·λmax (`initial` before training,
    `ratios` measured after the given epochs; NaN where not measured) and whether the run ended at the
    edge of stability (None when nothing was measured).

    At the edge: the median of the last quarter of the measurements (at least three) is within
    2 ± `EDGE_BAND`; the sentence gives the mean and range from the first epoch where the ratio reached 1.9 (what
    the sharpness plot shows from there: the ratio may still be climbing through 2)."""
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
            return (f"η·λmax rose from {start}, reached {EDGE - EDGE_BAND:g} at epoch {first} and from then on "
                    f"averaged {settled.mean():.2f} (from {settled.min():.2f} to {settled.max():.2f}): the run trains "
                    "at the edge of stability"), True
    top = max([initial, *values.tolist()]) if math.isfinite(initial) else float(values.max())
    if math.isfinite(initial) and initial > EDGE:
        return f"η·λmax = {initial:.2g} at the start: steps overshoot the sharpest direction (stable below 2)", False
    if top <= FAR_BELOW:
        return f"η·λmax ≤ {top:.2g} throughout: steps are far shorter than the curvature allows (up to 2)", False
    end = f"{values[-1]:.2g}" if len(values) else start
    return f"η·λmax went from {start} to {end} (GD is stable below 2)", False
