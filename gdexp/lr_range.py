"""The learning-rate range test (Smith 2017; fastai's `lr_find`) as one tracked run.

The learning rate grows exponentially at every update, from `lr_range.min_lr` to `lr_range.max_lr`,
and the loss is read against it. With the loss smoothed, the suggestion is:
- `divergence_lr`: the first rate where the loss climbs past `train.divergence_factor` times its start
  (the run stops there), or the rate where it ends up 4x above its minimum;
- `min_loss_lr`: where the smoothed loss is lowest; `steepest_lr`: where it falls fastest per decade (both
  past the first tenth of the updates, as fastai's, where the average warms up on a few noisy batches);
- the just-right window: from `steepest_lr` to `min_loss_lr / 10` (in increasing order), and the
  suggestion `suggested_lr = min_loss_lr / 10`, the usual rule of thumb.
A sweep tests these rates one run each; the report puts this one-run estimate beside what the sweep found.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gdexp import plots, store, train
from gdexp.callbacks import callbacks_for
from gdexp.history import Callback, History
from gdexp.nn import MLP
from gdexp.tracking import MlflowTracker

__all__ = ["exponential", "run", "smoothed", "suggest"]


def exponential(min_lr: float, max_lr: float) -> train.Schedule:
    """lr(step) = min_lr · (max_lr / min_lr)^(step / (total − 1))."""

    def schedule(step: int, total: int) -> float:
        return min_lr * (max_lr / min_lr) ** (step / max(1, total - 1))

    return schedule


def smoothed(losses: np.ndarray, smoothing: float) -> np.ndarray:
    """The batch losses' bias-corrected exponential moving average (fastai's): the curve the suggestion reads."""
    smooth, avg = np.empty(len(losses)), 0.0
    for i, value in enumerate(losses):
        avg = smoothing * avg + (1 - smoothing) * value
        smooth[i] = avg / (1 - smoothing ** (i + 1)) if smoothing else value
    return smooth


def suggest(lrs: np.ndarray, losses: np.ndarray, smoothing: float = 0.9) -> dict[str, float]:
    """Read the range test's curve (see the module docstring). NaN fields when the curve is too short."""
    keep = np.isfinite(lrs) & np.isfinite(losses)
    lrs, losses = lrs[keep], losses[keep]
    if len(lrs) < 5:
        return {k: math.nan for k in ("steepest_lr", "min_loss_lr", "suggested_lr", "divergence_lr",
                                      "window_low", "window_high")}
    smooth = smoothed(losses, smoothing)
    # the first tenth is read by no suggestion, as fastai's lr_find: there the average is warming up on a few noisy
    # batches, 0.01 decade apart, and their jitter reads as a fall steeper than the real one
    skip = len(lrs) // 10
    lowest = skip + int(np.argmin(smooth[skip:]))
    above = np.nonzero(smooth[lowest:] > 4 * smooth[lowest])[0]
    edge = float(lrs[lowest + above[0]]) if len(above) else float(lrs[-1])
    span = slice(skip, lowest + 1)
    slope = np.gradient(smooth[span], np.log10(lrs[span])) if lowest - skip >= 2 else np.zeros(1)
    steepest = float(lrs[skip + int(np.argmin(slope))])
    best = float(lrs[lowest])
    low, high = sorted((steepest, best / 10))
    return {"steepest_lr": steepest, "min_loss_lr": best, "suggested_lr": best / 10, "divergence_lr": edge,
            "window_low": low, "window_high": high}


class _RangeLog(Callback):
    """At the end, logs the suggestion (params), the lr of every update, and lr_range.png to the run."""

    def __init__(self, cfg: DictConfig, tracker: MlflowTracker | None) -> None:
        self.cfg, self.tracker = cfg, tracker
        self.result: dict[str, float] = {}

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        n = history.updates
        lrs, losses = history.lr[:n], history.batch_loss[:n]
        smoothing = float(self.cfg.lr_range.smoothing)
        self.result = suggest(lrs, losses, smoothing)
        if history.diverged:  # the run stopped at the edge: that update's rate is the edge
            self.result["divergence_lr"] = float(lrs[-1])
        if self.tracker is None:
            return
        uri, run_id = self.cfg.tracking.uri, self.tracker.run()
        store.log_params(uri, run_id, {f"lr_range.{k}": f"{v:.6g}" for k, v in self.result.items()})
        store.log_metrics(uri, run_id, [store.metric("lr", float(lr), i + 1, 0) for i, lr in enumerate(lrs)])
        with tempfile.TemporaryDirectory(prefix="gdexp-lr-range-") as tmp:
            keep = np.isfinite(lrs) & np.isfinite(losses)
            plots.lr_range(lrs[keep], losses[keep], smoothed(losses[keep], smoothing), self.result,
                           Path(tmp) / "lr_range.png")
            store.log_artifacts(uri, run_id, Path(tmp))


def run(cfg: DictConfig) -> float:
    """One range-test run; prints and returns the suggested learning rate."""
    r = cfg.lr_range
    tracker = MlflowTracker(cfg, tags={"gdexp.role": "lr_range"}) if cfg.tracking.enabled else None
    log = _RangeLog(cfg, tracker)
    train.run(cfg, callbacks_for(cfg, tracker=tracker, extra=[log]),
              schedule=exponential(float(r.min_lr), float(r.max_lr)))
    res = log.result
    print(f"learning-rate range test: loss falls fastest at {res['steepest_lr']:.3g}, is lowest at "
          f"{res['min_loss_lr']:.3g}, blows up from {res['divergence_lr']:.3g}")
    print(f"just-right window: {res['window_low']:.3g} .. {res['window_high']:.3g}; "
          f"suggested lr {res['suggested_lr']:.3g}")
    if tracker:
        from gdexp.ui import run_hint

        print(f"MLflow run {tracker.run_id}; open the UI: "
              f"{run_hint(cfg.tracking.uri, cfg.tracking.experiment, tracker.run_id)}")
    return float(res["suggested_lr"])
