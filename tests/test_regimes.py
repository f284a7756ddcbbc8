"""Regime labels against optimisation theory, and the rule's pieces on hand-made curves.

On a quadratic loss (linear regression, MSE, full-batch GD, plain SGD) theory is exact: with L the
largest eigenvalue of the Hessian (1/m)·X̃ᵀX̃ (X̃ = [X, 1]), GD converges for steps below 2/L and
diverges above. The runs here go through the real pipeline (`data=file`, `train.run`) in float64.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig

from gdexp import regimes, train
from gdexp.callbacks import callbacks_for
from gdexp.data import load
from gdexp.history import History
from gdexp.regimes._curve import pct

DATASETS = [(0, 3, 1.0), (1, 5, 3.0), (2, 8, 0.3), (3, 4, 10.0)]  # seed, features, feature scale


def quadratic(make_cfg: Callable[..., DictConfig], project: Path, seed: int, d: int, scale: float
              ) -> tuple[Callable[..., History], float]:
    """A generated regression set (y = Xw + b + noise) -> (run at a step of k/L, L)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, d)) * rng.uniform(0.5, 1.5, size=d) * scale
    y = X @ rng.normal(size=d) + 2.0 + 0.1 * rng.normal(size=400)
    np.savez(project / f"q{seed}.npz", X=X, y=y)
    base = ["data=file", f"data.path=q{seed}.npz", "data.task=regression", "model.hidden_layers=0", "gd=batch",
            "optim=sgd", "train.dtype=float64", "tracking.enabled=false"]
    cfg = make_cfg(*base)
    data = load(cfg.data, "float64")
    Xt = np.c_[data.X_train, np.ones(len(data.X_train))]
    L = float(np.linalg.eigvalsh(Xt.T @ Xt / len(Xt))[-1])

    def run(k: float, epochs: int = 50, diagnostics: DictConfig | None = None) -> History:
        """The run at a step of k/L; with `diagnostics`, measured and labelled as a run is (`callbacks_for`)."""
        step = copy.deepcopy(cfg)  # set as the schema types them; one composition for all the steps
        step.optim.lr, step.train.epochs = k / L, epochs
        if diagnostics is None:
            return train.run(step, [])
        step.diagnostics = diagnostics
        return train.run(step, callbacks_for(step))

    return run, L


def label(h: History, make_cfg: Callable[..., DictConfig]) -> str:
    return regimes.classify(h.initial["train_loss"], h.curve("train_loss"), diverged=h.diverged, note=h.note,
                            rules=make_cfg().regimes)[0]


@pytest.mark.parametrize("seed,d,scale", DATASETS)
def test_labels_agree_with_the_2_over_L_bound(make_cfg, project: Path, seed: int, d: int, scale: float) -> None:
    run, _ = quadratic(make_cfg, project, seed, d, scale)
    for k in (0.02, 0.03):
        h = run(k)
        assert label(h, make_cfg) == "too_small" and not h.diverged, k
    h = run(1.0)
    assert label(h, make_cfg) == "just_right" and not h.diverged
    for k in (2.5, 3.0, 10.0):
        h = run(k)
        assert label(h, make_cfg) == "too_large" and h.diverged, k


@pytest.mark.parametrize(("dataset", "k"), [(0, 1.96), (2, 1.98), (3, 1.99)])
def test_a_step_just_below_2_over_L_is_told_from_a_tiny_one_by_its_stability_ratio(
        make_cfg, project: Path, dataset: int, k: float) -> None:
    """At c·2/L the sharpest direction keeps |1 − 2c| a step, as at (1 − c)·2/L: just below the edge (where the
    sharpest direction has not died out in 30 epochs) and far below it, the curves both read as still falling.
    With the sharpness measured (`diagnostics.sharpness_every`), η·λmax says the steps flip that direction:
    too_large, a smaller step converges faster. Far below the edge, at 1/L and at 1.9/L the measurement changes
    nothing. (Once 0.98 and 0.99 of 2/L were too_small, though a larger step diverges.)"""
    run, _ = quadratic(make_cfg, project, *DATASETS[dataset])
    measured = make_cfg("diagnostics.sharpness_every=10").diagnostics
    tiny = 2 - k  # the mirror step: its sharpest direction keeps |1 − (2 − k)| = |k − 1| a step, as k's does
    assert [label(run(x, epochs=30), make_cfg) for x in (tiny, k)] == ["too_small", "too_small"], \
        "by their curves alone, the two are alike"
    near = run(k, epochs=30, diagnostics=measured)
    assert near.regime == "too_large", near.regime_reason
    assert f"η·λmax = {k:.3g}: each step flips the sharpest direction" in near.regime_reason
    assert [run(x, epochs=30, diagnostics=measured).regime for x in (tiny, 1.0, 1.9)] == [
        "too_small", "just_right", "just_right"]


