"""Validation of a composed config, before any data is loaded or any MLflow run exists.

Hydra already refuses keys that are not in the config (struct mode) and group options that do not
exist. What it cannot know is which *values* make sense: a negative learning rate, a batch size of
zero, an activation nobody implemented. `validate` checks every key gdexp reads and raises one
`ConfigError` that names the key, shows the bad value and says what is allowed, so the user fixes
the command line instead of reading a traceback from the middle of a training loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "as_dict",
    "flatten",
    "mask_secrets",
    "validate",
]


def _config_dir() -> Path:
    """The packaged config folder: `gdexp/conf` in an installed wheel, `conf/` beside the sources."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return installed if (installed / "config.yaml").exists() else here.parent / "conf"


CONFIG_DIR = _config_dir()

ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITS = ("he", "xavier", "normal_0.01")
TASKS = ("auto", "regression", "binary", "multiclass")
DATASETS = ("digits", "mnist", "linear", "blobs", "file")
VARIANTS = ("batch", "minibatch", "stochastic")
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A config key has a value gdexp cannot use; the message names the key and what is allowed."""


def _get(cfg: DictConfig, key: str) -> Any:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():  # noqa: SIM118 (`in` is False for ??? values)
        raise ConfigError(f"{key} is missing from the config")
    if OmegaConf.is_missing(parent, leaf):
        raise ConfigError(f"{key} is required but not set (give it on the command line: {key}=...)")
    return parent[leaf]


MAX_HIDDEN_SIZE = 65536  # a 784 x 65536 float32 layer is 200 MB: beyond this it is a typo, not a model
MAX_HIDDEN_LAYERS = 100  # deeper plain MLPs do not train with these initialisations anyway
MAX_THREADS = 1024  # OpenBLAS's largest build-time thread count


def _number(
    cfg: DictConfig,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
) -> None:
    value = _get(cfg, key)
    if value is None and allow_none:
        return
    lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
    hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} {' and '.join(s for s in (lo, hi) if s)}".strip()
    if allow_none:
        allowed += " (or null)"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, int)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: it must be {allowed}")


def _choice(cfg: DictConfig, key: str, allowed: Iterable[str]) -> None:
    value = _get(cfg, key)
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def _bool(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: it must be true or false")


def _validate_data(cfg: DictConfig) -> None:
    _choice(cfg, "data.name", DATASETS)
    _choice(cfg, "data.task", TASKS)
    _number(cfg, "data.val_fraction", low=0.0, high=1.0, high_open=True)
    _bool(cfg, "data.standardize")
    _number(cfg, "data.split_seed", low=0, integer=True)
    name = cfg.data.name
    if name != "mnist":
        _number(cfg, "data.test_fraction", low=0.0, high=1.0, high_open=True)
    if name in ("linear", "blobs"):
        _number(cfg, "data.n", low=2, integer=True)
        _number(cfg, "data.d", low=1, integer=True)
        _number(cfg, "data.seed", low=0, integer=True)
    if name == "linear":
        for key in ("data.weight", "data.bias"):
            _number(cfg, key)
        _number(cfg, "data.noise", low=0.0)
        _number(cfg, "data.x_scale", low=0.0, low_open=True)
    if name == "blobs":
        _number(cfg, "data.centers", low=2, integer=True)
        _number(cfg, "data.std", low=0.0, low_open=True)
    if name == "file":
        path = _get(cfg, "data.path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"data.path={path!r} is not allowed: give the path of a .npz or .csv file")
        if Path(path).suffix.lower() not in (".npz", ".csv"):
            raise ConfigError(f"data.path={path!r} is not allowed: the file must end in .npz or .csv")
    if name == "mnist":
        _number(cfg, "data.timeout_s", low=0.0, low_open=True)
        urls = _get(cfg, "data.urls")
        if not isinstance(urls, ListConfig) or not urls:
            raise ConfigError(f"data.urls={urls!r} is not allowed: give a list of one or more base URLs")
        files = _get(cfg, "data.files")
        if not isinstance(files, DictConfig) or len(files) != 4:
            raise ConfigError("data.files must map the four MNIST file names to their MD5 checksums")


OPTIM_KEYS = {
    "sgd": {"lr", "momentum", "dampening", "nesterov", "weight_decay"},
    "adagrad": {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"},
    "rmsprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"},
    "adam": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
}


def _validate_optim(cfg: DictConfig) -> None:
    _choice(cfg, "optim.name", OPTIMIZERS)
    unknown = set(cfg.optim.keys()) - OPTIM_KEYS[cfg.optim.name] - {"name"}
    if unknown:
        raise ConfigError(f"optim.{sorted(unknown)[0]} is not a key of optim={cfg.optim.name}: "
                          f"its keys are {', '.join(sorted(OPTIM_KEYS[cfg.optim.name]))}")
    _number(cfg, "optim.lr", low=0.0, low_open=True)
    _number(cfg, "optim.weight_decay", low=0.0)
    name = cfg.optim.name
    if name == "sgd":
        _number(cfg, "optim.momentum", low=0.0)
        _number(cfg, "optim.dampening", low=0.0, high=1.0)
        _bool(cfg, "optim.nesterov")
        if cfg.optim.nesterov and (cfg.optim.momentum <= 0 or cfg.optim.dampening != 0):
            raise ConfigError(
                f"optim.nesterov=true needs optim.momentum > 0 and optim.dampening = 0 "
                f"(got momentum={cfg.optim.momentum}, dampening={cfg.optim.dampening})"
            )
    elif name == "adagrad":
        _number(cfg, "optim.lr_decay", low=0.0)
        _number(cfg, "optim.initial_accumulator_value", low=0.0)
        _number(cfg, "optim.eps", low=0.0, low_open=True)
    elif name == "rmsprop":
        _number(cfg, "optim.alpha", low=0.0, high=1.0)
        _number(cfg, "optim.eps", low=0.0, low_open=True)
        _number(cfg, "optim.momentum", low=0.0)
        _bool(cfg, "optim.centered")
    elif name == "adam":
        betas = _get(cfg, "optim.betas")
        ok = isinstance(betas, ListConfig) and len(betas) == 2 and all(
            isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas
        )
        if not ok:
            raise ConfigError(f"optim.betas={betas!r} is not allowed: give two numbers in [0, 1), e.g. [0.9,0.999]")
        _number(cfg, "optim.eps", low=0.0, low_open=True)
        _bool(cfg, "optim.amsgrad")


def _validate_rest(cfg: DictConfig) -> None:
    _number(cfg, "model.hidden_size", low=1, high=MAX_HIDDEN_SIZE, integer=True)
    _number(cfg, "model.hidden_layers", low=0, high=MAX_HIDDEN_LAYERS, integer=True)
    _choice(cfg, "model.activation", ACTIVATIONS)
    _choice(cfg, "model.init", INITS)

    _choice(cfg, "gd.variant", VARIANTS)
    _bool(cfg, "gd.shuffle")
    variant, batch_size = cfg.gd.variant, _get(cfg, "gd.batch_size")
    if variant == "batch" and batch_size is not None:
        raise ConfigError(f"gd.batch_size={batch_size!r} is not allowed with gd=batch: it must be null (whole set)")
    if variant == "stochastic" and batch_size != 1:
        raise ConfigError(f"gd.batch_size={batch_size!r} is not allowed with gd=stochastic: it must be 1")
    if variant == "minibatch":
        _number(cfg, "gd.batch_size", low=1, integer=True)

    _number(cfg, "train.epochs", low=1, integer=True)
    _number(cfg, "train.seed", low=0, integer=True)
    _choice(cfg, "train.dtype", DTYPES)
    _number(cfg, "train.divergence_factor", low=1.0, low_open=True)
    _bool(cfg, "train.progress")
    if _get(cfg, "train.threads") != "auto":
        _number(cfg, "train.threads", low=1, high=MAX_THREADS, integer=True)

    _bool(cfg, "tracking.enabled")
    uri = _get(cfg, "tracking.uri")
    if not isinstance(uri, str) or not re.match(r"^(sqlite|postgresql|mysql|https?|file)[+a-z0-9]*:", uri):
        raise ConfigError(
            f"tracking.uri={mask_secrets(uri)!r} is not allowed: use sqlite:///path/mlflow.db, "
            "postgresql://..., or http(s)://host:port of an MLflow server"
        )
    experiment = _get(cfg, "tracking.experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment={experiment!r} is not allowed: give a non-empty name")
    stride = _get(cfg, "tracking.batch_loss_stride")
    if stride != "auto":
        _number(cfg, "tracking.batch_loss_stride", low=1, integer=True)
    _number(cfg, "tracking.batch_loss_points", low=1, integer=True)
    _number(cfg, "tracking.flush_every_s", low=0.0)
    _bool(cfg, "tracking.artifacts")

    for key in ("min_progress", "tail_fraction", "still_falling", "rise_tolerance", "oscillation"):
        _number(cfg, f"regimes.{key}", low=0.0, high=1.0)
    _number(cfg, "regimes.sibling_tolerance", low=0.0)


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first key whose value gdexp cannot use."""
    _validate_data(cfg)
    _validate_optim(cfg)
    _validate_rest(cfg)


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config resolved into plain Python containers (for multiprocessing and YAML dumps)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`), lists kept whole."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


_SECRET_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@/\s]+)(?=@)")
_SECRET_IN_QUERY = re.compile(r"(?i)(?P<head>[?&](password|passwd|pwd|token|secret)=)(?P<secret>[^&\s]+)")


def mask_secrets(value: Any) -> Any:
    """Replace the password of a URL (`postgresql://user:pw@host/db`) and secret query values by `***`.

    Storage and tracking URLs end up in MLflow params, on the console and in saved configs; a password
    in any of those is a leak, so every place that shows a config passes it through here first.
    """
    if not isinstance(value, str):
        return value
    value = _SECRET_IN_URL.sub(r"\g<head>***", value)
    return _SECRET_IN_QUERY.sub(r"\g<head>***", value)


def database_url(url: str) -> str:
    """`postgresql://...` -> `postgresql+psycopg://...`: SQLAlchemy's plain scheme means psycopg2, but
    gdexp installs psycopg 3, so the scheme users know works as written. Other URLs pass unchanged."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url
