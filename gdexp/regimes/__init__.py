"""Learning-rate regime labels: `too_small`, `just_right`, `too_large`, each with a reason a student can
defend from the run's training curve.

Too small: very slow training. Too large: the steps overshoot the minimum and the training is unstable. Just
right: fast and stable convergence. Each is read from the training loss gradient descent minimises, measured
on the whole training set after every epoch:

- `classify` labels one run by its own curve (`_curve.py`): overshoot (divergence, a jump back up, oscillation)
  or slowness (barely moved, or still falling fast at the end);
- `label_siblings` places a sweep's run among the runs of the same configuration and a like capacity by how
  fast each brought its loss down, and puts the labels in order of the learning rate (`_siblings.py`);
- `band` reads a group's just-right band and the step to recommend from it (`_band.py`);
- `stability` says what the stability ratio η·λmax did, when it was measured (`_stability.py`).

A run that was interrupted or failed is no regime sample: it is labelled `none` (`NONE`).
"""

from gdexp.regimes._band import MARGIN, Band, band
from gdexp.regimes._curve import classify, overshoot, slowness
from gdexp.regimes._siblings import (
    NONE,
    REGIMES,
    SIBLING_FREE,
    Sibling,
    capacity,
    epochs_to_reach,
    label_siblings,
    order_violations,
    sibling_group,
)
from gdexp.regimes._stability import EDGE, stability

__all__ = ["EDGE", "MARGIN", "NONE", "REGIMES", "SIBLING_FREE", "Band", "Sibling", "band", "capacity", "classify",
           "epochs_to_reach", "label_siblings", "order_violations", "overshoot", "sibling_group", "slowness",
           "stability"]
