"""The Hessian of an MLP's training loss as an operator, and its top eigenvalue by power iteration.

`Hessian(model, X, y)` is H = ∇²_θ L(θ) at the model's current weights θ, for the very loss the model
trains on: the batch mean L = (1/m) Σ ℓ(f(x; θ), y) with the output layer fused into the loss
(softmax + cross-entropy, sigmoid + binary cross-entropy, identity + (1/2m)·Σ(ŷ − y)²). Its product
with a direction v (shaped like `model.params`) is exact, by Pearlmutter's R-operator (1994):
R{·} = d/dε (·)(θ + εv) at ε = 0, pushed forward through the forward pass and back through the
backward pass, so that R{∇L} = H v. For layer i with input a_i (a_0 = X), z_i = a_i W_i + b_i,
a_{i+1} = f(z_i), and δ_i = dL/dz_i:

    forward    R{z_i} = R{a_i} W_i + a_i V_i + v_i          R{a_0} = 0
               R{a_{i+1}} = f'(z_i) ⊙ R{z_i}
    output     R{δ_out} = (1/m)·∇²_z ℓ · R{z_out}             (`Loss.curvature`)
    backward   (Hv)_{W_i} = R{a_i}ᵀ δ_i + a_iᵀ R{δ_i}          (Hv)_{b_i} = Σ_rows R{δ_i}
               R{δ_{i−1}} = f'(z_{i−1}) ⊙ (R{δ_i} W_iᵀ + δ_i V_iᵀ) + f''(z_{i−1}) ⊙ R{z_{i−1}} ⊙ (δ_i W_iᵀ)

(V_i, v_i: the direction's parts for W_i, b_i.) Everything is computed in float64 on float64 copies of
the weights and data, whatever dtype the model trains in, so the only error is float64 rounding (the
matrix built from the products is symmetric to ~1e-16 in the tests) — no step size to tune, as central
differences of gradients would need (error O(ε²)·‖∇³L‖ + O(1e-16/ε), ~1e-10 at best). The forward
and backward pass at θ (activations, f', f'', δ, the loss and the gradient) are done once when the
operator is built; each product then costs about two forward and backward passes' matrix products.
The model itself (its weights, gradients and buffers) is only read. ReLU's f'' is taken as 0: H is
the Hessian almost everywhere, the one GD sees between kinks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from gdexp.nn.mlp import MLP

__all__ = ["Hessian", "flatten", "top_eigen", "unflatten"]

Arrays = dict[str, np.ndarray]
Matvec = Callable[[np.ndarray], np.ndarray]


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Named arrays (`W0, b0, W1, ...`) -> one float64 vector, entries in the mapping's order."""
    return np.concatenate([np.ravel(a) for a in arrays.values()]).astype(np.float64, copy=False)


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> Arrays:
    """One vector -> arrays named and shaped as in `like` (views into `vector`, in `like`'s order)."""
    out, start = {}, 0
    for name, array in like.items():
        out[name] = vector[start : start + array.size].reshape(array.shape)
        start += array.size
    if start != len(vector):
        raise ValueError(f"a vector of {len(vector)} entries does not fit parameters of {start} entries")
    return out


