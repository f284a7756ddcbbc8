"""Validation of a composed config, before any data is loaded, any study opened or any MLflow run exists.

Hydra, composing against the schema (`_schema.py`), already refuses a key of the wrong type. What a type
cannot know is which *values* make sense: a negative learning rate, a batch size of zero, an activation
nobody implemented, a sweep name that is not a folder name. `validate` walks the schema, applies each
key's check, then the rules that tie keys together, and raises one `ConfigError` that names the key,
shows the bad value and says what is allowed, so the user fixes the command line instead of reading a
traceback from the middle of a training loop.
"""

from __future__ import annotations

import difflib
import math
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gdexp.config._resources import memory_problem
from gdexp.config._schema import GROUPS, SELECTOR, Check, Choice, Flag, Number, RayConf, field_checks, schema_of
from gdexp.config._text import DATABASES, mask_secrets, scheme

__all__ = ["ConfigError", "UsageError", "check_overrides", "check_value", "close_match", "password_warning",
           "removed_group", "validate"]

EXTRA_TOP = ("hydra",)  # top-level keys that are not config groups
OPTIONAL = ("sweep", "lr_range")  # the packages the `+sweep=...` overlays add; every other group is needed
MAX_NAME = 100  # characters of a sweep's or experiment's name (a sweep's names a folder)
URL_KEYS = ("sweep.storage", "tracking.uri")  # the keys whose URLs can carry a password


class UsageError(ValueError):
    """Bad input to a command (a config value, a flag, a name): the user fixes the command line. Exit code 2,
    one line (`gdexp.errors`)."""


class ConfigError(UsageError):
    """A config key has a value gdexp cannot use; the message names the key and what is allowed."""


class Refused(BaseException):
    """A usage error raised where a library catches every `Exception` (Hydra turns a callback's into a warning):
    a `BaseException`, it reaches `gdexp.errors.command`, which says `error` in its one line."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def close_match(word: str, choices: Any) -> str:
    """' (did you mean X?)' for the nearest of `choices`, or ''."""
    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


def _allowed(check: Check) -> str:
    if isinstance(check, Choice):
        return f"choose one of {', '.join(check.allowed)}"
    if isinstance(check, Flag):
        return "it must be true or false"
    lo = "" if check.low is None else (f"> {check.low}" if check.low_open else f">= {check.low}")
    hi = "" if check.high is None else (f"< {check.high}" if check.high_open else f"<= {check.high}")
    kind = "an integer" if check.integer else "a number"
    text = f"it must be {kind} {' and '.join(s for s in (lo, hi) if s)}".rstrip()
    return text + (" (or null)" if check.null else "") + (" (or auto)" if check.auto else "")


def _ok(check: Check, value: Any) -> bool:
    if isinstance(check, Choice):
        return value in check.allowed
    if isinstance(check, Flag):
        return isinstance(value, bool)
    if (value is None and check.null) or (value == "auto" and check.auto):
        return True
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    if check.integer and not isinstance(value, int):
        return False
    low_ok = check.low is None or (value > check.low if check.low_open else value >= check.low)
    return low_ok and (check.high is None or (value < check.high if check.high_open else value <= check.high))


def check_value(key: str, check: Check, value: Any) -> None:
    """Raise `ConfigError` (`key=value is not allowed: <rule>`) unless `value` passes `check`."""
    if not _ok(check, value):
        raise ConfigError(f"{key}={mask_secrets(value)!r} is not allowed: {_allowed(check)}")


def _get(cfg: DictConfig, key: str) -> Any:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():  # noqa: SIM118 (`in` is False for ??? values)
        raise ConfigError(f"{key} is missing from the config")
    if OmegaConf.is_missing(parent, leaf):
        raise ConfigError(f"{key} is required but not set (give it on the command line: {key}=...)")
    return parent[leaf]


def _group(cfg: DictConfig, group: str) -> None:
    """Unknown keys (added with `+`), then every key's check, of one config group."""
    node = cfg[group]
    if group in SELECTOR and node.get(SELECTOR[group]) not in GROUPS[group]:  # gd.variant=abc, optim.name=foo
        key = f"{group}.{SELECTOR[group]}"
        raise ConfigError(f"{key}={node.get(SELECTOR[group])!r} is not allowed: choose one of "
                          f"{', '.join(GROUPS[group])} (or pick the option itself: {group}=...)")
    checks = field_checks(schema_of(group, node))
    option = next((f"={node[k]}" for k in ("name", "variant") if k in checks and k in node), "")
    for key in node:
        if key not in checks:
            raise ConfigError(f"{group}.{key} is not a key of {group}{option}: its keys are "
                              f"{', '.join(sorted(checks))}{close_match(str(key), checks)}")
    for key, check in checks.items():
        value = _get(cfg, f"{group}.{key}")
        if check is not None:
            check_value(f"{group}.{key}", check, value)


