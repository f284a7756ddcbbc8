"""Sharpness and the edge of stability, measured while a run trains: the `Sharpness` callback.

Gradient descent with step η on a quadratic with Hessian H is stable along an eigenvector of H only
while η·λ < 2, so what explains a learning rate's regime is the **sharpness** λmax(H) of the training
loss at the current weights and the **stability ratio** η·λmax: GD diverges past 2 on a quadratic, and
on a neural network trained with full-batch GD the sharpness typically rises (progressive sharpening)
until η·λmax reaches 2, then hovers there while the loss keeps falling (Cohen et al., ICLR 2021,
"Gradient descent on neural networks typically occurs at the edge of stability").

Measured here by power iteration on exact Hessian-vector products (`gdexp.nn.hessian`, float64) on a
fixed probe set, warm-started from the previous measurement's eigenvector, so a measurement between two
nearby weight vectors takes a few products. For other optimizers the quantity that the edge is about
is generalised through `Optimizer.stability` (h, P): the next step is stable iff h·λmax(P⁻¹H) < 2, so

    sharpness        = λmax(P^{-1/2} (H + wd·I) P^{-1/2})    (λmax(H) for plain SGD without weight decay)
    stability_ratio  = h · sharpness                        (η·λmax for plain GD; the edge is 2 for every optimizer)
    lr_edge          = 2 η / stability_ratio at initialisation   (the learning rate that would sit at the edge)

with η the learning rate. With heavy-ball or Nesterov momentum P = I and h rescales η (h = η(1 − τ)/(1 + μ),
η(1 + 2μ)/(1 + μ)). For Adam, RMSprop and Adagrad, `sharpness` is the *preconditioned sharpness* of Cohen
et al. (2022, "Adaptive gradient methods at the edge of stability"), λmax(P⁻¹H) with P the diagonal
preconditioner of the next step (Adam: (1 − β1ᵗ)(√v̂ + ε)), whose edge is 2/h (Adam: 38/η at β1 = 0.9); so
`stability_ratio` stays the number to compare with 2. Mini-batch and stochastic runs get the same numbers
for the full-batch loss on the probe set; their edge is only a reference there (noise keeps SGD below it).
"""

from __future__ import annotations

import math
import time

import numpy as np
from omegaconf import DictConfig

from gdexp.data import Dataset
from gdexp.history import Callback, History
from gdexp.nn import MLP
from gdexp.nn.hessian import Hessian, flatten, top_eigen, unflatten
from gdexp.optim import Optimizer
from gdexp.train import blas_limit, blas_threads

__all__ = ["Sharpness", "measure_sharpness"]


def measure_sharpness(model: MLP, X: np.ndarray, y: np.ndarray, optimizer: Optimizer, *, iters: int,
                      rng: np.random.Generator, start: np.ndarray | None = None, tol: float = 0.0,
                      threads: int | str = "auto") -> tuple[float, float, np.ndarray]:
    """(sharpness, stability_ratio, eigenvector) at the model's weights on the rows X (m, inputs) and targets
    y, for the next step of `optimizer` (see the module's docstring). The vector (n_params,) is the warm start
    of the next measurement; `iters`, `rng`, `start` and `tol` go to `top_eigen`. Weights that are not finite
    give NaN. BLAS threads as `train.threads` (`threads`) says for these products (`gdexp.train.blas_threads`):
    a pinned count holds here too, so that a run's sharpness is the same bits on any machine."""
    with np.errstate(all="ignore"), blas_limit(blas_threads(len(X), model.sizes, threads)):
        hessian = Hessian(model, X, y)
        if not np.all(np.isfinite(hessian.gradient)):
            return math.nan, math.nan, np.zeros(hessian.size)
        h, conditioner = optimizer.stability(model.params, unflatten(hessian.gradient, model.params))
        wd = optimizer.weight_decay
        scale = 1.0 if conditioner is None else 1 / np.sqrt(flatten(conditioner))  # P^{-1/2}: keeps it symmetric

        def matvec(v: np.ndarray) -> np.ndarray:
            u = scale * v
            return scale * (hessian.matvec(u) + wd * u)

        value, vector = top_eigen(matvec, hessian.size, iters=iters, rng=rng, start=start, tol=tol)
    return value, h * value, vector


