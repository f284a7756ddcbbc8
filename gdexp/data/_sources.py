"""Where data comes from: scikit-learn's digits (offline), generated sets, and the user's own file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gdexp import compat
from gdexp.config import ConfigError

__all__ = ["SOURCES", "DataError"]


class DataError(ConfigError):
    """The data named by the config cannot be used; the message says which key and why."""


def _digits(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits, read from the file scikit-learn ships (`compat.digits_file`) without
    importing scikit-learn, whose import would be paid by every sweep worker for one file.
    `load_digits` is the way should the file ever move."""
    path = compat.digits_file()
    if path is None:
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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # unreadable, not a zip, bad CSV, bad array
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


SOURCES = {"digits": _digits, "linear": _linear, "blobs": _blobs, "file": _file}  # data.name -> (X, y)