@pytest.mark.parametrize("seed,d,scale", DATASETS[:2])
def test_divergence_starts_exactly_past_2_over_L(make_cfg, project: Path, seed: int, d: int, scale: float) -> None:
    run, _ = quadratic(make_cfg, project, seed, d, scale)
    below, above = run(1.95, epochs=200), run(2.05, epochs=200)
    assert not below.diverged and below.curve("train_loss")[-1] < below.initial["train_loss"]
    assert above.diverged and label(above, make_cfg) == "too_large"


RULES = {"min_progress": 0.1, "tail_fraction": 0.2, "still_falling": 0.05, "rise_tolerance": 0.01,
         "oscillation": 0.25, "spike": 0.25, "slower": 2.0}


@pytest.mark.parametrize("curve,expected,words", [
    (10 * 0.98 ** np.arange(1, 41), "too_small", "still falling"),   # slow geometric decay, far from done
    (10 - 0.02 * np.arange(1, 41), "too_small", "fell only"),        # barely moved
    (1 + 9 * 0.5 ** np.arange(1, 41), "just_right", "levelled off"), # fast decay to a floor
    (1 + 9 / np.arange(2, 42), "just_right", "levelled off"),        # power-law tail: slow but flat
    (np.r_[5, 3, 6, 2, 7, 3, 8, 4, 9, 5], "too_large", "jumped"),    # jumps back up the hill
    (np.r_[8, 7, 6.5, 7, 6.2, 6.6, 6, 6.4, 5.9, 6.3], "too_large", "ground gained in 4 of 10"),  # steady oscillation
    (np.r_[8, 9, 11, 12], "too_large", "not below its initial"),     # ended above the start
    (np.r_[11, 4, 2, 1, 0.5], "too_large", "above its initial 10"),  # the first steps overshot, then it recovered
    (np.full(5, 10.0), "too_small", "fell only 0 %"),                # never moved (a float32 step below precision)
    (np.r_[12, 10], "too_large", "not below its initial"),           # back where it began: that did move
    (np.r_[0.2], "too_small", "one epoch shows no pace"),            # one decrease: no forecast made up
])
def test_rule_on_hand_made_curves(curve: np.ndarray, expected: str, words: str) -> None:
    regime, reason = regimes.classify(10.0, curve, diverged=False, rules=RULES)
    assert (regime, words in reason) == (expected, True), reason


# `+sweep=regimes`' full-batch run at lr 1.0 (digits, 64 units, 20 epochs): it falls by a zig-zag, rising in 7
# epochs (5 past 1 % of the ground gained), 43 % lower over its last 4 epochs than before them
BOUNCING = (2.4686, [2.08, 1.7669, 1.5444, 1.364, 1.3901, 1.4238, 1.2907, 0.8897, 0.805, 0.8526, 1.0344, 1.0388,
                     0.9524, 0.703, 0.7073, 0.7579, 0.608, 0.5918, 0.465, 0.432])


def test_a_zigzag_end_is_read_at_the_pace_of_its_trend() -> None:
    """The decrease of its last 4 epochs alternates 0.15, 0.016, 0.127, 0.033: read from its first and last epochs
    (as before) it slowed 4.5x and 'levelled off' with 2.47 % to come, which its curve does not show; read by halves
    (0.166, then 0.160) it is still falling, with more than half of its decrease so far to come."""
    assert "still falling" in regimes.slowness(BOUNCING[0], BOUNCING[1], rules=RULES)
    regime, reason = regimes.classify(*BOUNCING, diverged=False, rules=RULES)
    assert regime == "too_small" and "in 5 of 20 epochs" in reason, "its rises are in its reason"


