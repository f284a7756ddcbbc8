"""The fully connected layer: z = x W + b, its gradients beside it.

Shapes (rows are samples): x (m, n_in), W (n_in, n_out), b (n_out,), z (m, n_out).
Backward: dW = xᵀ dz, db = Σ_rows dz, dx = dz Wᵀ — all written into preallocated arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Dense"]


class Dense:
    def __init__(self, W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray) -> None:
        self.W, self.b, self.dW, self.db = W, b, dW, db

    def forward(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(x, self.W, out=out)
        out += self.b
        return out

    def backward(self, x: np.ndarray, dz: np.ndarray, dx: np.ndarray | None) -> None:
        """Fill dW and db from the layer's input `x` and dL/dz; fill `dx` = dL/dx unless it is None."""
        np.matmul(x.T, dz, out=self.dW)
        np.sum(dz, axis=0, out=self.db)
        if dx is not None:
            np.matmul(dz, self.W.T, out=dx)
