"""gdexp's configuration: the schema (Hydra structured configs), its validation, and configs as text.

Importing this package registers the schema in Hydra's ConfigStore, which the YAML files under `conf/`
name in their defaults lists; so it is imported before Hydra composes (by `gdexp.__main__`, by tests).
"""

from __future__ import annotations

from gdexp.config._checks import (
    ConfigError,
    Refused,
    UsageError,
    check_overrides,
    check_value,
    close_match,
    password_warning,
    validate,
)
from gdexp.config._folder import CONFIG_DIR
from gdexp.config._schema import GROUPS, METRICS, PRUNERS, SAMPLERS, VARIANTS, register
from gdexp.config._text import DATABASES, as_dict, database_url, flatten, mask_secrets, scheme, without_credentials

__all__ = [
    "CONFIG_DIR",
    "DATABASES",
    "GROUPS",
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "VARIANTS",
    "ConfigError",
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
    "without_credentials",
]


register()
