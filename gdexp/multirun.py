"""gdexp around a Hydra multirun: every job checked before the first one runs (`JobsChecked`), and no password
in what Hydra prints or saves of it (`MaskedLog`, `SavedConfigMasked`).

Hydra runs a multirun's jobs one after another, each composing and checking its own config: with
`optim.lr=0.1,-1,0.2` the first job trained and was recorded before the second was refused, and the third never
ran. A single run's promise -- a wrong value fails before any training, with one line, leaving nothing behind --
holds for the multirun as a whole only if every job is checked first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from gdexp.config import CONFIG_DIR, ConfigError, Refused, check_overrides, mask_secrets, validate

__all__ = ["JobsChecked", "MaskedLog", "SavedConfigMasked", "in_multirun"]


def in_multirun() -> bool:
    """Is this a job of a Hydra multirun (`-m optim.lr=0.1,1`, `-m +sweep=lr optim=sgd,adam`)? Its results go to
    the multirun's one table and UI hint (`console.MultirunSummary`)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class JobsChecked(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): before a multirun's first job, each job's overrides are
    composed by the running Hydra (the same search path: `--config-dir`, `hydra.searchpath`) and checked as the
    job itself would check them; the first refused ends the command, before Hydra makes the multirun's folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from gdexp.config._errors import explain

        written = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        parsed = OverridesParser.create().parse_overrides([str(o) for o in written or []])
        loader = GlobalHydra.instance().config_loader()
        studies: dict[str, tuple[dict[str, Any], list[str]]] = {}  # sweep.name -> what its trials share, and whose
        for batch in BasicSweeper.split_arguments(parsed, None):
            for job in batch:
                try:
                    check_overrides(job)
                    composed = loader.load_configuration(config.hydra.job.config_name, job, RunMode.RUN)
                    with open_dict(composed):
                        del composed["hydra"]
                    validate(composed)
                    if composed.get("sweep") is not None:
                        _one_config_a_study(composed, job, studies)
                except Exception as exc:
                    found = exc if isinstance(exc, ConfigError) else explain(exc, CONFIG_DIR)
                    if found is None:
                        raise
                    raise Refused(found) from exc


class MaskedLog(logging.Filter):
    """Passwords out of a log line: Hydra's launcher logs each multirun job's overrides (`#0 : sweep.storage=...`)
    as they were typed, URLs and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_secrets(record.getMessage()), None
        return True


class SavedConfigMasked(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): Hydra saves a multirun's config, command line included,
    as `multirun.yaml` before its first job, with any password of a storage or tracking URL in it: masked here, as
    each job starts (a batch cut short leaves it masked too)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        saved = Path(config.hydra.sweep.dir) / "multirun.yaml"
        text = saved.read_text() if saved.is_file() else ""
        if mask_secrets(text) != text:
            saved.write_text(mask_secrets(text))


def _one_config_a_study(cfg: DictConfig, job: list[str], studies: dict[str, tuple[dict[str, Any], list[str]]]) -> None:
    """A sweep job's search space and settings (`gdexp.sweep`'s own check, without the data); and two sweep jobs
    of one `sweep.name` must share their trials' config, as a study refuses a command of another
    (`optim=sgd,adam` would run the first 30 trials, then be refused)."""
    from gdexp.sweep._space import TrialConfigs, checked_space

    shared = TrialConfigs(cfg, job).shared(checked_space(cfg, job))
    name = str(cfg.sweep.name)
    first, by = studies.setdefault(name, (shared, job))
    if shared != first:
        # a group's option first (optim.name: what `optim=sgd,adam` changed), then the keys it brought along
        differ = sorted((k for k in shared.keys() | first.keys() if shared.get(k) != first.get(k)),
                        key=lambda k: (not k.endswith(".name"), k))
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ConfigError(f"the jobs {' '.join(by)} and {' '.join(job)} would add trials of two configs to study "
                          f"{name!r} (they differ in {', '.join(differ[:4])}{more}): give each its own sweep.name, "
                          f"as sweep.name='{name}-${{optim.name}}'")