def test_a_full_batch_run_that_rose_is_not_too_small() -> None:
    """Full-batch GD has no noise: a rise is a step that overshot, so a still-falling run that rose is too_large
    (the sweep's batch run at lr 1.0, whose η·λmax measured 2.7-6.2, above 2 throughout); a smooth slow one stays
    too_small, and a levelled-off one with a bump stays just_right."""
    regime, reason = regimes.classify(*BOUNCING, diverged=False, rules=RULES, full_batch=True)
    assert regime == "too_large" and "full-batch GD has no noise: each rise is a step that overshot" in reason
    assert regimes.classify(10.0, 10 * 0.98 ** np.arange(1, 41), diverged=False, rules=RULES,
                            full_batch=True)[0] == "too_small"
    settled = np.r_[5, 3, 2, 1.5, 1.6, 1.2, 1.1, 1.05, 1.02, 1.01, 1.005, 1.004, 1.0035, 1.003, 1.0028]
    assert regimes.classify(10.0, settled, diverged=False, rules=RULES, full_batch=True)[0] == "just_right"


@pytest.mark.parametrize(("curve", "words"), [
    (np.r_[1.0, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.015, 0.034, 0.012, 0.011, 0.0105, 0.0102, 0.0101],
     "with no rise of more than 1 % of the ground gained (the largest gave back 0.19 %"),  # x2.3 on a log axis
    (1 + 9 * 0.5 ** np.arange(1, 21), "falling in every epoch: no overshoot"),
])
def test_a_just_right_reason_says_how_far_it_rose(curve: np.ndarray, words: str) -> None:
    """0.015 -> 0.034 is a jump on the report's log axis, and 0.19 % of the ground gained: the reason says which."""
    regime, reason = regimes.classify(10.0, curve, diverged=False, rules=RULES)
    assert regime == "just_right" and words in reason, reason


def test_a_share_beside_its_threshold_keeps_the_digits_that_tell_them_apart() -> None:
    """A loss that fell 9.996 % is too_small by the 10 % rule: its reason must not say 'fell only 10 %'."""
    regime, reason = regimes.classify(10.0, np.r_[9.5, 9.0004], diverged=False, rules=RULES)
    assert regime == "too_small" and "fell only 9.996 % in 2 epochs" in reason, reason
    assert (pct(0.999), pct(0.9999), pct(0.5, 0.5), pct(0.0501, 0.05)) == (
        "99.9 %", "99.99 %", "50 %", "5.01 %")


def test_a_wobble_near_the_bottom_is_no_overshoot() -> None:
    """0.004 -> 0.005 is a 25 % rise, but it gives back 0.01 % of the ground the run gained: noise, not a jump."""
    curve = np.r_[1.0, 0.1, 0.01, 0.004, 0.005, 0.004, 0.0045, 0.0038, 0.0041, 0.0035]
    assert regimes.overshoot(2.3, curve, diverged=False, rules=RULES) is None


def test_diverged_is_too_large_with_the_note() -> None:
    assert regimes.classify(1.0, [0.5, np.inf], diverged=True, note="NaN at update 7", rules=RULES) == (
        "too_large", "the loss diverged: NaN at update 7")


def geometric(lr: float, n: int = 15, *, floor: float = 0.0) -> tuple[float, ...]:
    """The training curve of a step of size `lr` on a quadratic: each epoch keeps (1 - lr)^k of the way down."""
    return tuple(floor + (2.3 - floor) * (1 - lr) ** k for k in range(1, n + 1))


def sib(lr: float, losses: tuple[float, ...], regime: str = "just_right", *, pruned: bool = False) -> regimes.Sibling:
    return regimes.Sibling(lr, 2.3, losses, regime, "own", name=f"run@{lr:g}", pruned=pruned)


def labels_of(runs: list[regimes.Sibling]) -> list[str]:
    return [label for label, _ in regimes.label_siblings(runs, RULES)]


