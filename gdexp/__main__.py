"""`python -m gdexp`: compose the Hydra config, validate it, then train once or run the sweep it names.

The wrapper stays thin: everything it calls is plain Python that tests drive with `compose()`. Every failure
goes through the one error table (`gdexp.errors`): a config error ends the command with one line naming the key
(exit code 2), before any data is loaded or any MLflow run exists, and leaves no file behind; Ctrl-C ends it
with exit code 130, SIGTERM with 143, after the runs are closed.
"""

# ruff: noqa: E402 -- the imports come after stopping.exit_at_once(): an import cut by Ctrl-C prints a traceback

from __future__ import annotations

try:
    from gdexp import stopping
except KeyboardInterrupt:  # Ctrl-C while this first import runs, before exit_at_once can take it: as it would end
    import sys

    sys.stderr.write("gdexp: interrupted while starting; nothing was done\n")
    raise SystemExit(130) from None

stopping.exit_at_once()  # Ctrl-C during the imports below: nothing is open yet, so end at once, quietly

import logging
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gdexp import errors, multirun, store
from gdexp.config import CONFIG_DIR, mask_secrets

for noisy in ("alembic", "mlflow", "optuna", "matplotlib", "urllib3"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
logging.getLogger("hydra._internal.core_plugins.basic_launcher").addFilter(multirun.MaskedLog())


def single(cfg: DictConfig) -> float:
    """Train once, print a summary; return the final validation loss (Hydra sweepers read it).

    In a Hydra multirun each job prints its lines and the multirun ends with one table of the jobs and
    one UI hint (`console.MultirunSummary`)."""
    from gdexp import console, train
    from gdexp.callbacks import callbacks_for
    from gdexp.tracking import MlflowTracker
    from gdexp.ui import run_hint

    tracker = MlflowTracker(cfg) if cfg.tracking.enabled else None
    history = train.run(cfg, callbacks_for(cfg, tracker=tracker))
    result = train.summary(history)
    shown = [k for k in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy",
                         "test_accuracy") if k in result]
    width = max(len(k) for k in shown)
    n = len(history.epochs)
    print(f"\n{n} epoch{'s' * (n != 1)}, {history.updates} update{'s' * (history.updates != 1)}, "
          f"{result['train_time_s']:.2f} s"
          + ("  DIVERGED: " + history.note if history.diverged else ""))
    for key in shown:
        print(f"  {key:<{width}}  {result[key]:.4f}")
    print(f"Regime: {history.regime} -- {history.regime_reason}")
    uri, experiment = cfg.tracking.uri, cfg.tracking.experiment
    if tracker is not None:
        print(f"MLflow run {tracker.run_id} in {mask_secrets(uri)} (experiment {experiment})")
    if multirun.in_multirun():  # one hint after the jobs: the runs table
        loss = f"val_loss {result['val_loss']:.4g}, " if "val_loss" in result else ""
        console.record_job(" ".join(task_overrides()), f"{loss}{history.regime}",
                           run_hint(uri, experiment) if tracker is not None else "")
    elif tracker is not None:
        print(f"Open the UI: {run_hint(uri, experiment, tracker.run_id)}")
    return float(result.get("val_loss", math.nan))


def task_overrides() -> list[str]:
    """The command line's overrides as written: `x=${oops}` stays text here, for validation to name, where
    reading the list through OmegaConf would resolve it and fail."""
    from omegaconf import OmegaConf

    task = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    return [str(o) for o in task] if isinstance(task, list) else []


