"""The just-right band of a sibling group and the learning rate to recommend from it.

The band is the range of learning rates labelled just_right (contiguous, by the order the labels keep). The
recommendation is the largest stable step with a margin: the largest just-right rate at most 1/`margin` of the
smallest too-large rate above the band. With `margin` = 2 this is the margin theory asks for on a quadratic,
where the fastest step 1/L is half the step 2/L at which gradient descent stops converging; a sweep's edge is
known only to the resolution of its grid, and a step right under it is a step that sometimes spikes. When
every just-right rate is closer to the edge than that, the smallest one is the safest; when no larger step
overshot, the edge lies beyond the sweep and the band's top is recommended, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MARGIN", "Band", "band"]

MARGIN = 2.0  # the recommended step is at most edge / MARGIN (1/L against 2/L on a quadratic)


@dataclass(frozen=True)
class Band:
    """A group's just-right band: its ends, how many runs it holds, the edge above it and the recommendation."""

    low: float
    high: float
    runs: int
    edge: float  # the smallest too-large rate above the band (NaN: none in the sweep)
    recommended: float
    reason: str


def band(points: Sequence[tuple[float, str]], margin: float = MARGIN) -> Band | None:
    """The band of one group's (learning rate, regime) points, or None when no run is just right."""
    good = sorted(lr for lr, regime in points if regime == "just_right" and math.isfinite(lr))
    if not good:
        return None
    low, high = good[0], good[-1]
    edge = min((lr for lr, regime in points if regime == "too_large" and lr > high), default=math.nan)
    if not math.isfinite(edge):
        return Band(low, high, len(good), edge, high,
                    f"the largest just-right rate: no larger step in the sweep overshot, so the edge lies above "
                    f"{high:.3g} and the sweep did not find it")
    safe = [lr for lr in good if lr <= edge / margin]
    if safe:
        pick = safe[-1]
        why = (f"the largest just-right rate at most 1/{margin:g} of the smallest too-large rate {edge:.3g}: the "
               f"largest stable step with a margin of {margin:g}x, as the best step 1/L is half the edge 2/L of GD "
               "on a quadratic")
    else:
        pick = low
        why = (f"every just-right rate is within {margin:g}x of the smallest too-large rate {edge:.3g}: the "
               "smallest of them keeps the most margin")
    return Band(low, high, len(good), edge, pick, why)
