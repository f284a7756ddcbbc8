"""Hidden-layer activations, each with its derivative right beside it.

`forward(z)` overwrites its pre-activation buffer with the activation (the pre-activation is not
needed again), and `backward(a, grad)` turns dL/da into dL/dz in place, written in terms of the
output `a` only: relu' = [a > 0], sigmoid' = a(1 − a), tanh' = 1 − a².
`derivatives(a)` gives f' and f'' (also from `a`), which the Hessian-vector product
(`gdexp.nn.hessian`) needs: relu'' = 0 (almost everywhere), sigmoid'' = f'(1 − 2a), tanh'' = −2a f'.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "Activation", "ReLU", "Sigmoid", "Tanh", "sigmoid_in_place"]


def sigmoid_in_place(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−z) written into `z`, which it returns; exp overflow for very negative z gives 1/inf = 0,
    the right limit. The hidden layers' sigmoid and the binary cross-entropy's output both use it."""
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
    z += 1
    return np.reciprocal(z, out=z)


class Activation:
    name = "identity"

    def forward(self, z: np.ndarray) -> np.ndarray:
        """a = f(z), computed in place in `z`; returns it."""
        return z

    def backward(self, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """dL/dz = dL/da * f'(z), with f' from the output `a`; `grad` is overwritten and returned."""
        return grad

    def derivatives(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f'(z), f''(z)) as new arrays shaped like `a` = f(z)."""
        return np.ones_like(a), np.zeros_like(a)


class ReLU(Activation):
    name = "relu"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0, out=z)

    def backward(self, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return np.multiply(grad, a > 0, out=grad)

    def derivatives(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (a > 0).astype(a.dtype), np.zeros_like(a)


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return sigmoid_in_place(z)

    def backward(self, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
        grad *= a
        grad *= 1 - a
        return grad

    def derivatives(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slope = a * (1 - a)
        return slope, slope * (1 - 2 * a)


class Tanh(Activation):
    name = "tanh"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z, out=z)

    def backward(self, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
        grad *= 1 - a * a
        return grad

    def derivatives(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slope = 1 - a * a
        return slope, -2 * a * slope


ACTIVATIONS: dict[str, type[Activation]] = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
