"""A loaded data set: checked, split with its own seed, standardised on the training part, encoded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gdexp.data._mnist import mnist
from gdexp.data._sources import SOURCES, DataError

__all__ = ["Dataset", "load"]

MAX_CLASSES = 100  # `task=auto` treats integer labels with more distinct values than this as regression


@dataclass
class Dataset:
    """A split, encoded data set. `y` is int64 class indices (multiclass), float (m, 1) 0/1 (binary)
    or float (m, k) targets (regression); X is (m, features) in the run's dtype."""

    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray | None  # original label values of the class indices (None for regression)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        if self.task == "multiclass":
            assert self.classes is not None
            return len(self.classes)
        return 1 if self.task == "binary" else int(self.y_train.shape[1])


def _check(X: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise DataError(f"{where}: X must be 2-D (samples x features), it has shape {X.shape}")
    if len(X) != len(y):
        raise DataError(f"{where}: X has {len(X)} rows but y has {len(y)}")
    if len(X) < 2 or X.shape[1] == 0:
        raise DataError(f"{where}: needs at least 2 samples and 1 feature, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{where}: X must be numeric, it is {X.dtype}")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{where}: X holds {int(np.sum(~np.isfinite(X)))} NaN or infinite values")
    if np.issubdtype(y.dtype, np.number) and not np.all(np.isfinite(y)):
        raise DataError(f"{where}: y holds {int(np.sum(~np.isfinite(y)))} NaN or infinite values")
    if np.max(np.abs(X)) > 1e30:
        raise DataError(f"{where}: X holds values as large as {np.max(np.abs(X)):.3g}; rescale the features")
    return X, y


def _infer_task(y: np.ndarray) -> str:
    if not np.issubdtype(y.dtype, np.number):
        return "multiclass" if len(np.unique(y)) > 2 else "binary"
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression"
    integral = np.issubdtype(y.dtype, np.integer) or bool(np.all(y == np.round(y)))
    n_values = len(np.unique(y))
    if not integral or n_values > MAX_CLASSES:
        return "regression"
    return "binary" if n_values <= 2 else "multiclass"


def _encode(y: np.ndarray, task: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"data.task=regression needs numeric targets; {where} has {y.dtype}")
        return y.reshape(len(y), -1).astype(np.float64), None
    y = y.ravel() if y.ndim > 1 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"data.task={task} needs one label per sample; {where} has y of shape {y.shape}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"data.task={task} needs at least two classes; {where} has only {classes.tolist()}")
    if task == "binary":
        if len(classes) != 2:
            raise DataError(f"data.task=binary needs exactly two classes; {where} has {len(classes)}")
        return index.astype(np.float64)[:, None], classes
    return index.astype(np.int64), classes


def _split(rng: np.random.Generator, n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): `fraction` of n taken at random (at least one when fraction > 0)."""
    perm = rng.permutation(n)
    k = 0 if fraction == 0 else max(1, round(n * fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])


_loaded: dict[str, Dataset] = {}  # the last data set loaded, by what it was loaded from


def load(cfg: DictConfig, dtype: str = "float32") -> Dataset:
    """The data set the `data` config names, loaded once per process and config.

    The last one loaded is kept, its arrays read-only, for the next call with the same `data` config,
    dtype and (for `data=file`) the same file unchanged: a sweep's trials share their data, and an
    MNIST-sized file would otherwise be read again for every trial.
    """
    key = _source(cfg, dtype)
    if key not in _loaded:
        data = _load(cfg, dtype)
        for array in (data.X_train, data.y_train, data.X_val, data.y_val, data.X_test, data.y_test):
            array.flags.writeable = False
        _loaded.clear()
        _loaded[key] = data
    return _loaded[key]


def _source(cfg: DictConfig, dtype: str) -> str:
    from omegaconf import OmegaConf

    key = f"{dtype}\n{OmegaConf.to_yaml(cfg, resolve=True)}"
    if cfg.name == "file" and Path(cfg.path).is_file():
        path = Path(cfg.path).resolve()
        stat = path.stat()
        key += f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
    return key


def _load(cfg: DictConfig, dtype: str) -> Dataset:
    """Load, check, split, standardise and encode the data set the `data` config names."""
    where = f"data={cfg.name}" + (f" (data.path={cfg.path})" if cfg.name == "file" else "")
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.name == "mnist":
        (X, y), (X_test, y_test) = mnist(cfg)
        X, y = _check(X, y, where)
    else:
        X, y = SOURCES[cfg.name](cfg)
        X, y = _check(X, y, where)
        keep, test = _split(rng, len(X), cfg.test_fraction)
        X, y, X_test, y_test = X[keep], y[keep], X[test], y[test]
    keep, val = _split(rng, len(X), cfg.val_fraction)
    X, y, X_val, y_val = X[keep], y[keep], X[val], y[val]
    if len(X) == 0:
        raise DataError(f"{where}: no training sample is left after data.test_fraction and data.val_fraction")

    task = _infer_task(np.concatenate([y, y_val, y_test])) if cfg.task == "auto" else cfg.task
    all_y, classes = _encode(np.concatenate([y, y_val, y_test]), task, where)
    y, y_val, y_test = np.split(all_y, [len(y), len(y) + len(y_val)])
    if cfg.standardize:
        mean, std = X.mean(axis=0), X.std(axis=0)
        std[std == 0] = 1.0
        X, X_val, X_test = ((part - mean) / std for part in (X, X_val, X_test))
    cast = np.dtype(dtype)

    def floats(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=cast)

    def targets(a: np.ndarray) -> np.ndarray:
        return a if task == "multiclass" else floats(a)

    return Dataset(str(cfg.name), task, floats(X), targets(y), floats(X_val), targets(y_val),
                   floats(X_test), targets(y_test), classes)