class Sharpness(Callback):
    """Measure the sharpness before the first update, every `every` epochs and after the last (0: never).

    `history.initial` gets `sharpness`, `stability_ratio` and `lr_edge`; the row of every `every`-th epoch
    and of the run's last (`train.epochs`) gets `sharpness` and `stability_ratio` (at the weights after that
    epoch), so a run that ends normally always has its final values; `history.final` gets
    `sharpness_time_s`, the time all measurements took (on_begin's included). The probe set is the training
    set when it has at most `probe_size` rows, else `probe_size` rows drawn once with the callback's own
    generator (seeded by `seed`, which also draws the first start vector; the run's generator is never
    touched, so measuring changes no number of the run). Each measurement is a power iteration of at most
    `power_iters` Hessian-vector products, stopped once the residual ‖Hv − λv‖ is at most `tol`·λ (λ is
    then within about (tol·λ)²/gap of an eigenvalue), warm-started from the last eigenvector: a few products
    when the weights moved little. A product costs about two forward and backward passes over the probe set.

    The stability rule comes from the run's optimizer (`on_begin` is given it), whose state Adam, RMSprop and
    Adagrad need: their preconditioner is their state.
    """

    def __init__(self, every: int, power_iters: int = 20, probe_size: int = 2000, seed: int = 0, *,
                 tol: float = 1e-2) -> None:
        for name, value, low in (("every", every, 0), ("power_iters", power_iters, 1), ("probe_size", probe_size, 1),
                                 ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= {low}")
        if not (isinstance(tol, int | float) and 0 <= tol < 1):
            raise ValueError(f"tol={tol!r} is not allowed: it must be a number in [0, 1)")
        self.every, self.power_iters, self.probe_size, self.tol = every, power_iters, probe_size, float(tol)
        self.optimizer: Optimizer | None = None
        self.rng = np.random.default_rng(seed)
        self.model: MLP | None = None
        self.X = self.y = np.empty(0)
        self.vector: np.ndarray | None = None
        self.last = 0  # the run's last epoch
        self.threads: int | str = "auto"  # train.threads
        self.seconds = 0.0  # spent measuring, on_begin included

    def on_begin(self, cfg: DictConfig, data: Dataset, model: MLP, optimizer: Optimizer, history: History) -> None:
        if not self.every:
            return
        self.optimizer, self.model, self.last, self.threads = optimizer, model, int(cfg.train.epochs), cfg.train.threads
        rows = np.arange(len(data.X_train))
        if len(rows) > self.probe_size:
            rows = np.sort(self.rng.choice(rows, self.probe_size, replace=False))
        self.X = np.asarray(data.X_train[rows], dtype=np.float64)
        self.y = data.y_train[rows]
        sharpness, ratio = self._measure()
        history.initial["sharpness"], history.initial["stability_ratio"] = sharpness, ratio
        history.initial["lr_edge"] = 2 * optimizer.lr / ratio if ratio > 0 else math.nan

    def on_epoch_end(self, history: History) -> None:
        row = history.epochs[-1]
        epoch = int(row["epoch"])
        if not self.every or (epoch % self.every and epoch != self.last):
            return
        row["sharpness"], row["stability_ratio"] = self._measure()

    def on_end(self, history: History, model: MLP, status: str, error: BaseException | None) -> None:
        if self.every:
            history.final["sharpness_time_s"] = self.seconds

    def _measure(self) -> tuple[float, float]:
        assert self.model is not None and self.optimizer is not None
        began = time.perf_counter()
        sharpness, ratio, vector = measure_sharpness(self.model, self.X, self.y, self.optimizer,
                                                     iters=self.power_iters, rng=self.rng, start=self.vector,
                                                     tol=self.tol, threads=self.threads)
        self.vector = vector if math.isfinite(sharpness) else None
        self.seconds += time.perf_counter() - began
        return sharpness, ratio
