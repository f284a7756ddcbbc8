"""The multi-layer perceptron: Dense layers with one hidden activation, an output fused with its loss.

Parameters live in `params` (`W0, b0, W1, b1, ...`, W shaped (inputs, outputs)) and their
gradients in `grads` under the same names, so optimizers iterate names, not positions. Activation
and gradient buffers are allocated once per batch size and reused, so a training step is a handful
of BLAS calls and in-place element-wise operations.
"""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import numpy as np

from gdexp.nn.activations import ACTIVATIONS, Activation
from gdexp.nn.init import init_weight
from gdexp.nn.layers import Dense
from gdexp.nn.losses import LOSSES

__all__ = ["MLP", "save_npz"]

EVAL_CHUNK = 8192  # rows per forward pass when evaluating a whole split


class MLP:
    def __init__(self, sizes: list[int], *, activation: str, init: str, task: str,
                 rng: np.random.Generator, dtype: str | np.dtype = "float32") -> None:
        """`sizes` = [inputs, hidden..., outputs]; weights drawn from `rng` by the `init` rule."""
        self.sizes = list(sizes)
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.layers: list[Dense] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            self.params[f"W{i}"] = init_weight(init, rng, n_in, n_out, self.dtype)
            self.params[f"b{i}"] = np.zeros(n_out, dtype=self.dtype)
            self.grads[f"W{i}"] = np.zeros((n_in, n_out), dtype=self.dtype)
            self.grads[f"b{i}"] = np.zeros(n_out, dtype=self.dtype)
            self.layers.append(Dense(self.params[f"W{i}"], self.params[f"b{i}"],
                                     self.grads[f"W{i}"], self.grads[f"b{i}"]))
        self.activation: Activation = ACTIVATIONS[activation]()
        self.loss = LOSSES[task]()
        self._work: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def _buffers(self, m: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per layer: its output (m, n_out), and dL/d(input) (m, n_in) for every layer but the first."""
        if m not in self._work:
            outs = [np.empty((m, n), dtype=self.dtype) for n in self.sizes[1:]]
            dins = [np.empty((m, n), dtype=self.dtype) for n in self.sizes[1:-1]]
            self._work[m] = (outs, dins)
        return self._work[m]

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Logits (m, outputs) for the batch X (m, inputs); the array is a reused buffer."""
        outs, _ = self._buffers(len(X))
        a = X
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            a = layer.forward(a, outs[i])
            if i < last:
                self.activation.forward(a)
        return a

    def backward(self, X: np.ndarray, dz: np.ndarray) -> None:
        """Fill `grads` from dL/d(logits) `dz`, reusing the activations of the last `forward(X)`."""
        outs, dins = self._buffers(len(X))
        for i in range(len(self.layers) - 1, -1, -1):
            x = outs[i - 1] if i > 0 else X
            dx = dins[i - 1] if i > 0 else None
            self.layers[i].backward(x, dz, dx)
            if dx is not None:
                dz = self.activation.backward(x, dx)

    def train_step(self, X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """Forward and backward on one batch: returns (mean loss, correct predictions), fills `grads`."""
        z = self.forward(X)
        loss, correct = self.loss.loss_grad(z, y)
        self.backward(X, z)
        return loss, correct

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) over a whole split, in chunks; accuracy is NaN for regression."""
        total, correct = 0.0, 0
        for start in range(0, len(X), EVAL_CHUNK):
            xb, yb = X[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
            loss, right = self.loss.loss_grad(self.forward(xb), yb)
            total += loss * len(xb)
            correct += right
        accuracy = correct / len(X) if self.loss.classification else float("nan")
        return total / len(X), accuracy

    def save(self, path: str | Path) -> None:
        save_npz(path, self.params)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an .npz (readable by `np.load`, no pickle) whose bytes depend only on the arrays.

    `np.savez` stamps each member with the current time, so two identical runs would give
    different files; a fixed timestamp makes "same config and seed, same bytes" checkable.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array, order="C"), allow_pickle=False)
