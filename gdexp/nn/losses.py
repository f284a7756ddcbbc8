"""Output layers fused with their losses; every loss is a mean over the batch.

Fusing the output nonlinearity with the loss gives the short, stable gradients of the textbooks:
dL/dz = (softmax(z) − onehot(y)) / m, (sigmoid(z) − y) / m and (ŷ − y) / m, where z are the last
layer's pre-activations (the logits). `loss_grad` writes dL/dz into `z` itself, so a training step
allocates nothing here beyond a few per-row temporaries.

`curvature(z)` is the second derivative as a map r ↦ (1/m)·∇²_z ℓ(z)·r (row by row), that is
the change of dL/dz when the logits move along r (the R-operator of Pearlmutter 1994, which the
Hessian-vector product `gdexp.nn.hessian` pushes back through the layers). With p the output:
softmax p ⊙ (r − ⟨p, r⟩)/m, sigmoid p(1 − p)·r/m, identity r/m.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gdexp.nn.activations import sigmoid_in_place

__all__ = ["LOSSES", "BinaryCrossEntropy", "Loss", "MeanSquaredError", "SoftmaxCrossEntropy"]


class Loss:
    """Shapes: z (m, k) logits; y as `gdexp.data.Dataset` encodes it for the task."""

    name = ""
    classification = True

    def loss_grad(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """Return (mean loss, correct predictions) and overwrite `z` with dL/dz."""
        raise NotImplementedError

    def loss(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """(mean loss, correct predictions) without touching `z`."""
        return self.loss_grad(z.copy(), y)


    def curvature(self, z: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """r ↦ (1/m)·∇²_z ℓ · r per row, for the logits z and directions r, both (m, k); what it needs of z is
        computed once, z is not touched, and each call returns a new array."""
        raise NotImplementedError


class SoftmaxCrossEntropy(Loss):
    """L = −(1/m) Σ log softmax(z)_y, computed as logsumexp(z) − z_y for stability."""

    name = "softmax_cross_entropy"

    def loss_grad(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        m, rows = len(z), np.arange(len(z))
        correct = int(np.count_nonzero(z.argmax(axis=1) == y))
        z -= z.max(axis=1, keepdims=True)
        picked = z[rows, y]
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) - picked))
        z /= total
        z[rows, y] -= 1
        z /= m
        return loss, correct


    def curvature(self, z: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """∇²_z = diag(p) − p pᵀ per row, so ∇²_z·r = p ⊙ (r − ⟨p, r⟩)."""
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True) * len(z)  # p/m: ⟨p, r⟩ then comes out divided by m as well
        m = len(z)
        return lambda r: p * (r - m * np.sum(p * r, axis=1, keepdims=True))


class BinaryCrossEntropy(Loss):
    """L = −(1/m) Σ [y log p + (1 − y) log(1 − p)], p = sigmoid(z), computed as softplus(z) − y z."""

    name = "binary_cross_entropy"

    def loss_grad(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        m = len(z)
        correct = int(np.count_nonzero((z > 0) == (y > 0.5)))
        loss = float(np.mean(np.logaddexp(0, z) - y * z))
        sigmoid_in_place(z)  # p
        z -= y
        z /= m
        return loss, correct


    def curvature(self, z: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """∂²ℓ/∂z² = p(1 − p), written as e^{−|z|}/(1 + e^{−|z|})², which never overflows."""
        e = np.exp(-np.abs(z))
        weight = e / ((1 + e) ** 2 * len(z))
        return lambda r: weight * r


class MeanSquaredError(Loss):
    """L = (1/2m) Σ (ŷ − y)², ŷ = z (identity output), summed over outputs, averaged over samples."""

    name = "mse"
    classification = False

    def loss_grad(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        m = len(z)
        z -= y
        loss = float(np.vdot(z, z)) / (2 * m)
        z /= m
        return loss, 0


    def curvature(self, z: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """∇²_z = I: the loss is quadratic in the outputs."""
        m = len(z)
        return lambda r: r / m


LOSSES: dict[str, type[Loss]] = {
    "multiclass": SoftmaxCrossEntropy,
    "binary": BinaryCrossEntropy,
    "regression": MeanSquaredError,
}