def _rules(cfg: DictConfig) -> None:
    """What ties keys together, or what no single check can say."""
    data, gd, optim = cfg.data, cfg.gd, cfg.optim
    if data.name == "file":
        path = data.path
        if not isinstance(path, str) or not path:
            raise ConfigError(f"data.path={path!r} is not allowed: give the path of a .npz or .csv file")
        if Path(path).suffix.lower() not in (".npz", ".csv"):
            raise ConfigError(f"data.path={path!r} is not allowed: the file must end in .npz or .csv")
    if data.name == "mnist":
        if not isinstance(data.urls, ListConfig) or not data.urls:
            raise ConfigError(f"data.urls={data.urls!r} is not allowed: give a list of one or more base URLs")
        if not isinstance(data.files, DictConfig) or len(data.files) != 4:
            raise ConfigError("data.files must map the four MNIST file names to their MD5 checksums")
    if gd.variant == "batch" and gd.batch_size is not None:
        raise ConfigError(f"gd.batch_size={gd.batch_size!r} is not allowed with gd=batch: it must be null (whole set)")
    if gd.variant == "stochastic" and gd.batch_size != 1:
        raise ConfigError(f"gd.batch_size={gd.batch_size!r} is not allowed with gd=stochastic: it must be 1")
    if gd.variant == "minibatch":
        check_value("gd.batch_size", Number(low=1, integer=True), gd.batch_size)
    from gdexp.optim import BadArgument, make_optimizer  # here: the reading commands import gdexp.config too

    try:  # the rules tying an optimizer's arguments together are the optimizer's own (`gdexp.optim`)
        make_optimizer(optim)
    except BadArgument as exc:
        shown = str(exc.value).lower() if isinstance(exc.value, bool) else repr(exc.value)
        raise ConfigError(f"optim.{exc.name}={shown} is not allowed: {exc.rule}") from exc
    eps = optim.get("eps")
    if eps is not None and cfg.train.dtype == "float32" and struct.unpack("f", struct.pack("f", eps))[0] == 0:
        raise ConfigError(f"optim.eps={eps!r} is not allowed with train.dtype=float32: it rounds to 0 there, and a "
                          "weight whose gradient is 0 would be updated by 0/0; give at least 1.4e-45, or "
                          "train.dtype=float64")
    uri = cfg.tracking.uri
    if scheme(uri) not in (*DATABASES, "http", "https", "file"):
        raise ConfigError(f"tracking.uri={mask_secrets(uri)!r} is not allowed: use sqlite:///path/mlflow.db, "
                          "postgresql://..., or http(s)://host:port of an MLflow server")
    experiment = cfg.tracking.experiment
    if not experiment.strip() or len(experiment) > MAX_NAME or re.search(r"[\x00-\x1f\x7f]", experiment):
        raise ConfigError(f"tracking.experiment={experiment[:80]!r} is not allowed: give a name of 1 to {MAX_NAME} "
                          "characters without control characters")


def _sweep_rules(cfg: DictConfig) -> None:
    name = cfg.sweep.name
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name) or len(name) > MAX_NAME:
        raise ConfigError(f"sweep.name={name[:80]!r}{'...' if len(name) > 80 else ''} is not allowed: it names the "
                          f"folder sweeps/<name>/: give 1 to {MAX_NAME} letters, digits, '_', '.' or '-', not "
                          "starting with '.' or '-'")
    storage = cfg.sweep.storage
    if storage is not None and not _storage_ok(str(storage)):
        raise ConfigError(f"sweep.storage={mask_secrets(str(storage))[:200]!r} is not allowed: give null (a journal "
                          "sweeps/<name>/study.journal), a journal file path ending in .journal, or a storage URL "
                          "with its database: postgresql://user@host/db, sqlite:///path.db, redis://host:port/n")
    if not cfg.tracking.enabled:
        raise ConfigError("tracking.enabled=false is not allowed in a sweep: every trial is an MLflow run")
    for key, check in field_checks(RayConf).items():
        if check is not None:
            check_value(f"sweep.ray.{key}", check, _get(cfg, f"sweep.ray.{key}"))
    address = cfg.sweep.ray.address
    if address is not None and not re.fullmatch(r"auto|(ray://)?[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", address):
        raise ConfigError(f"sweep.ray.address={address!r} is not allowed: give null (a Ray instance for this "
                          "command), auto, host:port of a cluster's head, or ray://host:port of its Ray Client")