def test_time_to_loss_places_each_run() -> None:
    """Steps 0.02 .. 0.5 of a quadratic: the larger the step, the sooner the loss comes down (time ∝ 1/step). 0.02
    and 0.25 need more than twice the epochs 0.5 needs to reach where they ended: too small; 0.3 and 0.4 need less.
    0.9 overshoots by its own curve."""
    runs = [sib(lr, geometric(lr)) for lr in (0.02, 0.25, 0.3, 0.4, 0.5)]
    runs.append(sib(0.9, (0.5, 1.6, 0.3, 1.9, 0.2), "too_large"))
    labelled = regimes.label_siblings(runs, RULES)
    assert [label for label, _ in labelled] == ["too_small", "too_small", "just_right", "just_right", "just_right",
                                                "too_large"]
    reason = labelled[1][1]
    assert "run@0.5 (lr 0.5) had reached it by epoch 6.3: 2.4x sooner" in reason and "still falling" in reason
    assert "within its first epoch: at least 15x sooner" in labelled[0][1]
    assert regimes.label_siblings([sib(1e-4, geometric(1e-4, 3000)), sib(2e-4, geometric(2e-4, 3000))], RULES)[0][
        1].endswith("had reached it by epoch 1,500: 2x sooner, and this run's loss was still falling: the steps are "
                    "too short to get down in the time given")  # a long run's epoch is written out, not 1.5e+03
    assert "is the lowest of the 5 runs of its group that did not overshoot (6 in all)" in labelled[4][1]


def test_a_sibling_below_within_its_first_epoch_is_read_from_its_first_point() -> None:
    """A large step that was below a slow run's end at its first point reached it "within its first epoch": the
    curve holds nothing earlier, so no fraction of an epoch is printed and the factor counts that epoch whole (15
    epochs against 1: at least 15x). A run pruned after one epoch is then no slower than that sibling by anything
    the curves show, and keeps its own label."""
    slow, fast = sib(0.001, geometric(0.001)), sib(0.9, geometric(0.9))
    labelled = regimes.label_siblings([slow, fast], RULES)
    assert labelled[0][0] == "too_small"
    assert "run@0.9 (lr 0.9) had reached it within its first epoch: at least 15x sooner" in labelled[0][1]
    assert "epoch 0." not in labelled[0][1]
    one = sib(0.001, geometric(0.001, 1), "just_right", pruned=True)
    label, reason = regimes.label_siblings([one, fast], RULES)[0]
    assert label == "just_right"
    assert reason.endswith("(lr 0.9) reached its loss 2.298 within its first epoch, against epoch 1 here: within 2x "
                           "of the fastest")


def test_a_sibling_that_started_below_this_runs_end_is_named_without_an_infinite_factor() -> None:
    """Another hidden size starts from another loss: one that began below where a slow run ended reached that loss
    at epoch 0. The reason says so in words and puts the run's own evidence first."""
    stuck = regimes.Sibling(1e-4, 2.6, (2.59, 2.58, 2.57, 2.56, 2.55), "too_small", "the loss fell by 1.9 %",
                            name="slow")
    fast = regimes.Sibling(0.5, 2.4, geometric(0.5), "just_right", "own", name="fast")
    (label, reason), _ = regimes.label_siblings([stuck, fast], RULES)
    assert label == "too_small" and "inf" not in reason
    assert reason.startswith("the loss fell by 1.9 %; ") and "fast (lr 0.5) was below that before its first update" \
        in reason


def test_a_larger_step_that_ends_clearly_worse_is_too_large() -> None:
    """A large step that settles on a noise floor far above what smaller steps reach: no rise needed."""
    runs = [sib(0.1, geometric(0.3)), sib(0.2, geometric(0.4)), sib(0.9, geometric(0.9, floor=0.8))]
    labelled = regimes.label_siblings(runs, RULES)
    assert [label for label, _ in labelled] == ["just_right", "just_right", "too_large"]
    assert "a clearly worse end than the smaller step of run@0.2" in labelled[2][1]


def test_pruned_runs_are_placed_by_the_loss_where_they_stopped() -> None:
    runs = [sib(0.3, geometric(0.3)), sib(0.01, geometric(0.01, 5), "too_small", pruned=True),
            sib(0.25, geometric(0.25, 5), pruned=True)]
    labelled = regimes.label_siblings(runs, RULES)
    assert [label for label, _ in labelled] == ["just_right", "too_small", "just_right"]
    assert "where the pruner stopped it (epoch 5)" in labelled[1][1]


def test_the_pivot_may_be_a_pruned_run_that_got_lower() -> None:
    runs = [sib(0.02, geometric(0.02), "too_small"), sib(0.5, geometric(0.5, 8), pruned=True),
            sib(8.0, (2.4, 2.31, 2.3, 2.3, 2.3), "just_right", pruned=True)]
    assert labels_of(runs) == ["too_small", "just_right", "too_large"]