def job(cfg: DictConfig) -> float | None:
    """Validate, check the stores, then run what the config names."""
    from gdexp import reach
    from gdexp.config import ConfigError, check_overrides, password_warning, validate

    overrides = task_overrides()
    check_overrides(overrides)
    validate(cfg)
    uri = cfg.tracking.uri
    problem = reach.tracking_store(uri, experiment=cfg.tracking.experiment, edit=True) if cfg.tracking.enabled else None
    if problem is not None:  # before MLflow's two minutes of retries, and before anything is written
        raise ConfigError(f"tracking.uri={mask_secrets(uri)} cannot be used: {mask_secrets(problem)}")
    warning = password_warning(overrides)
    if warning is not None:
        errors.say_once(f"gdexp: {warning}")
    if cfg.get("sweep") is not None:
        from gdexp import sweep

        return sweep.run(cfg, overrides)
    if cfg.get("lr_range") is not None:
        from gdexp import lr_range

        return lr_range.run(cfg)
    return single(cfg)


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task: nothing escapes it (Hydra would print its own line, with the overrides unmasked)."""
    result: list[float | None] = []
    swept = cfg.get("sweep") is not None
    again = " ".join(shlex.quote(str(mask_secrets(a))) for a in [errors.interpreter(), "-m", "gdexp", *sys.argv[1:]])
    code = errors.command(
        "gdexp", lambda: result.append(job(cfg)), what="config",
        uri=mask_secrets(str(cfg.tracking.uri)), cleanup=_drop_output_dir,
        again=(f"; finished trials are kept: run the same command again to resume the sweep:\n  {again}"
               if swept else "; the runs so far are recorded" if multirun.in_multirun()
               else "; the run is recorded as it was, KILLED"),
        retry=(f"; the sweep stopped, and a trial it cut short is not counted: once the store answers, run the same "
               f"command again:\n  {again}") if swept else "")
    if code:
        sys.exit(code)
    return result[0] if result else None


_EXISTED: set[Path] = set()  # what a literal hydra.run.dir held before Hydra made it (`_note_existing`)


def _note_existing(args: Sequence[str]) -> None:
    """Before Hydra runs: the folders along a literal `hydra.run.dir` (or `hydra.sweep.dir`) that exist, and what
    that folder holds, which a refused command must not remove (`_drop_output_dir`)."""
    _EXISTED.clear()  # of this command line only (the tests call `main` again in one process)
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            path = Path(value).resolve()
            _EXISTED.update(p for p in (path, *path.parents) if p.exists())
            if path.is_dir():
                _EXISTED.update(p.resolve() for p in path.iterdir())


def _drop_output_dir() -> None:
    """A refused command leaves nothing behind: Hydra made the job's output folder and its log file
    (`<job name>.log`) before the job ran (and, for a multirun, `multirun.yaml` in the multirun's folder). What
    this command made goes: the log file while empty, `multirun.yaml` when no other job left anything, then the
    folders while they are empty, up to the working folder. What was there before stays: a folder of the user's
    (`hydra.run.dir=logs`), an earlier run's log, a folder the user made empty."""
    hydra = HydraConfig.get()
    cwd, out = Path.cwd(), Path(hydra.runtime.output_dir).resolve()
    log = out / f"{hydra.job.name}.log"
    if cwd not in out.parents or not log.is_file() or log.stat().st_size or log in _EXISTED:
        return
    log.unlink()
    if hydra.mode == RunMode.MULTIRUN and not any(out.iterdir()):
        out.rmdir()
        out = Path(hydra.sweep.dir).resolve()
        saved = out / "multirun.yaml"
        if saved not in _EXISTED and [p.name for p in out.iterdir()] == [saved.name]:
            saved.unlink()
    for folder in (out, *out.parents):
        if folder == cwd or folder in _EXISTED or not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()


def app_help(args: Sequence[str]) -> None:
    """`--help` as Hydra prints it (its template: the header, the config groups, the composed config), without
    what makes Hydra's slow and noisy: it lists the groups through a fresh deep copy of its config repository
    per group (about a second here), the schemas' groups (`schema/...`, no choice of the user's) among them. The
    config is composed as the command would compose it (`--config-dir`, `--config-name`, `hydra.searchpath`), and
    the groups are the folders of `conf/` and of the user's config folders, their options the YAML files."""
    import string

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import SearchPathException
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    given = get_args_parser().parse_args(args)  # Hydra's own reading of its command line
    search = create_config_search_path(f"file://{CONFIG_DIR}")
    folders = [Path(CONFIG_DIR)]
    if given.config_dir:  # where Hydra's own command line puts it: before the packaged configs
        folders.insert(0, Path(given.config_dir).resolve())
        if not folders[0].is_dir():  # as Hydra says it when the command runs
            raise SearchPathException(f"Additional config directory '{folders[0]}' not found")
        search.prepend("command-line", f"file://{folders[0]}", anchor=SearchPathQuery(provider="schema"))
    cfg = ConfigLoaderImpl(search).load_configuration(given.config_name or "config", given.overrides, RunMode.RUN)
    folders += [Path(p.removeprefix("file://")).resolve() for p in cfg.hydra.searchpath if p.startswith("file://")]
    template = str(cfg.hydra.help.template)
    with open_dict(cfg):
        del cfg["hydra"]
    options: dict[str, set[str]] = {}
    for folder in folders:
        for group in folder.iterdir() if folder.is_dir() else ():
            found = {p.stem for p in group.glob("*.yaml")} if group.is_dir() else set()
            if found:
                options.setdefault(group.name, set()).update(found)
    groups = "".join(f"{name}: {', '.join(sorted(options[name]))}\n" for name in sorted(options))
    shown = mask_secrets(OmegaConf.to_yaml(cfg))  # a password given on the command line is not printed back
    print(string.Template(template).safe_substitute(APP_CONFIG_GROUPS=groups, CONFIG=shown, HYDRA_CONFIG_GROUPS="",
                                                    FLAGS_HELP=""))


def main() -> None:
    """`python -m gdexp`: Hydra's own errors (composition, set-up) reach this function (HYDRA_FULL_ERROR), which
    says them in one line through the same table."""
    stopping.install()
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    args = sys.argv[1:]
    _note_existing(args)
    body = _hydra_main
    if "--help" in args or "-h" in args:
        body = lambda: app_help(args)  # noqa: E731
    try:
        code = errors.command("gdexp", body, what="config")
    finally:
        store.close()
        stopping.spare_exit_collection()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
