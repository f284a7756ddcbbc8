"""The config schema: every key gdexp reads, its type and its allowed values, as Hydra structured configs.

Each config group option (`conf/optim/sgd.yaml`, ...) names its schema first in its defaults list
(`- sgd_schema`), so Hydra refuses a key that is not here and a value of the wrong type while it
composes; the YAML files keep the defaults and a comment per key. What a type cannot say (a learning
rate > 0, one of three activations) is the `check` in each field's metadata, which `validate` applies.
Field lines repeat from class to class (`eps: float = num(low=0.0, low_open=True)` in three optimizers):
each is one key, written where its group's keys are listed in order; a shared base class would move it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = ["GROUPS", "Check", "Choice", "Number", "field_checks", "register", "schema_of"]

ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITS = ("he", "xavier", "normal_0.01")
TASKS = ("auto", "regression", "binary", "multiclass")
VARIANTS = ("batch", "minibatch", "stochastic")
DTYPES = ("float32", "float64")
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
LAUNCHERS = ("local", "ray")
METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
MAX_HIDDEN_SIZE = 65536  # a 784 x 65536 float32 layer is 200 MB: beyond this it is a typo, not a model
MAX_HIDDEN_LAYERS = 100  # deeper plain MLPs do not train with these initialisations anyway
MAX_THREADS = 1024  # OpenBLAS's largest build-time thread count
MAX_ROWS = 10**9  # samples of a generated data set (memory is checked apart, before anything is allocated)
MAX_FEATURES = 10**7
MAX_CLASSES = 10**4
MAX_EPOCHS = 10**9
MAX_POINTS = 10**7
MAX_TRIALS = 10**6
MAX_WORKERS = 1024  # worker processes or Ray tasks of one command (memory and CPUs are checked apart)
DAY_S = 86_400.0


@dataclass(frozen=True)
class Number:
    """A finite number within bounds (`integer`: a whole one); `null`: None is allowed too; `auto`: so is 'auto'."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    null: bool = False
    auto: bool = False


@dataclass(frozen=True)
class Choice:
    """One of `allowed`."""

    allowed: tuple[str, ...]


@dataclass(frozen=True)
class Flag:
    """true or false."""


Check = Number | Choice | Flag


def _key(default: Any = MISSING, check: Check | None = None) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default.copy(), metadata={"check": check})
    return field(default=default, metadata={"check": check})


def num(default: Any = MISSING, **bounds: Any) -> Any:
    return _key(default, Number(**bounds))


def one_of(allowed: tuple[str, ...], default: Any = MISSING) -> Any:
    return _key(default, Choice(allowed))


def flag(default: Any = MISSING) -> Any:
    return _key(default, Flag())


FRACTION = {"low": 0.0, "high": 1.0, "high_open": True}
SEED = {"low": 0, "integer": True}


# -------------------------------------------------------------------------------------------- data
@dataclass
class DataConf:
    name: str = MISSING
    task: str = one_of(TASKS)
    val_fraction: float = num(**FRACTION)
    split_seed: int = num(**SEED)
    standardize: bool = flag()


@dataclass
class SplitDataConf(DataConf):
    test_fraction: float = num(**FRACTION)


@dataclass
class DigitsConf(SplitDataConf):
    pass


@dataclass
class FileConf(SplitDataConf):
    path: str = MISSING  # checked in validate: a .npz or .csv file
    target: str | None = None


@dataclass
class GeneratedConf(SplitDataConf):
    n: int = num(low=2, high=MAX_ROWS, integer=True)
    d: int = num(low=1, high=MAX_FEATURES, integer=True)
    seed: int = num(**SEED)


@dataclass
class LinearConf(GeneratedConf):
    weight: float = num()
    bias: float = num()
    noise: float = num(low=0.0)
    x_scale: float = num(low=0.0, low_open=True)


@dataclass
class BlobsConf(GeneratedConf):
    centers: int = num(low=2, high=MAX_CLASSES, integer=True)
    std: float = num(low=0.0, low_open=True)


@dataclass
class MnistConf(DataConf):
    cache_dir: str = MISSING
    timeout_s: float = num(low=0.0, low_open=True, high=3600.0)
    urls: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- model, gd, optim
@dataclass
class MLPConf:
    hidden_size: int = num(low=1, high=MAX_HIDDEN_SIZE, integer=True)
    hidden_layers: int = num(low=0, high=MAX_HIDDEN_LAYERS, integer=True)
    activation: str = one_of(ACTIVATIONS)
    init: str = one_of(INITS)


@dataclass
class GDConf:
    variant: str = one_of(VARIANTS)
    batch_size: int | None = None  # checked in validate: it depends on the variant
    shuffle: bool = flag()


@dataclass
class OptimConf:
    name: str = MISSING
    lr: float = num(low=0.0, low_open=True)
    weight_decay: float = num(low=0.0)


@dataclass
class SGDConf(OptimConf):
    momentum: float = num(low=0.0)
    dampening: float = num(low=0.0, high=1.0)
    nesterov: bool = flag()


@dataclass
class AdagradConf(OptimConf):
    lr_decay: float = num(low=0.0)
    initial_accumulator_value: float = num(low=0.0)
    eps: float = num(low=0.0, low_open=True)


