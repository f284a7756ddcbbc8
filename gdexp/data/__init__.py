"""Data sets -> float arrays with rows as samples, split into train / validation / test parts.

Every source returns `(X, y)` for the whole set (or the official train and test parts for MNIST);
`load` then splits with its own seeded generator (`data.split_seed`, kept apart from `train.seed` so
that changing the training seed never moves the test set), fits standardisation on the training part
only, decides the task and encodes the labels. Bad data (NaN, mismatched lengths, one class only, an
unreadable file) raises `DataError`, which names the config key to fix, before any run is recorded.
`Batches` cuts the training part into the batches of one epoch.
"""

from __future__ import annotations

from gdexp.data._batches import Batches
from gdexp.data._dataset import Dataset, load
from gdexp.data._mnist import fetch_mnist, read_idx
from gdexp.data._sources import DataError

__all__ = ["Batches", "DataError", "Dataset", "fetch_mnist", "load", "read_idx"]
