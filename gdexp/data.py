"""Data sets -> float arrays with rows as samples, split into train / validation / test parts.

Every loader returns `(X, y)` for the whole set (or the official train and test parts for MNIST);
`load` then splits with its own seeded generator (`data.split_seed`, kept apart from `train.seed` so
that changing the training seed never moves the test set), fits standardisation on the training part
only, decides the task and encodes the labels. Bad data (NaN, mismatched lengths, one class only, an
unreadable file) raises `DataError`, which names the config key to fix, before any run is recorded.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from gdexp.config import ConfigError

__all__ = ["Batches", "DataError", "Dataset", "fetch_mnist", "load", "read_idx"]

log = logging.getLogger(__name__)

MAX_CLASSES = 100  # `task=auto` treats integer labels with more distinct values than this as regression


class DataError(ConfigError):
    """The data named by the config cannot be used; the message says which key and why."""


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


# ----------------------------------------------------------------------------------------- loaders
def _digits(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits, read from the file scikit-learn ships without importing
    scikit-learn: its import takes 1.3 s here, more than a whole sweep trial on digits, and every
    sweep worker would pay it. `load_digits` is the fallback should the file ever move."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data / 16.0, bunch.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1] / 16.0, data[:, -1].astype(np.int64)


def _linear(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    X = cfg.x_scale * rng.random((cfg.n, cfg.d))
    y = X @ np.full(cfg.d, float(cfg.weight)) + cfg.bias + cfg.noise * rng.standard_normal(cfg.n)
    return X, y


def _blobs(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=cfg.n, n_features=cfg.d, centers=cfg.centers, cluster_std=cfg.std,
                      random_state=cfg.seed)
    return X, y


def _file(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data.path={cfg.path!r}: no such file")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                missing = {"X", "y"} - set(npz.files)
                if missing:
                    raise DataError(f"data.path={cfg.path!r}: the .npz has arrays {sorted(npz.files)}, "
                                    f"it needs X and y")
                return np.asarray(npz["X"]), np.asarray(npz["y"])
        import pandas as pd

        frame = pd.read_csv(path)
    except DataError:
        raise
    except Exception as exc:  # unreadable, not a zip, bad CSV: all the user can fix is the file
        raise DataError(f"data.path={cfg.path!r} cannot be read: {exc}") from exc
    target = cfg.target if cfg.target is not None else frame.columns[-1]
    if target not in frame.columns:
        raise DataError(f"data.target={target!r} is not a column of {cfg.path}: "
                        f"choose one of {', '.join(map(str, frame.columns))}")
    features = frame.drop(columns=[target])
    try:
        X = features.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data.path={cfg.path!r}: every feature column must be numeric ({exc})") from exc
    return X, frame[target].to_numpy()


# ------------------------------------------------------------------------------------------- MNIST
MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Fetch `url` into a temporary file beside `dest`, check its MD5, then rename it into place, so
    that an interrupted or corrupt download never replaces what the cache holds."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        got = _md5(Path(tmp))
        if got != md5:
            raise ValueError(f"MD5 {got} does not match the expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_mnist(cfg: DictConfig) -> dict[str, Path]:
    """Make sure the four MNIST files are in `data.cache_dir` with the right checksums; return their paths.

    A cached file whose checksum is wrong is fetched again (the bad copy stays until a good one
    replaces it). When no mirror answers, the error names the files and where to put them by hand.
    """
    cache = Path(os.path.expanduser(str(cfg.cache_dir)))
    cache.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, md5 in cfg.files.items():
        path = cache / str(name)
        if path.exists():
            if _md5(path) == md5:
                paths[str(name)] = path
                continue
            log.warning("%s in the cache is corrupt (checksum mismatch): fetching it again", path)
        errors = []
        for base in cfg.urls:
            url = str(base).rstrip("/") + "/" + str(name)
            try:
                _download(url, path, str(md5), float(cfg.timeout_s))
                break
            except (OSError, urllib.error.URLError, ValueError) as exc:
                errors.append(f"  {url}: {exc}")
        else:
            names = ", ".join(str(n) for n in cfg.files)
            raise DataError(
                f"could not download {name} from any of data.urls:\n" + "\n".join(errors) +
                f"\nWithout a network, put the four files {names} into {cache} by hand "
                f"(or point data.cache_dir at a folder that has them)."
            )
        paths[str(name)] = path
    return paths


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format) into an array of its shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def _mnist(cfg: DictConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    paths = fetch_mnist(cfg)

    def part(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
        X = read_idx(paths[images])
        return X.reshape(len(X), -1) / 255.0, read_idx(paths[labels])

    return part(*MNIST_TRAIN), part(*MNIST_TEST)


# ------------------------------------------------------------------------------- checks and splits
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
    MNIST-sized file took 0.4 to 1.0 s to load for every trial.
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
        (X, y), (X_test, y_test) = _mnist(cfg)
        X, y = _check(X, y, where)
    else:
        loader: Any = {"digits": _digits, "linear": _linear, "blobs": _blobs, "file": _file}[cfg.name]
        X, y = loader(cfg)
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


# ------------------------------------------------------------------------------------------ batches
class Batches:
    """The training set cut into batches, reshuffled every epoch with the run's generator.

    A shuffled batch is gathered right before its update into one preallocated batch buffer
    (`np.take(..., out=)`): no allocation per update, and the rows are still in cache when the update
    reads them. Gathering the whole epoch into a training-set-sized buffer instead wrote and re-read
    188 MB per MNIST epoch and was 40 % of an epoch at batch 1000. A full batch is never shuffled
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