@dataclass
class RMSpropConf(OptimConf):
    alpha: float = num(low=0.0, high=1.0)
    eps: float = num(low=0.0, low_open=True)
    momentum: float = num(low=0.0)
    centered: bool = flag()


@dataclass
class AdamConf(OptimConf):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # checked in validate: two in [0, 1)
    eps: float = num(low=0.0, low_open=True)
    amsgrad: bool = flag()


# ---------------------------------------------------------------------- train, tracking, regimes
@dataclass
class TrainConf:
    epochs: int = num(low=1, high=MAX_EPOCHS, integer=True)
    seed: int = num(**SEED)
    dtype: str = one_of(DTYPES)
    divergence_factor: float = num(low=1.0, low_open=True)
    progress: bool = flag()
    threads: Any = num(low=1, high=MAX_THREADS, integer=True, auto=True)  # noqa: RUF009 (a dataclasses.field)


@dataclass
class TrackingConf:
    enabled: bool = flag()
    uri: str = MISSING  # checked in validate: a URI MLflow can track to
    experiment: str = MISSING
    batch_loss_stride: Any = num(low=1, high=MAX_EPOCHS, integer=True, auto=True)  # noqa: RUF009 (a dataclasses.field)
    batch_loss_points: int = num(low=1, high=MAX_POINTS, integer=True)
    flush_every_s: float = num(low=0.0, high=DAY_S)
    artifacts: bool = flag()
    loss_curve: bool = flag()


@dataclass
class RegimesConf:
    min_progress: float = num(low=0.0, high=1.0)
    tail_fraction: float = num(low=0.0, high=1.0)
    still_falling: float = num(low=0.0, high=1.0)
    rise_tolerance: float = num(low=0.0, high=1.0)
    oscillation: float = num(low=0.0, high=1.0)
    spike: float = num(low=0.0, low_open=True)
    slower: float = num(low=1.0, low_open=True)


@dataclass
class DiagnosticsConf:
    sharpness_every: int = num(low=0, high=MAX_EPOCHS, integer=True)
    power_iters: int = num(low=1, high=10_000, integer=True)
    probe_size: int = num(low=1, high=MAX_ROWS, integer=True)
    trajectory: bool = flag()


# ------------------------------------------------------------------------------ sweep, lr_range
@dataclass
class RayConf:
    address: str | None = None  # checked in validate: null, auto, host:port or ray://host:port
    cpus_per_worker: float = num(low=0.0, low_open=True, high=MAX_THREADS)


@dataclass
class SweepConf:
    name: str = MISSING  # checked in validate: it becomes a folder name
    n_trials: int = num(low=1, high=MAX_TRIALS, integer=True)
    timeout: float | None = num(low=0.0, low_open=True, high=365 * DAY_S, null=True)
    metric: str = one_of(METRICS)
    direction: str = one_of(("minimize", "maximize"))
    sampler: str = one_of(SAMPLERS)
    pruner: str = one_of(PRUNERS)
    storage: str | None = None
    n_workers: int = num(low=1, high=MAX_WORKERS, integer=True)
    launcher: str = one_of(LAUNCHERS)
    ray: RayConf = field(default_factory=RayConf)
    heartbeat_s: int = num(low=1, high=3600, integer=True)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LRRangeConf:
    min_lr: float = num(low=0.0, low_open=True)
    max_lr: float = num(low=0.0, low_open=True)
    smoothing: float = num(**FRACTION)


# group -> option -> schema; `sweep` and `lr_range` are the packages the `+sweep=...` overlays set
GROUPS: dict[str, dict[str, type]] = {
    "data": {"digits": DigitsConf, "mnist": MnistConf, "linear": LinearConf, "blobs": BlobsConf, "file": FileConf},
    "model": {"mlp": MLPConf},
    "gd": {v: GDConf for v in VARIANTS},
    "optim": {"sgd": SGDConf, "adagrad": AdagradConf, "rmsprop": RMSpropConf, "adam": AdamConf},
    "train": {"default": TrainConf},
    "tracking": {"mlflow": TrackingConf},
    "regimes": {"default": RegimesConf},
    "diagnostics": {"default": DiagnosticsConf},
    "sweep": {"default": SweepConf},
    "lr_range": {"default": LRRangeConf},
}
SELECTOR = {"data": "name", "optim": "name", "gd": "variant"}  # the key that names the option in use


def schema_of(group: str, node: Any) -> type:
    """The schema of a composed group node: by its selector key (`optim.name`), or the group's only one."""
    options = GROUPS[group]
    if group in SELECTOR:
        return options[str(node[SELECTOR[group]])]
    return next(iter(options.values()))


def field_checks(schema: type) -> dict[str, Check | None]:
    """Every key of a schema and the check of its value (None: checked by a rule in validate, or free)."""
    return {f.name: f.metadata.get("check") for f in fields(schema)}


def register() -> None:
    """Store every schema in Hydra's ConfigStore as `schema/<group>/<option>`, where the YAML files' defaults
    lists find them (`- /schema/optim/sgd@_here_`; the overlays `- /schema/sweep/default@sweep`)."""
    store = ConfigStore.instance()
    for group, options in GROUPS.items():
        for option, schema in options.items():
            store.store(group=f"schema/{group}", name=option, node=schema)
