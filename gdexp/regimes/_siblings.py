"""A sweep's runs labelled among their siblings: runs of the same configuration and a like capacity, compared
by how fast each brought its training loss down.

Siblings are the runs that differ only in the learning rate and, within a factor of two, the hidden size
(`capacity`: power-of-two bins, so that a network of 11 units is never measured against one of 400). Every
other searched key (the GD variant, a momentum) must match. The rule (`label_siblings`), on top of each run's
own curve (`_curve.py`), reads time-to-loss: for a run that ended (or was pruned) at training loss ℓ after
n epochs, the sibling that reached ℓ first did so after e epochs (interpolated between epochs; at least 1: the
curve's first point); n / e is how many times slower this run brought its loss down.

- A run whose own curve overshot is too_large wherever its learning rate is.
- The pivot is the run with the lowest training loss at its end among those that did not overshoot (a pruned
  run included: stopped early, it would only have gone lower): the fastest step of the group. It is just right
  by its own curve, or, still falling, when a larger step was tried and did no better: one that did not overshoot
  never came down to its loss, or one that overshot is close above (no faster stable step exists).
- Below the pivot's learning rate, a run is too_small when a larger step reached its loss at least `slower`
  times sooner and its own loss was still falling at the end: too slow, and clearly behind.
- Above it, a run is too_large when a smaller step reached its loss at least `slower` times sooner: a clearly
  worse end than smaller steps reach, the mark of steps that bounce around the valley instead of settling.
- Everything else that converged stably is just_right: its own curve shows no overshoot, and no sibling was
  `slower` times faster.
- Then the labels are put in order of the learning rate within the group: walking down from the pivot, once a
  run is too_small every smaller step is too; walking up, once a run is too_large every larger step is too (a
  run inside the band beyond one outside it is noise: its reason says so). So nothing above a just-right rate
  is too_small, and the just-right rates form one band (`order_violations` states the invariant).

The validation loss plays no part: it is the sweep's objective, measured on a few hundred rows; the labels read
what gradient descent minimises, so they do not move when only the validation split does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gdexp.regimes._band import MARGIN

__all__ = ["NONE", "REGIMES", "SIBLING_FREE", "Sibling", "capacity", "epochs_to_reach", "label_siblings",
           "order_violations", "sibling_group"]

REGIMES = ("too_small", "just_right", "too_large")  # in the order of the learning rate
NONE = "none"  # the label of a run that is no regime sample: interrupted (KILLED) or failed
SIBLING_FREE = ("optim.lr", "model.hidden_size")  # the searched keys in which siblings may differ


def capacity(hidden_size: float, hidden_layers: float = 1) -> str:
    """The capacity bin of a network: `h64-127` (hidden sizes within a factor of two share a bin), `linear`
    for no hidden layer, `h?` when the size is unknown."""
    if hidden_layers == 0:
        return "linear"
    if not math.isfinite(hidden_size) or hidden_size < 1:
        return "h?"
    low = 2 ** math.floor(math.log2(hidden_size))
    return f"h{low}-{2 * low - 1}"


def sibling_group(params: Mapping[str, Any], searched: Iterable[str]) -> str:
    """The name of a run's sibling group: the searched keys other than the learning rate and the hidden size,
    with the run's values (`gd=batch`), and its capacity bin. `params` are the run's config values by dotted key
    (strings or numbers: the same text either way)."""
    fixed = [f"{k}={_text(params[k])}" for k in sorted(searched) if k not in SIBLING_FREE and k in params]
    layers = float(params.get("model.hidden_layers", 1))
    return " ".join([*fixed, capacity(float(params.get("model.hidden_size", math.nan)), layers)])


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Sibling:
    """One run of a sibling group, as `label_siblings` and `order_violations` read it."""

    lr: float
    initial: float  # training loss before the first update
    losses: tuple[float, ...]  # training loss after each epoch, up to where the run stopped
    regime: str  # the label of its own curve (`classify`)
    reason: str
    name: str = ""  # how reasons and messages name the run, e.g. "trial 7"
    pruned: bool = False  # the pruner stopped it before its last epoch

    @property
    def overshot(self) -> bool:
        """Its own curve overshot: too_large, whatever its siblings did."""
        return self.regime == "too_large"

    @property
    def final(self) -> float:
        return float(self.losses[-1]) if self.losses else math.nan

    @property
    def label(self) -> str:
        return self.name or f"the run at lr {self.lr:.3g}"


def epochs_to_reach(initial: float, losses: Sequence[float], level: float) -> float | None:
    """The epoch (fractional: linear between epochs; 0 is before the first update) at which a curve first came
    down to `level`, or None when it never did."""
    curve = np.concatenate([[initial], np.asarray(losses, dtype=float)])
    below = np.nonzero(curve <= level)[0]
    if not below.size:
        return None
    k = int(below[0])
    if k == 0:
        return 0.0
    a, b = curve[k - 1], curve[k]
    return k - 1 + (a - level) / (a - b) if a > b else float(k)


def _pivot(runs: Sequence[Sibling]) -> Sibling | None:
    """The fastest step: the run with the lowest training loss at its end among those that did not overshoot. A
    pruned run counts too: stopped early, it would only have gone lower."""
    found = [r for r in runs if not r.overshot and math.isfinite(r.final)]
    return min(found, key=lambda r: (r.final, -r.lr), default=None)


def _behind(r: Sibling, runs: Sequence[Sibling], towards: int) -> tuple[float, float, Sibling] | None:
    """(slowdown, epochs, sibling): the sibling on the side `towards` (+1: larger steps, -1: smaller) that
    reached this run's last loss first, the epoch it did, and n / that epoch (an epoch inside the first counts as
    the first: the curve's first point is where one can see it). None when none reached it."""
    found: tuple[float, float, Sibling] | None = None
    for s in runs:
        if s is r or s.overshot or (s.lr - r.lr) * towards <= 0:
            continue
        e = epochs_to_reach(s.initial, s.losses, r.final)
        if e is not None and (found is None or e < found[1]):
            found = (len(r.losses) / max(e, 1.0) if e > 0 else math.inf, e, s)
    return found


