"""gdexp's configuration: the schema (Hydra structured configs), its validation, and configs as text.

Importing this package registers the schema in Hydra's ConfigStore, which the YAML files under `conf/`
name in their defaults lists; so it is imported before Hydra composes (by `gdexp.__main__`, by tests).
"""

from __future__ import annotations

from pathlib import Path

from gdexp.config._checks import (
    ConfigError,
    UsageError,
    check_overrides,
    check_value,
    close_match,
    password_warning,
    validate,
)
from gdexp.config._multirun import JobsChecked, Refused
from gdexp.config._schema import GROUPS, METRICS, PRUNERS, SAMPLERS, VARIANTS, register
from gdexp.config._text import DATABASES, as_dict, database_url, flatten, mask_secrets, scheme

__all__ = [
    "CONFIG_DIR",
    "DATABASES",
    "GROUPS",
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "VARIANTS",
    "ConfigError",
    "JobsChecked",
    "Refused",
    "UsageError",
    "as_dict",
    "check_overrides",
    "check_value",
    "close_match",
    "database_url",
    "flatten",
    "mask_secrets",
    "password_warning",
    "scheme",
    "validate",
]


def _config_dir() -> Path:
    """The packaged config folder: `gdexp/conf` in an installed wheel, `conf/` beside the sources."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "conf"
    return installed if (installed / "config.yaml").exists() else package.parent / "conf"


CONFIG_DIR = _config_dir()
register()
