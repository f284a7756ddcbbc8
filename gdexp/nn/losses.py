"""Output layers fused with their losses; every loss is a mean over the batch.

Fusing the output nonlinearity with the loss gives the short, stable gradients of the textbooks:
dL/dz = (softmax(z) − onehot(y)) / m, (sigmoid(z) − y) / m and (ŷ − y) / m, where z are the last
layer's pre-activations (the logits). `loss_grad` writes dL/dz into `z` itself, so a training step
allocates nothing here beyond a few per-row temporaries.
"""

from __future__ import annotations

import numpy as np

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

    def predict(self, z: np.ndarray) -> np.ndarray:
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

    def predict(self, z: np.ndarray) -> np.ndarray:
        return z.argmax(axis=1)


class BinaryCrossEntropy(Loss):
    """L = −(1/m) Σ [y log p + (1 − y) log(1 − p)], p = sigmoid(z), computed as softplus(z) − y z."""

    name = "binary_cross_entropy"

    def loss_grad(self, z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        m = len(z)
        correct = int(np.count_nonzero((z > 0) == (y > 0.5)))
        loss = float(np.mean(np.logaddexp(0, z) - y * z))
        with np.errstate(over="ignore"):
            np.negative(z, out=z)
            np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)  # p
        z -= y
        z /= m
        return loss, correct

    def predict(self, z: np.ndarray) -> np.ndarray:
        return (z[:, 0] > 0).astype(np.int64)


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

    def predict(self, z: np.ndarray) -> np.ndarray:
        return z


LOSSES: dict[str, type[Loss]] = {
    "multiclass": SoftmaxCrossEntropy,
    "binary": BinaryCrossEntropy,
    "regression": MeanSquaredError,
}