def test_labels_are_put_in_order_of_the_learning_rate() -> None:
    """Noise puts a run inside the band beyond one that is outside it: the band ends at the first run outside."""
    runs = [sib(0.02, geometric(0.3)), sib(0.05, geometric(0.02)), sib(0.3, geometric(0.3)), sib(0.5, geometric(0.5))]
    labelled = regimes.label_siblings(runs, RULES)
    assert labelled[0] [0] == "too_small" and "a sibling with a larger step, is too_small, so this one is too" in \
        labelled[0][1]


def test_a_run_without_siblings_keeps_its_own_label() -> None:
    alone = [sib(0.1, geometric(0.02), "too_small")]
    assert regimes.label_siblings(alone, RULES) == [("too_small", "own")]
    assert regimes.order_violations(alone, ["too_small"]) == []


def test_capacity_groups_hold_networks_within_a_factor_of_two() -> None:
    assert [regimes.capacity(h) for h in (8, 11, 15, 16, 64, 127, 128, 449)] == [
        "h8-15", "h8-15", "h8-15", "h16-31", "h64-127", "h64-127", "h128-255", "h256-511"]
    assert regimes.capacity(64, hidden_layers=0) == "linear"
    assert regimes.sibling_group({"gd": "batch", "optim.lr": 0.1, "model.hidden_size": 96},
                                 ["optim.lr", "model.hidden_size", "gd"]) == "gd=batch h64-127"
    assert regimes.sibling_group({"optim.momentum": 0.5, "model.hidden_size": 11}, ["optim.momentum"]) == \
        "optim.momentum=0.5 h8-15"


def test_order_violations_name_the_runs() -> None:
    runs = [sib(1e-3, ()), sib(1e-2, ()), sib(1e-1, ()), sib(1.0, ()), sib(3.0, (), "too_large")]
    assert regimes.order_violations(runs, ["too_small", "too_small", "just_right", "just_right", "too_large"]) == []
    problems = regimes.order_violations(runs, ["just_right", "too_small", "just_right", "too_small", "just_right"])
    assert problems == [
        "run@3 overshot by its own curve but is labelled just_right",
        "run@0.001 (lr 0.001) is just_right but run@0.01 (lr 0.01, a larger step) is too_small",
        "run@0.001 (lr 0.001) is just_right but run@1 (lr 1, a larger step) is too_small",
        "run@0.1 (lr 0.1) is just_right but run@1 (lr 1, a larger step) is too_small",
    ]
    assert regimes.order_violations(runs, ["none", "none", "just_right", "too_large", "too_large"]) == []


def test_the_band_and_its_recommendation() -> None:
    band = regimes.band([(0.01, "too_small"), (0.1, "just_right"), (0.3, "just_right"), (0.5, "just_right"),
                         (1.0, "too_large"), (3.0, "too_large")])
    assert band is not None and (band.low, band.high, band.runs, band.edge, band.recommended) == (0.1, 0.5, 3, 1.0, 0.5)
    assert "largest stable step with a margin of 2x" in band.reason
    close = regimes.band([(0.6, "just_right"), (0.8, "just_right"), (1.0, "too_large")])
    assert close is not None and close.recommended == 0.6 and "smallest of them" in close.reason
    open_top = regimes.band([(0.1, "too_small"), (0.5, "just_right")])
    assert open_top is not None and open_top.recommended == 0.5 and "did not find it" in open_top.reason
    assert regimes.band([(0.1, "too_small")]) is None


def test_labels_never_read_the_validation_loss() -> None:
    """A sibling carries its training curve and nothing of its validation split: a changed split cannot move a
    label. (tests/test_sweep.py checks the same on real sweeps whose validation splits differ.)"""
    assert {f.name for f in fields(regimes.Sibling)} == {"lr", "initial", "losses", "regime", "reason", "name",
                                                         "pruned"}


@st.composite
def sibling_groups(draw: st.DrawFn) -> list[regimes.Sibling]:
    n = draw(st.integers(2, 10))
    lrs = draw(st.lists(st.floats(1e-4, 10.0), min_size=n, max_size=n, unique=True))
    runs = []
    for lr in lrs:
        pruned = draw(st.booleans())
        length = draw(st.integers(1, 3)) if pruned else 4
        losses = tuple(draw(st.floats(0.01, 3.0)) for _ in range(length))
        runs.append(regimes.Sibling(lr, 2.3, losses, draw(st.sampled_from(regimes.REGIMES)), "own", name=f"lr {lr}",
                                    pruned=pruned))
    return runs


