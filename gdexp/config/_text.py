"""Configs as plain data and as text: resolved containers, dotted keys, URLs with their secrets masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["DATABASES", "as_dict", "database_url", "flatten", "mask_secrets", "scheme", "without_credentials"]

DATABASES = ("postgresql", "postgres", "mysql", "sqlite")  # URL schemes of SQL databases (Optuna's RDB, MLflow)


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


# the `:`s may come escaped, `postgresql\://user\:pw@host`, as Hydra writes a multirun job's overrides
_SECRET_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*\\?://[^:/@\s\\]*\\?:)(?P<secret>[^@/\s]+)(?=@)")
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


def without_credentials(url: str) -> str:
    """`url` without its `user:password@`: an address a browser or urllib can open (a browser refuses a URL with
    credentials, urllib takes them for the host name)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def scheme(url: str) -> str:
    """The kind of store a URL names, without a driver: `postgresql+psycopg://...` -> `postgresql`; "" for a
    path (a journal file)."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def database_url(url: str) -> str:
    """`postgresql://...` -> `postgresql+psycopg://...`: SQLAlchemy's plain scheme means psycopg2, but
    gdexp installs psycopg 3, so the scheme users know works as written. Other URLs pass unchanged."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url
