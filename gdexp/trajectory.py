"""The path gradient descent takes through weight space, and the training loss around it: the `Trajectory`
callback and the plane it is drawn on (Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS
2018, section 7: the path projected on its top two PCA directions, the loss contoured on that plane).

Recording. The weights before the first update, after every epoch, and, in the first `EARLY_EPOCHS` epochs of
a run with several updates per epoch (mini-batch and stochastic GD), after every k-th update with
k = ceil(updates per epoch / `EARLY_POINTS`): at most `EARLY_POINTS` points an epoch, enough to show the
zig-zag of noisy steps where the path moves most. They are copies in the model's dtype, held until the end:
(epochs + 1 + 100) x parameters values (`gdexp.config` counts them in its memory estimate).

The plane. A path θ_0 .. θ_{n-1} in R^P (θ_{n-1} the final weights) is drawn on the plane origin + span(axes):
- two parameters (depth 0, one input, one output: y = w x + b, the seeds' line): the plane is the parameter
  space itself, origin 0 and axes the identity, so the path is the weights (w, b) themselves;
- more: the PCA plane through the final weights (origin = θ_{n-1}). Its axes are the top two right singular
  vectors v_1, v_2 of the centred path C = [θ_i − θ̄] (θ̄ the mean point): PCA's first two directions, unit
  length and orthogonal, so a point's coordinates (θ_i − origin)·v_k are its orthogonal projection. Each
  axis points so that the start has a coordinate <= 0: the path runs towards the origin from the lower left.
`explained` = Σ_k var_i((θ_i − origin)·v_k) / Σ_j var_i(θ_ij) = (s_1² + s_2²) / Σ s² (s the singular values
of C): the share of the path's variance (about its mean) the plane holds; 1 for two parameters.

The directions are not filter-normalised. Li et al. rescale *random* directions filter by filter to the
weights' norms, so that surfaces of different networks (and of a ReLU network, whose loss is unchanged by
rescaling a layer) compare; the PCA directions are the path's own, and rescaling them would make the path's
projection oblique and `explained` meaningless. The figure says so.

The loss. `loss[i]` is the training loss of the recorded weights θ_i themselves, not of their projection;
`grid_loss[r, c]` the training loss at origin + grid_x[c]·axes[0] + grid_y[r]·axes[1]. Both are evaluated in
float64 (a float64 copy of the model, whatever dtype it trains in) on the whole training set, with the
model's own `evaluate`: `GRID`² = 1,681 evaluations at the end of the run, about 0.5 s for a 16-unit digits
MLP (benchmarks/trajectory.py). The grid spans the path's coordinates with a `MARGIN` on every side.
Weights that overflowed to inf or NaN (a diverged run) cannot be placed on any plane: such points are left out.
"""

from __future__ import annotations

import math
import time

import numpy as np
from omegaconf import DictConfig

from gdexp.data import Batches, Dataset
from gdexp.history import Callback, History
from gdexp.nn import MLP
from gdexp.nn.hessian import unflatten
from gdexp.optim import Optimizer
from gdexp.train import blas_limit, blas_threads, build_model

__all__ = ["EARLY_EPOCHS", "EARLY_POINTS", "GRID", "MARGIN", "Trajectory", "early_updates", "grid_axes", "plane",
           "project", "variance_share"]

EARLY_EPOCHS = 2  # epochs recorded inside, update by update (every k-th)
EARLY_POINTS = 50  # at most this many points inside each of them
GRID = 41  # grid points per axis of the plane: GRID² loss evaluations
MARGIN = 0.2  # the grid reaches this share of the path's extent beyond it on every side


def early_updates(per_epoch: int, epochs: int = EARLY_EPOCHS, points: int = EARLY_POINTS) -> frozenset[int]:
    """The 1-based numbers of the updates recorded inside the first `epochs` epochs: every k-th, k = ceil(per_epoch /
    points), but an epoch's last (the epoch's own point). None when an epoch is one update (batch GD)."""
    k = math.ceil(per_epoch / points)
    return frozenset(e * per_epoch + u for e in range(epochs) for u in range(k, per_epoch, k))


def variance_share(points: np.ndarray, axes: np.ndarray) -> float:
    """The share of the variance of `points` (n, P) about their mean that their coordinates along the orthonormal
    `axes` (k, P) hold; 1 for points that never moved (nothing lies off any plane)."""
    total = float(np.var(points, axis=0).sum())
    return float(np.var(points @ axes.T, axis=0).sum()) / total if total > 0 else 1.0


def plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(origin (P,), axes (2, P), explained) of the plane a path `points` (n, P), float64, is drawn on: the
    parameter space for P = 2, else the PCA plane through the last point (module docstring).

    The PCA directions come from the n x n Gram matrix of the centred path, not from an SVD of the n x P path:
    C Cᵀ = U S² Uᵀ gives v_k = Cᵀ u_k / s_k, a few milliseconds where the SVD of a 100 x 5,000 path takes a
    tenth of a second. A direction the path has no extent along (s_k = 0: fewer than three distinct points)
    is any unit vector orthogonal to the ones before it."""
    size = points.shape[1]
    if size == 2:
        axes = np.eye(2)
        return np.zeros(2), axes, variance_share(points, axes)
    origin = points[-1].copy()
    centred = points - points.mean(axis=0)
    _, u = np.linalg.eigh(centred @ centred.T)  # eigenvalues ascending: the top two are the last columns
    axes = np.zeros((2, size))
    first = 0.0  # s_1
    for k in range(2):
        v = centred.T @ u[:, -1 - k] if k < u.shape[1] else np.zeros(size)
        v -= axes[:k].T @ (axes[:k] @ v)  # orthogonal to the first to the last bit
        first = first or float(np.linalg.norm(v))
        if not np.linalg.norm(v) > 1e-12 * first:  # s_k = 0: the coordinate axis least along the first, made orthogonal
            v = np.eye(size)[int(np.argmin(np.abs(axes[0])))] if k else np.eye(size)[0]
            v -= axes[:k].T @ (axes[:k] @ v)
        axes[k] = v / np.linalg.norm(v)
    start = (points[0] - origin) @ axes.T
    for k in range(2):
        lead = axes[k][np.argmax(np.abs(axes[k]))]
        if start[k] > 0 or (start[k] == 0 and lead < 0):
            axes[k] = -axes[k]
    return origin, axes, variance_share(points, axes)


def project(points: np.ndarray, origin: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Plane coordinates (n, 2) of `points` (n, P): (θ − origin)·axesᵀ, the orthogonal projection for orthonormal
    axes, so that origin + coordinates @ axes is the nearest point of the plane."""
    return (points - origin) @ axes.T


def grid_axes(path: np.ndarray, size: int = GRID, margin: float = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(grid_x, grid_y), `size` evenly spaced values each, spanning the path's coordinates (n, 2) and `margin` of
    their extent beyond it on every side. An axis along which the path never moved takes the other's extent (1
    when neither moved), so the grid is never a line."""
    low, high = path.min(axis=0), path.max(axis=0)
    span = high - low
    widest = float(span.max())
    span = np.where(span > 0, span, widest if widest > 0 else 1.0)
    centre, half = (low + high) / 2, (0.5 + margin) * span
    return (np.linspace(centre[0] - half[0], centre[0] + half[0], size),
            np.linspace(centre[1] - half[1], centre[1] + half[1], size))


class Trajectory(Callback):
    """Record the weights along a run and, when it finishes, put its plane, path and loss grid in
    `history.artifacts["trajectory"]` (the tracker logs them as `trajectory.npz`) and the time it all took in
    `history.final["trajectory_time_s"]`: `path` (n, 2), `loss` (n), `origin` (P), `axes` (2, P), `grid_x`,
    `grid_y` (GRID), `grid_loss` (GRID, GRID), `explained` (a number) and `epoch` (n): each point's place in
    the run, in epochs (fractional inside the first ones; 0 before the first update). A run that did not
    finish (interrupted, failed) gets none: the tracker logs no artifact for it either."""

    def __init__(self) -> None:
        self.model: MLP | None = None
        self.shadow: MLP | None = None  # a float64 copy of the model's shape, its weights set for each evaluation
        self.X = self.y = np.empty(0)
        self.per_epoch = 1
        self.threads: int | str = "auto"  # train.threads: a pinned count holds for the landscape's losses too
        self.points: list[np.ndarray] = []
        self.when: list[float] = []
        self.seconds = 0.0

    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, optimizer: Optimizer, history: History) -> None:
        began = time.perf_counter()
        self.model, self.threads = model, cfg.train.threads
        self.per_epoch = len(Batches(data.X_train, data.y_train, cfg.gd.batch_size, False, np.random.default_rng(0)))
        self.watched_updates = early_updates(self.per_epoch)
        self.shadow = build_model(cfg.model, data, np.random.default_rng(0), "float64")
        self.X, self.y = np.asarray(data.X_train, dtype=np.float64), data.y_train
        self._record(0)
        self.seconds += time.perf_counter() - began

    def on_update(self, update: int, model: MLP) -> None:
        began = time.perf_counter()
        self._record(update)
        self.seconds += time.perf_counter() - began

    def on_epoch_end(self, history: History) -> None:
        began = time.perf_counter()
        self._record(history.updates)
        self.seconds += time.perf_counter() - began

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if status != "FINISHED" or self.shadow is None:
            return
        began = time.perf_counter()
        points = np.asarray(self.points, dtype=np.float64)
        kept = np.all(np.isfinite(points), axis=1)
        points = points[kept]
        origin, axes, explained = plane(points)
        path = project(points, origin, axes)
        grid_x, grid_y = grid_axes(path)
        with np.errstate(all="ignore"), blas_limit(blas_threads(len(self.X), self.shadow.sizes, self.threads)):
            loss = np.array([self._loss(p) for p in points])
            grid_loss = np.array([[self._loss(origin + a * axes[0] + b * axes[1]) for a in grid_x] for b in grid_y])
        history.artifacts["trajectory"] = {
            "path": path, "loss": loss, "origin": origin, "axes": axes, "grid_x": grid_x, "grid_y": grid_y,
            "grid_loss": grid_loss, "explained": np.array(explained),
            "epoch": np.asarray(self.when, dtype=np.float64)[kept]}
        self.seconds += time.perf_counter() - began
        history.final["trajectory_time_s"] = self.seconds

    def _record(self, update: int) -> None:
        assert self.model is not None
        self.points.append(np.concatenate([np.ravel(p) for p in self.model.params.values()]))
        self.when.append(update / self.per_epoch)

    def _loss(self, theta: np.ndarray) -> float:
        """The training loss (float64) at the flat weights θ."""
        assert self.shadow is not None
        for name, part in unflatten(theta, self.shadow.params).items():
            self.shadow.params[name][...] = part
        return self.shadow.evaluate(self.X, self.y)[0]
