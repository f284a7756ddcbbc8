"""The training set cut into an epoch's batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["Batches"]


class Batches:
    """The training set cut into batches, reshuffled every epoch with the run's generator.

    A shuffled batch is gathered right before its update into one preallocated batch buffer
    (`np.take(..., out=)`): no allocation per update, and the rows are still in cache when the update
    reads them (gathering a whole epoch first would write and read the training set once more per epoch;
    benchmarks/engine.py measures the loop). A full batch is never shuffled
    (its gradient does not depend on the order). The buffer is reused: a batch is valid until the next.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int | None, shuffle: bool,
                 rng: np.random.Generator) -> None:
        self.X, self.y = X, y
        self.size = len(X) if batch_size is None else min(int(batch_size), len(X))
        self.shuffle = shuffle and self.size < len(X)
        self.rng = rng
        self._X = np.empty((self.size, *X.shape[1:]), X.dtype) if self.shuffle else X
        self._y = np.empty((self.size, *y.shape[1:]), y.dtype) if self.shuffle else y
        self.starts = range(0, len(X), self.size)

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        X, y, size = self.X, self.y, self.size
        if not self.shuffle:
            for start in self.starts:
                yield X[start : start + size], y[start : start + size]
            return
        perm = self.rng.permutation(len(X))
        for start in self.starts:
            rows = perm[start : start + size]
            xb, yb = self._X[: len(rows)], self._y[: len(rows)]
            np.take(X, rows, axis=0, out=xb)
            np.take(y, rows, axis=0, out=yb)
            yield xb, yb
