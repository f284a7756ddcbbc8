"""Hydra's composition errors in gdexp's voice: one line naming the key, what is allowed, a close match.

Hydra refuses an unknown key (`foo=1`, `optim.foo=1`), an unknown group option (`optim=adamw`), a value of
the wrong type for the schema (`optim.lr=abc`) and a syntax error, each in several lines of its own and
with exit code 1. `explain` turns such an exception into the `ConfigError` that `validate` would have
raised for the same mistake, so every bad command line ends the same way: one line, exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)
from omegaconf.errors import InterpolationResolutionError

from gdexp import compat
from gdexp.config._checks import ConfigError, check_value, close_match, removed_group, unresolved
from gdexp.config._schema import GROUPS, field_checks

__all__ = ["explain"]

OVERLAYS = ("sweep", "lr_range")  # packages that only the `+sweep=...` overlays add
CONVERTED = {"Integer": "it must be a whole number", "Float": "it must be a number",  # OmegaConf's type names
             "Boolean": "it must be true or false"}


def _keys(group: str) -> dict[str, Any]:
    """Every key any option of `group` has, with its check."""
    found: dict[str, Any] = {}
    for schema in GROUPS[group].values():
        found.update(field_checks(schema))
    return found


def _nested(group: str) -> dict[str, type]:
    """The group's keys that hold a node of their own (sweep.ray), with its schema."""
    return {f.name: f.default_factory for schema in GROUPS[group].values() for f in fields(schema)  # type: ignore[misc]
            if is_dataclass(f.default_factory)}


def _options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _needs_overlay(written: str, config_dir: Path, given: Sequence[str]) -> ConfigError:
    """`sweep=lr` or `sweep.n_trials=...` without the `+sweep=...` that adds the package; or with one that does not
    add it (`+sweep=lr_range`, the range test), or one that a multirun sweeps over (`-m +sweep=lr,regimes`: Hydra
    composes the multirun's shared config without it), as the command line `given` shows."""
    options = ", ".join(f"+sweep={o}" for o in _options(config_dir, "sweep"))
    added = [o.partition("=")[2] for o in given if o.startswith("+sweep=")]
    key, _, value = next((o for o in given if o.lstrip("+").startswith(f"{written}=")), written).partition("=")
    if any("," in a or "(" in a for a in added):
        fix = ("leave it out: each overlay names its own study (a shared name would mix two configs in one study)"
               if written == "sweep.name" else f"write ++{written}={value} (added where missing, set where present)")
        return ConfigError(f"{key.lstrip('+')}={value} cannot be set beside a swept +sweep={added[0]}: Hydra composes "
                           f"a multirun's shared config without the swept overlay, where {written} does not exist; "
                           f"{fix}")
    if added and written.startswith("sweep.") and all(a in OVERLAYS for a in added):
        optuna = ", ".join(f"+sweep={o}" for o in _options(config_dir, "sweep") if o not in OVERLAYS)
        return ConfigError(f"{written} is a key of the Optuna sweeps ({optuna}), and +sweep={added[0]} adds no "
                           f"sweep.* key: its keys are {added[0]}.*")
    if written == "sweep":
        return ConfigError(f"a sweep is added with a +: write +sweep=lr, not sweep=lr (the sweeps: {options})")
    if "." not in written:  # lr_range=...
        return ConfigError(f"{written} is in the config only with the sweep that adds it, with a +: "
                           f"+sweep={written} (the sweeps: {options})")
    return ConfigError(f"{written} needs a sweep, which is added with a +: write +sweep=lr (the sweeps: {options}), "
                       f"then any {written.split('.')[0]}.* key")


def _unknown_key(full_key: str, schema: Any = None) -> ConfigError:
    """`full_key` is in no schema where it was given: its node's keys listed. `schema` is the node's, when Hydra's
    error names it (the option in use: `optim=adam` has no `momentum`, though `optim=sgd` has)."""
    group, _, key = full_key.partition(".")
    if group in GROUPS and not key:  # ~train train.epochs=1: the group removed, then a key of it set
        return removed_group(group)
    if group not in GROUPS or not key:
        return ConfigError(f"{full_key} is not a key of gdexp's config: its keys are {', '.join(GROUPS)}"
                           f"{close_match(group, GROUPS)}")
    node, _, leaf = full_key.rpartition(".")
    if schema is dict:  # a free-form node (sweep.params): Hydra adds a key to it with a +
        return ConfigError(f"{full_key} is not in the config yet: add it with a + (+{full_key}=...)")
    label = node
    if is_dataclass(schema):
        keys = field_checks(schema)  # type: ignore[arg-type]
        named = [option for option, s in GROUPS[group].items() if s is schema]
        if node == group and len(named) == 1 and len(set(GROUPS[group].values())) > 1:
            label = f"{group}={named[0]}"
    elif (inner := node.partition(".")[2]) in _nested(group):  # a key inside a node of the group (sweep.ray.adress)
        keys = field_checks(_nested(group)[inner])
    else:
        node, label, leaf, keys = group, group, key, _keys(group)
    near = close_match(leaf, keys)
    return ConfigError(f"{full_key} is not a key of {label}: its keys are {', '.join(sorted(keys))}"
                       + (near.replace("mean ", f"mean {node}.") if near else ""))


