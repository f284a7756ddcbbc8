"""One training run: `run(cfg, callbacks)` -> `History`, the batch / stochastic / mini-batch loop.

The loop is the same for the three variants (only the batch size differs): each update is a forward
and backward pass plus an in-place optimizer step, and its loss goes into a preallocated array.
Everything else happens once per epoch in callbacks (tracking, pruning, the progress bar), or
after the few updates a callback asked for (`Callback.watched_updates`: the trajectory's first
epochs), so observing a run never slows its other updates; the time they take is `callback_time_s`,
kept out of `train_time_s` and `update_time_s`, so that a run's training time does not depend on
where it is observed from (a pruner's report to a PostgreSQL study is a network round trip every
epoch). Every epoch row also says what the updates cost so far: the examples they processed and the
seconds they took (`History`), the two measures a comparison of GD variants needs. A run that
diverges (a loss that is NaN, infinite or above `train.divergence_factor` times the initial loss: a batch's,
checked before its step, or the whole training set's after each epoch, which also judges the last step)
stops early and is a finished result marked `diverged`, not an error.

The BLAS thread count of the loop is `train.threads`: a number pins it; `auto` runs small matrix products
(below about 8 million multiply-adds each) on one thread, where OpenBLAS's threads cost more in waking and
joining than they share out, and larger ones on the threads the process has (all cores, or a sweep
worker's share). The count matters for the numbers, not only the speed: a threaded GEMM splits its sums
differently, so float32 results differ in the last bits between thread counts (and between CPUs whose
OpenBLAS kernels differ). The promise is therefore: same config, seed, BLAS thread count and BLAS
kernel, the same bits; the run records its thread count and BLAS library (`History.blas`).
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig
from threadpoolctl import ThreadpoolController

from gdexp import errors, stopping
from gdexp.data import Batches, Dataset, load
from gdexp.history import Callback, History
from gdexp.nn import MLP
from gdexp.optim import Optimizer, make_optimizer

__all__ = ["Schedule", "blas_limit", "blas_threads", "build_model", "fit", "run", "summary"]

Schedule = Callable[[int, int], float]  # (update index from 0, total updates) -> learning rate
BLAS_MIN_WORK = 8_000_000  # multiply-adds in a run's largest product below which one BLAS thread is faster


def build_model(cfg: DictConfig, data: Dataset, rng: np.random.Generator, dtype: str) -> MLP:
    sizes = [data.n_features, *[cfg.hidden_size] * cfg.hidden_layers, data.n_outputs]
    return MLP(sizes, activation=cfg.activation, init=cfg.init, task=data.task, rng=rng, dtype=dtype)


def blas_threads(batch: int, sizes: Sequence[int], setting: int | str = "auto") -> int | None:
    """The BLAS thread limit of a run's loop: `setting` when it is a number (`train.threads`); with `auto`,
    1 when the largest product of an update (batch x fan-in x fan-out of the widest layer) is too small for
    BLAS threads to pay off, else None: the limit stays as the process set it (all cores, or a sweep
    worker's share)."""
    if setting != "auto":
        return int(setting)
    widest = max((a * b for a, b in itertools.pairwise(sizes)), default=0)
    return 1 if batch * widest < BLAS_MIN_WORK else None


@functools.cache
def _blas() -> ThreadpoolController:
    """threadpoolctl's handle on the BLAS libraries loaded in this process, made once: making one reads every
    loaded shared library (1.4 ms once MLflow is imported; twice a run, a twentieth of what a sweep's trial
    costs besides its training). numpy's BLAS, the one the loop's products run on, is loaded before it."""
    return ThreadpoolController()


def blas_limit(threads: int | None) -> Any:
    """A context in which BLAS uses at most `threads` threads (None: as the process set it)."""
    return _blas().limit(limits=threads, user_api="blas")


def blas_in_use() -> dict[str, str]:
    """The BLAS library the loop's products run on, as it is now (inside the run's thread limit): thread
    count, library, version and CPU kernel -- what a bit-for-bit comparison between two runs must share."""
    found = [i for i in _blas().info() if i.get("user_api") == "blas"]
    if not found:
        return {"threads": "1", "library": "none"}
    info = found[0]
    return {"threads": str(info.get("num_threads", "")), "library": str(info.get("internal_api", "")),
            "version": str(info.get("version", "")), "kernel": str(info.get("architecture", ""))}


def _evaluate(model: MLP, X: np.ndarray, y: np.ndarray, prefix: str, into: dict[str, float]) -> None:
    if len(X) == 0:
        return
    loss, accuracy = model.evaluate(X, y)
    into[f"{prefix}_loss"] = loss
    if model.loss.classification:
        into[f"{prefix}_accuracy"] = accuracy


def _diverged(history: History, loss: float, when: str, factor: float, initial: float) -> None:
    """The run diverged: its training loss (a batch's before its step, or the whole set's after an epoch) reached
    `loss` `when`."""
    history.diverged, history.stop_reason = True, "diverged"
    history.note = f"the training loss reached {loss:.4g} {when}" + (
        f", over {factor:g} times its initial {initial:.4g}" if math.isfinite(loss) else "")


def fit(model: MLP, optimizer: Optimizer, data: Dataset, batches: Batches, epochs: int, history: History,
        *, divergence_factor: float, callbacks: Sequence[Callback] = (), schedule: Schedule | None = None) -> None:
    """Train for `epochs` epochs (or until divergence or a callback's stop), appending to `history`.

    Each row's cost columns continue the last row's: `examples_processed` grows by the rows of the epoch's
    batches (min(updates · batch size, training rows): every batch is full but an epoch's last), and
    `update_time_s` by the time of the epoch's batch loop less the `on_update` hooks in it."""
    start = history.initial.get("train_loss", math.inf)
    limit = divergence_factor * start if math.isfinite(start) and start > 0 else math.inf
    limit = min(limit, np.finfo(np.float64).max)  # an infinite loss is divergence, also when the limit is not finite
    losses, lrs = history.batch_loss, history.lr
    step = history.updates
    history.final.setdefault("callback_time_s", 0.0)
    watch: dict[int, list[Callback]] = {}
    for callback in callbacks:
        for update in callback.watched_updates:
            watch.setdefault(update, []).append(callback)
    marks = iter(sorted(u for u in watch if u > step))
    mark = next(marks, 0)
    last = history.epochs[-1] if history.epochs else {}
    examples, seconds = last.get("examples_processed", 0.0), last.get("update_time_s", 0.0)
    for epoch in range(1, epochs + 1):
        first, paused = step, 0.0
        began = time.perf_counter()
        for xb, yb in batches:
            if schedule is not None:
                optimizer.lr = schedule(step, len(losses))
            loss, _ = model.train_step(xb, yb)
            losses[step], lrs[step] = loss, optimizer.lr
            step += 1
            if not loss <= limit:  # also true for NaN
                _diverged(history, loss, f"at update {step} (epoch {epoch})", divergence_factor, start)
                break
            optimizer.step(model.params, model.grads)
            if step == mark:
                hooked = time.perf_counter()
                for callback in watch[step]:
                    callback.on_update(step, model)
                paused += time.perf_counter() - hooked
                mark = next(marks, 0)
        seconds += time.perf_counter() - began - paused
        examples += min((step - first) * batches.size, len(batches.X))
        history.final["callback_time_s"] += paused
        history.updates = step
        row = {"epoch": float(epoch), "lr": optimizer.lr, "examples_processed": float(examples),
               "update_time_s": seconds}
        _evaluate(model, data.X_train, data.y_train, "train", row)
        _evaluate(model, data.X_val, data.y_val, "val", row)
        history.epochs.append(row)
        if not history.diverged and not row["train_loss"] <= limit:  # the run's last step has no next batch to show it
            _diverged(history, row["train_loss"], f"after epoch {epoch}", divergence_factor, start)
        began = time.perf_counter()
        for callback in callbacks:
            callback.on_epoch_end(history)
        history.final["callback_time_s"] += time.perf_counter() - began
        if history.stop_reason:
            break


def run(cfg: DictConfig, callbacks: Sequence[Callback] = (), schedule: Schedule | None = None) -> History:
    """Load the data, build model and optimizer from `cfg`, train, evaluate on the test split.

    Callbacks see the run begin (after the data loaded: a bad data set fails before any of them),
    every epoch, and its end, whatever the outcome, in the order given (`gdexp.callbacks.callbacks_for`
    decides which a run gets); the loop adds none of its own. The same config and seed give the same numbers.
    Loading and the loop stop at Ctrl-C at once, also where the caller shields the rest (a sweep's trial).
    """
    with stopping.interruptible():  # also inside a sweep's shielded trial: a download stops at Ctrl-C
        data = load(cfg.data, cfg.train.dtype)
    rng = np.random.default_rng(cfg.train.seed)
    model = build_model(cfg.model, data, rng, cfg.train.dtype)
    optimizer = make_optimizer(cfg.optim)
    batches = Batches(data.X_train, data.y_train, cfg.gd.batch_size, cfg.gd.shuffle, rng)
    n_updates = cfg.train.epochs * len(batches)
    history = History(np.full(n_updates, np.nan), np.full(n_updates, np.nan))
    threads = blas_threads(batches.size, model.sizes, cfg.train.threads)
    # overflow is how divergence looks (the loop checks for it itself); the loop's thread count, for the same bits
    with np.errstate(all="ignore"), blas_limit(threads):
        _evaluate(model, data.X_train, data.y_train, "train", history.initial)
        _evaluate(model, data.X_val, data.y_val, "val", history.initial)
    status: str = "KILLED"  # until the loop ends: what a SystemExit (neither an error nor a Ctrl-C) leaves
    error: BaseException | None = None
    begun: list[Callback] = []  # whose on_begin started: a Ctrl-C inside one (after the MLflow run exists) ends it too
    try:
        with errors.captured() as failure:
            for callback in callbacks:
                begun.append(callback)
                callback.on_begin(cfg, data, model, optimizer, history)
            _loop(cfg, model, optimizer, data, batches, history, callbacks, schedule, threads)
        status, error = (("KILLED", failure.interrupted) if failure.interrupted is not None
                         else ("FAILED", failure.error) if failure.error is not None else ("FINISHED", None))
    finally:
        for callback in begun:  # each one ends, also after an earlier one's end failed: the tracker ends its run
            with errors.captured() as ending:
                callback.on_end(history, model, status, error)
            if error is None and (ending.interrupted or ending.error) is not None:
                status, error = ("KILLED", ending.interrupted) if ending.interrupted else ("FAILED", ending.error)
    if error is not None:
        raise error
    return history


def _loop(cfg: DictConfig, model: MLP, optimizer: Optimizer, data: Dataset, batches: Batches, history: History,
          callbacks: Sequence[Callback], schedule: Schedule | None, threads: int | None) -> None:
    """The timed part of a run: every epoch, then the test split, on `threads` BLAS threads (`blas_threads`)."""
    began = time.perf_counter()
    with (np.errstate(all="ignore"), stopping.interruptible(), blas_limit(threads)):
        history.blas = blas_in_use()
        fit(model, optimizer, data, batches, cfg.train.epochs, history,
            divergence_factor=cfg.train.divergence_factor, callbacks=callbacks, schedule=schedule)
        history.final["train_time_s"] = time.perf_counter() - began - history.final["callback_time_s"]
        _evaluate(model, data.X_test, data.y_test, "test", history.final)
    history.final["n_params"] = float(model.n_params)


def summary(history: History) -> dict[str, Any]:
    """The last epoch's row merged with the final metrics: what a console summary shows."""
    return {**(history.epochs[-1] if history.epochs else {}), **history.final, "diverged": history.diverged}