@settings(max_examples=300, deadline=None, derandomize=True)
@given(sibling_groups())
def test_the_labels_always_keep_the_order_invariant(runs: list[regimes.Sibling]) -> None:
    labels = [label for label, _ in regimes.label_siblings(runs, RULES)]
    assert set(labels) <= set(regimes.REGIMES)
    assert regimes.order_violations(runs, labels) == []


def test_the_fastest_step_is_just_right_when_a_larger_stable_step_ended_higher() -> None:
    """The main job's h256-511 group: lr 0.184 ended lowest, still falling; lr 0.679 did not overshoot and ended
    higher; lr 2.15 overshot. The pivot was too small, "the sweep left the faster steps in between untried", though
    0.679 lies in between and did worse: larger steps do not help, so the pivot is the fastest step tried."""
    pivot = sib(0.184, geometric(0.1, 15), "too_small")
    higher = sib(0.679, geometric(0.1, 15, floor=0.05), "just_right")
    over = sib(2.15, (9.0, 40.0, 7.0), "too_large")
    labelled = regimes.label_siblings([pivot, higher, over], RULES)
    assert [label for label, _ in labelled] == ["just_right", "just_right", "too_large"]
    assert "a larger step that did not overshoot (run@0.679, lr 0.679, 3.7x) never came down to it" in labelled[0][1]
    assert "untried" not in labelled[0][1]
    # a larger step that came down to the pivot's loss sooner, then rose at its end, did better: the pivot is slow
    faster = sib(0.4, (*geometric(0.4, 14), 0.6), "just_right")
    label, reason = regimes.label_siblings([pivot, faster, over], RULES)[0]
    assert label == "too_small" and "run@0.4 (lr 0.4), a larger step that did not overshoot, had come down" in reason
    assert "untried" not in reason
    # any larger stable step that came down sooner counts, not only the next one up
    further = sib(1.0, faster.losses, "just_right")  # above 0.679, which never came down to the pivot's loss
    label, reason = regimes.label_siblings([pivot, higher, further, over], RULES)[0]
    assert label == "too_small" and "run@1 (lr 1), a larger step that did not overshoot, had come down" in reason


def test_the_fastest_step_just_below_one_that_overshot_is_just_right_though_still_falling() -> None:
    """Ten full-batch epochs: the largest stable step is still falling, and the next one up, 3x larger, diverged.
    The edge lies within 3x, so no step more than 2x faster is stable: it is just right for the epochs given.
    Without a larger step that overshot, or with one far above (the rates between untried), its own curve decides
    (too small)."""
    slow = [sib(0.001, geometric(0.001, 10), "too_small"), sib(0.01, geometric(0.01, 10), "too_small")]
    near = sib(0.03, (9.0, 40.0, 7.0), "too_large")
    labelled = regimes.label_siblings([*slow, near], RULES)
    assert [label for label, _ in labelled] == ["too_small", "just_right", "too_large"]
    assert "the next larger step (lr 0.03, 3x) overshot" in labelled[1][1]
    assert labels_of(slow) == ["too_small", "too_small"]
    far = regimes.label_siblings([*slow, sib(10.0, (9.0, 40.0, 7.0), "too_large")], RULES)
    assert [label for label, _ in far] == ["too_small", "too_small", "too_large"]
    assert "but it is 1,000x larger: the sweep left the faster steps in between untried" in far[1][1]


@pytest.mark.parametrize(("overrides", "plain"), [((), True), (("optim.momentum=0.9",), False),
                                                    (("optim=adam",), False)])
def test_the_full_batch_rise_rule_is_plain_gds(make_cfg, overrides: tuple[str, ...], plain: bool) -> None:
    """Heavy-ball momentum can rise on a stable step, and an adaptive step has no single step length: only plain
    GD's full-batch rises are read as overshoots."""
    from gdexp.callbacks import Labeller, callbacks_for

    cfg = make_cfg("gd=batch", *overrides)
    (labeller,) = [c for c in callbacks_for(cfg) if isinstance(c, Labeller)]
    assert labeller.plain is plain