def _storage_ok(spec: str) -> bool:
    """Is `sweep.storage` a journal path or a storage URL that names its server and database? (A bare
    `postgresql://` lets libpq pick a database by its defaults: somebody else's.)"""
    kind = scheme(spec)
    if not kind:
        return spec.endswith(".journal") and len(Path(spec).name) <= MAX_NAME + 8
    if kind == "sqlite":
        return bool(spec.partition("://")[2].lstrip("/"))
    where = urlsplit(spec)
    if kind == "redis":
        return bool(where.hostname)
    if kind in DATABASES:  # the server by host name, or by libpq's `?host=/var/run/postgresql` (a Unix socket)
        socket = any(k == "host" and v for k, v in parse_qsl(where.query))
        return (bool(where.hostname) or socket) and bool(where.path.strip("/"))
    return False


def removed_group(group: str) -> ConfigError:
    """`~train`: a config group gdexp needs, taken away on the command line."""
    return ConfigError(f"{group} cannot be removed (~{group}): gdexp needs it; choose an option instead ({group}=...)")


def check_overrides(overrides: Sequence[str]) -> None:
    """What composing cannot show: a true/false key given something else (OmegaConf reads `data.standardize=2`
    as true), and a config group removed (`~train`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        override = parser.parse_override(text)
        key = override.key_or_group
        if override.is_delete() and key in GROUPS and key not in OPTIONAL:
            raise removed_group(key)
        group, _, leaf = key.partition(".")
        if override.is_delete() or group not in GROUPS or not leaf:
            continue
        checks: dict[str, Check | None] = {}
        for schema in GROUPS[group].values():
            checks.update(field_checks(schema))
        if isinstance(checks.get(leaf), Flag) and not isinstance(override.value(), bool):
            raise ConfigError(f"{key}={override.get_value_element_as_str()} is not allowed: it must be true or false")


def password_warning(overrides: Sequence[str], keys: Sequence[str] = URL_KEYS) -> str | None:
    """The warning for `key=value` settings of a command line (`keys` of them) whose URL holds a password, or
    None. Such a URL works, and gdexp masks it wherever it shows one, but `ps` shows every process's command line
    to every user of the machine, and a sweep's workers carry their command's; the libraries read passwords from
    the environment and files instead."""
    named: dict[str, None] = {}  # in order, once each
    for text in overrides:
        key, _, value = text.partition("=")
        if key.lstrip("+~") in keys and mask_secrets(value) != value:
            named[key.lstrip("+~")] = None
    if not named:
        return None
    return (f"warning: {' and '.join(named)} {'holds' if len(named) == 1 else 'hold'} a password on "
            "the command line, where `ps` shows it to every user of this machine: leave it out of the URL; "
            "PostgreSQL reads PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass), an MLflow server "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")


def unresolved(exc: OmegaConfBaseException) -> ConfigError:
    """The error of a key whose interpolation does not resolve (`data.task='${oops}'`), naming it."""
    return ConfigError(f"{exc.full_key} cannot be resolved: {mask_secrets(str(exc).splitlines()[0])}")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first key whose value gdexp cannot use."""
    try:  # an interpolation on the command line (data.task='${oops}') must resolve, or its key is named
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise unresolved(exc) from exc
    for key in cfg:
        if key not in GROUPS and key not in EXTRA_TOP:
            raise ConfigError(f"{key!s} is not a key of gdexp's config: its keys are "
                              f"{', '.join(g for g in GROUPS)}{close_match(str(key), GROUPS)}")
    for group in GROUPS:
        if group in cfg and cfg[group] is not None:
            _group(cfg, group)
        elif group not in OPTIONAL:
            raise ConfigError(f"{group} is missing from the config: gdexp needs it; choose an option ({group}=...)")
    _rules(cfg)
    if cfg.get("sweep") is not None:
        _sweep_rules(cfg)
    r = cfg.get("lr_range")
    if r is not None and not r.min_lr < r.max_lr:
        raise ConfigError(f"lr_range.min_lr={r.min_lr!r}, lr_range.max_lr={r.max_lr!r}: need 0 < min_lr < max_lr")
    problem = memory_problem(cfg)
    if problem is not None:
        raise ConfigError(problem)