def _bad_value(full_key: str, value: Any, reason: str) -> ConfigError:
    group, _, key = full_key.partition(".")
    check = _keys(group).get(key) if group in GROUPS else None
    if check is not None:
        try:
            check_value(full_key, check, value)
        except ConfigError as exc:
            return exc
    kind = reason.rpartition("could not be converted to ")[2]  # OmegaConf's words for a key of no check of ours
    return ConfigError(f"{full_key}={value!r} is not allowed: {CONVERTED.get(kind, reason)}")


def explain(exc: BaseException, config_dir: Path, given: Sequence[str] = ()) -> ConfigError | None:
    """The one-line `ConfigError` for a Hydra composition error, or None when `exc` is not one. `given`: the
    command line's overrides, where the error alone cannot tell what was written (the overlays added)."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = _options(config_dir, group)
        if options:
            return ConfigError(f"{group}={option} is not an option of {group}: choose one of "
                               f"{', '.join(options)}{close_match(option, options)}")
        return ConfigError(f"{group} is not a config group: the groups are {', '.join(GROUPS)}"
                           f"{close_match(group, GROUPS)}")
    if isinstance(exc, SearchPathException):  # --config-dir (-cd) naming no folder
        return ConfigError(f"--config-dir: {exc} (give a folder of config files)")
    if isinstance(exc, InterpolationResolutionError) and getattr(exc, "full_key", None):
        return unresolved(exc)  # hydra.run.dir='${oops}': Hydra resolves its own keys before the job starts
    flags = compat.hydra_flags_error(exc)
    if flags is not None:  # -m with --cfg job: Hydra's own ValueError
        return ConfigError(f"{flags} (--cfg job prints the config of one run: leave out -m and give each key one "
                           "value)")
    group_override = compat.hydra_override_error(exc)
    if group_override is not None:  # optim=-1
        return ConfigError(f"{group_override}: a config group takes the name of one of its options "
                           f"(the groups: {', '.join(g for g in GROUPS if g not in OVERLAYS)})")
    if isinstance(exc, OverrideParseException):
        return ConfigError(f"cannot read the override {exc.override!r}: {exc.message.splitlines()[0]} (quote "
                           "values with brackets, commas, spaces or a second =, as a URL's ?host=...: key='[1,2]', "
                           "key='postgresql://u@/db?host=/run'; in a shell, the whole: 'key=\"...\"')")
    if isinstance(exc, ConfigCompositionException):
        swept = compat.hydra_sweep_value(exc)
        if swept is not None and swept.lstrip("+").startswith("sweep.params."):
            key, _, value = swept.partition("=")
            return ConfigError(f"{swept}: a search space is a string, quoted twice on the command line: "
                               f"'{key}=\"{value}\"'")
        if swept is not None:  # Hydra's basic sweeper takes lists, range() and choice(), Optuna every form
            multirun = "" if "interval(" in swept else f"add -m for a run per value (python -m gdexp -m {swept}), or "
            return ConfigError(f"{swept} gives several values, which one run cannot take: {multirun}search them with "
                               "an Optuna sweep (+sweep=lr and sweep.params)")
        bad = compat.hydra_schema_error(exc)
        if bad is not None:
            full_key, value = bad
            return _bad_value(full_key, _parsed(value), str(exc.__cause__).splitlines()[0])
        cause, removed = getattr(exc.__cause__, "full_key", None), compat.hydra_removal(exc)
        written = compat.hydra_unknown_override(exc) or removed
        if cause in OVERLAYS or (cause is None and str(written).partition(".")[0] in OVERLAYS):  # no +sweep=...
            return _needs_overlay(written or str(cause), config_dir, given)
        if removed is not None and cause is None:  # optim=adam ~optim.momentum
            return ConfigError(f"~{removed} removes nothing: {removed} is not in the config")
        if removed is not None:  # ~optim.lr: a key of the schema, which an override cannot take away
            return ConfigError(f"{removed} cannot be removed: gdexp needs it; set it instead ({removed}=...)")
        if cause or written:
            return _unknown_key(str(cause or written), getattr(exc.__cause__, "object_type", None))
        return ConfigError(str(exc).splitlines()[0])
    return None


def _parsed(text: str) -> Any:
    """The override's value as YAML reads it (`abc` -> 'abc', `2.5` -> 2.5), for the message."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