def _when(e: float) -> str:
    """When a sibling reached a loss, as its epoch-by-epoch curve shows it: within its first epoch, or the epoch
    interpolated between two. Inside the first epoch the curve holds no point to read (and full-batch GD made one
    update in it), so a fraction there would be a number no one can check."""
    return "within its first epoch" if e < 1 else f"by epoch {e:.1f}" if e < 100 else f"by epoch {e:,.0f}"


def _falling(r: Sibling, tail_fraction: float) -> bool:
    """Was the loss still falling at the end: lower at the last epoch than at the start of the last
    `tail_fraction` of the epochs (at least two epochs back)?"""
    curve = np.concatenate([[r.initial], np.asarray(r.losses, dtype=float)])
    back = max(2, round(len(r.losses) * tail_fraction))
    return bool(curve[-1] < curve[max(0, len(curve) - 1 - back)])


def label_siblings(runs: Sequence[Sibling], rules: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(regime, reason) of each run of one sibling group (module docstring). A group with one run, or whose every
    run overshot, has nothing to place its runs against: they keep their own labels."""
    pivot = _pivot(runs) if len(runs) >= 2 else None
    if pivot is None:
        return [(r.regime, r.reason) for r in runs]
    slower = float(rules["slower"])
    labels = []
    for r in runs:
        if r.overshot:
            labels.append((r.regime, r.reason))
            continue
        side = int(np.sign(pivot.lr - r.lr))  # where the faster steps are: +1 larger, -1 smaller, 0 this one's
        behind = _behind(r, runs, side) if side else None
        if r is pivot:
            labels.append(_fastest(r, runs))
        elif behind is not None and behind[0] >= slower:
            labels.append(_slow(r, behind, side, pivot, _falling(r, float(rules["tail_fraction"]))))
        elif side < 0:  # a larger step than the fastest, no slower than it: its own slowness is no verdict here
            labels.append(("just_right", _close(r, behind, slower)))
        else:
            labels.append((r.regime, _close(r, behind, slower)))
    return _in_order(runs, labels, pivot)


def _fastest(r: Sibling, runs: Sequence[Sibling]) -> tuple[str, str]:
    """The pivot, the fastest step of its group. Still falling by its own curve, it is too_small unless a larger
    step was tried and did no better: a larger step that did not overshoot and never came down to its loss, or one
    close above it that overshot: at most 2 x `MARGIN` times its rate, so the edge lies within that
    factor and the best step theory allows (edge / `MARGIN`, as 1/L against 2/L on a quadratic) is at most 2x this
    one. Then it is just right for the epochs given. A step that overshot far above, with none tried in between,
    leaves the faster rates untried."""
    stable = sum(not s.overshot for s in runs)  # the pivot is chosen among these: an overshooting run may end lower
    among = (f"{len(runs)} runs of its group" if stable == len(runs) else
             f"{stable} runs of its group that did not overshoot ({len(runs)} in all)" if stable > 1 else
             f"runs of its group that did not overshoot: the only one ({len(runs)} runs in all)")
    said = f"{r.reason}; its final training loss, {r.final:.4g}, is the lowest of the {among}"
    if r.regime != "too_small":
        return r.regime, said
    behind = _behind(r, runs, 1)  # the larger step that did not overshoot and came down to this loss first
    if behind is not None:  # it got here sooner, and ended higher after
        _factor, e, s = behind
        return "too_small", (f"{said}; but {s.label} (lr {s.lr:.3g}), a larger step that did not overshoot, had come "
                             f"down to that loss {_when(e)}, against epoch {len(r.losses):,} here")
    larger = min((s for s in runs if not s.overshot and s.lr > r.lr), key=lambda s: s.lr, default=None)
    if larger is not None:  # larger steps were tried and none came down to this loss: the steps are not too short
        return "just_right", (f"{said}, and a larger step that did not overshoot ({larger.label}, lr {larger.lr:.3g}, "
                              f"{_times(larger.lr / r.lr)}x) never came down to it (it ended at {larger.final:.4g}): "
                              "the fastest step tried, though more epochs would still help")
    over = min((s.lr for s in runs if s.overshot and s.lr > r.lr), default=None)
    if over is None:
        return r.regime, said
    times = _times(over / r.lr)
    if over <= 2 * MARGIN * r.lr:
        return "just_right", (f"{said}, and the next larger step (lr {over:.3g}, {times}x) overshot: the fastest "
                              "stable step here, though more epochs would still help")
    return "too_small", (f"{said}; the next larger step tried (lr {over:.3g}) overshot, but it is {times}x larger: "
                         "the sweep left the faster steps in between untried")


def _times(x: float) -> str:
    return f"{x:.2g}" if x < 10 else f"{x:,.0f}"


def _close(r: Sibling, behind: tuple[float, float, Sibling] | None, slower: float) -> str:
    if behind is None:
        return f"{r.reason}; no sibling on the side of the fastest step reached its loss {r.final:.4g}"
    _factor, e, s = behind
    return (f"{r.reason}; {s.label} (lr {s.lr:.3g}) reached its loss {r.final:.4g} {_when(e)}, against epoch "
            f"{len(r.losses):,} here: within {slower:g}x of the fastest")


def _slow(r: Sibling, behind: tuple[float, float, Sibling], side: int, pivot: Sibling, falling: bool
          ) -> tuple[str, str]:
    factor, e, s = behind
    n = len(r.losses)
    stop = "where the pruner stopped it" if r.pruned else "at its end"
    if e > 0:
        evidence = (f"its training loss was {r.final:.4g} {stop} (epoch {n:,}); {s.label} (lr {s.lr:.3g}) had reached "
                    f"it {_when(e)}: {'at least ' if e < 1 else ''}{_times(factor)}x sooner")
    else:  # a sibling of another initialisation started below where this run ended
        evidence = (f"its training loss was {r.final:.4g} {stop} (epoch {n:,}); {s.label} (lr {s.lr:.3g}) was below "
                    f"that before its first update ({s.initial:.4g}) and went on down")
    if side > 0:  # a smaller step than the fastest
        if r.regime == "too_small":  # its own curve already says slow: that evidence first
            return "too_small", f"{r.reason}; {evidence}"
        if falling:
            return "too_small", (f"{evidence}, and this run's loss was still falling: the steps are too short to get "
                                 "down in the time given")
        return "just_right", (f"{evidence}, but this run had levelled off: it converged, slowly and higher up, with "
                              "no overshoot")
    return "too_large", (f"{evidence}: a clearly worse end than the smaller step of {pivot.label} (lr "
                         f"{pivot.lr:.3g}) reaches -- the steps bounce around the valley instead of settling")


def _in_order(runs: Sequence[Sibling], labels: list[tuple[str, str]], pivot: Sibling) -> list[tuple[str, str]]:
    """Make the labels monotone in the learning rate: walking down from the pivot (itself included) once a run
    is too_small every smaller step is too; walking up, once too_large, every larger step."""
    out = list(labels)
    down = sorted((i for i, r in enumerate(runs) if r.lr <= pivot.lr), key=lambda i: -runs[i].lr)
    down.sort(key=lambda i: runs[i] is not pivot)  # the pivot first among equal learning rates
    up = sorted((i for i, r in enumerate(runs) if r.lr > pivot.lr), key=lambda i: runs[i].lr)
    _spread(runs, out, down, "too_small", "larger")
    _spread(runs, out, up, "too_large", "smaller")
    return out


def _spread(runs: Sequence[Sibling], out: list[tuple[str, str]], walk: Sequence[int], regime: str, word: str) -> None:
    """Along `walk` (away from the pivot), every run past the first one labelled `regime` gets it too;
    a run that overshot keeps its too_large."""
    first: Sibling | None = None
    for i in walk:
        if first is None:
            first = runs[i] if out[i][0] == regime else None
        elif out[i][0] != regime and not runs[i].overshot:
            out[i] = (regime, f"{out[i][1]}; but {first.label} (lr {first.lr:.3g}), a sibling with a {word} step, is "
                              f"{regime}, so this one is too")


def order_violations(runs: Sequence[Sibling], labels: Sequence[str]) -> list[str]:
    """What breaks the order invariant in one sibling group, one sentence each (empty when it holds).

    The invariant: a run whose own curve overshot is too_large; among the others, labels never go down as the
    learning rate goes up (too_small < just_right < too_large), so nothing above a just-right rate is
    too_small. Runs labelled `none` are not regime samples and are left out."""
    placed = [(r, label) for r, label in zip(runs, labels, strict=True) if label in REGIMES]
    problems = [f"{r.label} overshot by its own curve but is labelled {label}"
                for r, label in placed if r.overshot and label != "too_large"]
    rank = {regime: i for i, regime in enumerate(REGIMES)}
    for r, label in placed:
        if r.overshot:
            continue
        problems += [f"{r.label} (lr {r.lr:.3g}) is {label} but {s.label} (lr {s.lr:.3g}, a larger step) is {other}"
                     for s, other in placed if s.lr > r.lr and rank[other] < rank[label]]
    return problems