class Hessian:
    """H = ∇²_θ L at the model's weights when built, on the rows X (m, inputs) with targets y (as the model's
    loss takes them); `loss` and `gradient` (flat, float64) are those of the same batch. The products reuse
    buffers allocated here: one array per layer for R{z}, R{a} and R{dL/da}, each (m, width)."""

    def __init__(self, model: MLP, X: np.ndarray, y: np.ndarray) -> None:
        self.like = model.params
        activation = model.activation
        n = len(model.layers)
        self.W = [np.array(model.params[f"W{i}"], dtype=np.float64) for i in range(n)]
        b = [np.array(model.params[f"b{i}"], dtype=np.float64) for i in range(n)]
        y = y if y.dtype.kind == "i" else np.asarray(y, dtype=np.float64)
        # forward: the input a_i of every layer, f' and f'' of every hidden one (None where f'' = 0: ReLU)
        self.a: list[np.ndarray] = [np.asarray(X, dtype=np.float64)]
        self.slope: list[np.ndarray] = []
        self.bend: list[np.ndarray | None] = []
        for i in range(n - 1):
            hidden = activation.forward(self.a[i] @ self.W[i] + b[i])
            slope, bend = activation.derivatives(hidden)
            self.a.append(hidden)
            self.slope.append(slope)
            self.bend.append(bend if np.any(bend) else None)
        z = self.a[-1] @ self.W[-1] + b[-1]
        self.curvature = model.loss.curvature(z)
        delta = z.copy()
        self.loss = model.loss.loss_grad(delta, y)[0]
        # backward: δ_i = dL/dz_i of every layer, dL/da_i = δ_i W_iᵀ of every layer but the first
        self.delta: list[np.ndarray] = [delta] * n  # filled from the top down
        self.up: list[np.ndarray] = [delta] * n  # up[0] is never used (the data need no gradient)
        grads: Arrays = {}
        for i in range(n - 1, -1, -1):
            grads[f"W{i}"], grads[f"b{i}"] = self.a[i].T @ delta, delta.sum(axis=0)
            if i > 0:
                self.up[i] = delta @ self.W[i].T
                delta = self.slope[i - 1] * self.up[i]
                self.delta[i - 1] = delta
        self.gradient = flatten({name: grads[name] for name in self.like})
        self._rz = [np.empty_like(d) for d in self.delta]  # R{z_i}
        self._ra = [np.empty_like(a) for a in self.a]  # R{a_i}; _ra[0] is never used (R{a_0} = 0)
        self._rup = [np.empty_like(a) for a in self.a]  # R{dL/da_i}; _rup[0] is never used
        self._out = np.empty(self.size)
        self._out_parts = unflatten(self._out, self.like)

    @property
    def size(self) -> int:
        return len(self.gradient)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """H v for a flat float64 direction v (the order of `model.params`); a new flat array."""
        V, out = unflatten(v, self.like), self._out_parts
        n = len(self.W)
        for i in range(n):
            rz = np.matmul(self.a[i], V[f"W{i}"], out=self._rz[i])
            rz += V[f"b{i}"]
            if i > 0:
                rz += self._ra[i] @ self.W[i]
            if i < n - 1:
                np.multiply(self.slope[i], rz, out=self._ra[i + 1])
        rdelta = self.curvature(self._rz[-1])
        for i in range(n - 1, -1, -1):
            np.matmul(self.a[i].T, rdelta, out=out[f"W{i}"])
            np.sum(rdelta, axis=0, out=out[f"b{i}"])
            if i > 0:
                out[f"W{i}"] += self._ra[i].T @ self.delta[i]
                rup = np.matmul(rdelta, self.W[i].T, out=self._rup[i])
                rup += self.delta[i] @ V[f"W{i}"].T
                rdelta = rup * self.slope[i - 1]
                bend = self.bend[i - 1]
                if bend is not None:
                    rdelta += bend * self._rz[i - 1] * self.up[i]
        return self._out.copy()

    def dense(self) -> np.ndarray:
        """The whole (n, n) matrix, column j = H e_j: n products, for tests on small models."""
        return np.stack([self.matvec(e) for e in np.eye(self.size)], axis=1)


def _power(matvec: Matvec, v: np.ndarray, iters: int, tol: float) -> tuple[float, np.ndarray]:
    """Power iteration from the unit vector v: (Rayleigh quotient vᵀAv, the next unit iterate), stopped once
    the residual ‖Av − (vᵀAv)v‖ = √(‖Av‖² − (vᵀAv)²) is at most `tol`·|vᵀAv|."""
    rayleigh = np.nan
    for _ in range(iters):
        w = matvec(v)
        rayleigh = float(v @ w)
        norm = float(np.linalg.norm(w))
        if not (norm > 0 and np.isfinite(norm)):
            return (rayleigh if norm == 0 else np.nan), v
        v = w / norm
        if norm * norm - rayleigh * rayleigh <= (tol * rayleigh) ** 2:
            break
    return rayleigh, v


def top_eigen(matvec: Matvec, size: int, *, iters: int, rng: np.random.Generator, start: np.ndarray | None = None,
              tol: float = 0.0) -> tuple[float, np.ndarray]:
    """(λmax, unit eigenvector) of a symmetric operator: its largest *algebraic* eigenvalue, by power iteration.

    From `start` (the previous measurement's vector: a warm start) or a standard normal draw from `rng`,
    v ← A v / ‖A v‖ for at most `iters` products, stopping early once the residual r = Av − (vᵀAv)v has
    ‖r‖ <= `tol`·|vᵀAv| (0: never): then an eigenvalue lies within ‖r‖ of the estimate vᵀAv, and within
    ‖r‖²/gap when the others are a gap away. Power iteration finds the eigenvalue of largest *magnitude*,
    λ_dom; the error of vᵀAv after k products is ~ (|λ_2| / |λ_dom|)^{2k} relative (λ_2 the next in
    magnitude), and no stopping rule can tell a start that has almost no component along the top
    eigenvector from convergence (a warm start has a large one). When λ_dom
    comes out negative (the most negative curvature outweighs the most positive, as near a saddle), a
    second power iteration on the shifted operator A − λ_dom·I, whose eigenvalues λ_i − λ_dom are all
    >= 0 with λmax − λ_dom on top, finds λmax (up to another `iters` products from the same start; it
    converges at the rate (λ_2' − λ_dom)/(λmax − λ_dom), λ_2' the second largest, which can be slow).
    """
    if iters < 1:
        raise ValueError(f"iters={iters!r}: power iteration needs at least one product")
    first = rng.standard_normal(size) if start is None else np.array(start, dtype=np.float64)
    first /= np.linalg.norm(first)
    value, v = _power(matvec, first, iters, tol)
    if not value < 0:  # >= 0, or NaN (non-finite weights): nothing to shift
        return value, v
    shift = value

    def shifted(u: np.ndarray) -> np.ndarray:
        return matvec(u) - shift * u

    gap, v = _power(shifted, first, iters, tol)
    return gap + shift, v
