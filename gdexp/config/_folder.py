"""Where the packaged config lives: `gdexp/conf` in an installed wheel, `conf/` beside the sources."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR"]


def _config_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # gdexp/
    installed = package / "conf"
    return installed if (installed / "config.yaml").exists() else package.parent / "conf"


CONFIG_DIR = _config_dir()
