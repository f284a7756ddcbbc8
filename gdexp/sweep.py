"""Optuna sweeps: `python -m gdexp +sweep=lr` -- one study, one MLflow parent run, one child run per trial.

The study lives in an Optuna storage (a journal file under `sweeps/<name>/` by default, or any RDB
URL such as `postgresql://...`), so a sweep can be stopped and started again, and several worker
processes or machines can share it. `sweep.n_trials` is the study's total: workers count the trials
already counted (COMPLETE, PRUNED, or FAIL because training raised) and the ones in flight, and only
ask for a new trial while that is short of the total, so the total is exact; a trial interrupted by
Ctrl-C, or whose worker died, does not count and is replaced.

Each trial composes the config with its sampled values as Hydra overrides (a group such as `gd`
can be searched too), trains in-process, reports `sweep.metric` every epoch so pruners work, and
is logged as a child MLflow run tagged `optuna.study`, `optuna.trial` and `optuna.state`. A diverged
trial is COMPLETE with a penalty value (the worst finite value it reached times
`train.divergence_factor`), so the sampler learns from it and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from gdexp import plots, regimes, stopping, train
from gdexp.config import CONFIG_DIR, ConfigError, as_dict, database_url, flatten, mask_secrets, validate
from gdexp.tracking import MlflowTracker, client_for, ensure_experiment, log_config, ui_command

__all__ = ["PRUNERS", "SAMPLERS", "Sweep", "counted", "parse_space", "run"]

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
PARENT_ATTR = "mlflow_parent_run_id"
POLL_S = 0.5


class SurplusTrialError(RuntimeError):
    """Another worker claimed the last slot of the total at the same moment; this trial is not run."""


# ------------------------------------------------------------------------------------ search space
def parse_space(params: Mapping[str, Any], cfg: DictConfig) -> dict[str, BaseDistribution]:
    """`sweep.params` (Hydra sweep syntax) -> Optuna distributions, refusing unknown keys and empty ranges.

    `interval(a, b)` -> float in [a, b]; `int(interval(a, b))` -> integer; `tag(log, ...)` -> log
    scale; `choice(x, y, ...)` -> categorical; `range(a, b[, step])` -> integers (or floats) a, a+step, ...
    A key is a dotted config key (`optim.lr`) or a config group (`gd`).
    """
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    for key, spec in flatten(as_dict(params)).items():  # +sweep.params.optim.momentum=... nests: flatten it
        where = f"sweep.params.{key}"
        is_group = (CONFIG_DIR / str(key)).is_dir()
        if not is_group and OmegaConf.select(cfg, str(key), default=KeyError) is KeyError:
            raise ConfigError(f"{where}: {key} is not a key of the config (nor a config group)")
        text = spec if isinstance(spec, str) else f"choice({','.join(map(str, spec))})"
        try:
            value = parser.parse_override(f"{key}={text}").value()
        except Exception as exc:
            raise ConfigError(f"{where}={text!r} cannot be parsed: {exc}") from exc
        space[str(key)] = _distribution(where, value)
    if not space:
        raise ConfigError("sweep.params is empty: give at least one key to search")
    return space


def _distribution(where: str, value: Any) -> BaseDistribution:
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{where}: the interval ({low}, {high}) is empty")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log-scale interval needs a lower bound > 0, got {low}")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, RangeSweep):
        values = list(value.range())
        if not values:
            raise ConfigError(f"{where}: range({value.start}, {value.stop}, {value.step}) is empty")
        return CategoricalDistribution(values)
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise ConfigError(f"{where}: choice() is empty")
        return CategoricalDistribution(list(value.list))  # type: ignore[arg-type]
    raise ConfigError(f"{where}={value!r} is not a search space: use interval(), choice() or range()")


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def _make_sampler(name: str, seed: int, space: Mapping[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
    if name == "grid":
        grid = {}
        for key, dist in space.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ConfigError(f"sweep.sampler=grid needs choice() or range() for every key; sweep.params.{key} "
                                  "is an interval")
            grid[key] = list(dist.choices)
        return optuna.samplers.GridSampler(grid, seed=seed)
    makers: dict[str, Any] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
    }
    return makers[name]()


def _make_pruner(name: str) -> optuna.pruners.BasePruner:
    makers: dict[str, Any] = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=2),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    return makers[name]()


def validate_sweep(cfg: DictConfig) -> dict[str, BaseDistribution]:
    """Check every `sweep.*` key; return the parsed search space."""
    s = cfg.sweep
    name = s.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"sweep.name={name!r} is not allowed: give a non-empty name without '/'")
    if not isinstance(s.n_trials, int) or isinstance(s.n_trials, bool) or s.n_trials < 1:
        raise ConfigError(f"sweep.n_trials={s.n_trials!r} is not allowed: it must be an integer >= 1")
    if s.timeout is not None and not (isinstance(s.timeout, int | float) and s.timeout > 0):
        raise ConfigError(f"sweep.timeout={s.timeout!r} is not allowed: seconds > 0, or null")
    if s.direction not in ("minimize", "maximize"):
        raise ConfigError(f"sweep.direction={s.direction!r} is not allowed: choose one of minimize, maximize")
    metrics = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
    if s.metric not in metrics:
        raise ConfigError(f"sweep.metric={s.metric!r} is not allowed: choose one of {', '.join(metrics)}")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"sweep.sampler={s.sampler!r} is not allowed: choose one of {', '.join(SAMPLERS)}")
    if s.pruner not in PRUNERS:
        raise ConfigError(f"sweep.pruner={s.pruner!r} is not allowed: choose one of {', '.join(PRUNERS)}")
    if not isinstance(s.n_workers, int) or isinstance(s.n_workers, bool) or s.n_workers < 1:
        raise ConfigError(f"sweep.n_workers={s.n_workers!r} is not allowed: it must be an integer >= 1")
    if not isinstance(s.heartbeat_s, int) or isinstance(s.heartbeat_s, bool) or s.heartbeat_s < 1:
        raise ConfigError(f"sweep.heartbeat_s={s.heartbeat_s!r} is not allowed: whole seconds >= 1")
    if not cfg.tracking.enabled:
        raise ConfigError("tracking.enabled=false is not allowed in a sweep: every trial is an MLflow run")
    space = parse_space(s.params, cfg)
    if s.sampler == "grid":
        _make_sampler("grid", 0, space)
    if s.sampler == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError("sweep.sampler=gp needs PyTorch, which Optuna's GPSampler runs on: "
                          "pip install torch==2.13.0 (or pip install -e '.[bench]'), or choose tpe, random, cmaes, qmc")
    return space


# -------------------------------------------------------------------------------- trial accounting
def counted(t: FrozenTrial) -> bool:
    """Does this trial count toward `sweep.n_trials`? Interrupted, stale and surplus trials do not."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and "error" in t.user_attrs


def tally(trials: Sequence[FrozenTrial]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for t in trials:
        if counted(t):
            counts["done"] += 1
            counts[{TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")] += 1
            counts["diverged"] += bool(t.user_attrs.get("diverged"))
        elif t.state == TrialState.RUNNING:
            counts["active"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1  # enqueued: the next optimize() takes it
        else:
            counts["not counted"] += 1
    return counts


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _EndStaleRun:
    """RDB heartbeat callback: end the MLflow run of a trial whose worker died, then retry it once."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.retry = optuna.storages.RetryFailedTrialCallback(max_retry=1)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        _end_orphan_run(self.uri, trial, "its worker stopped sending heartbeats")
        self.retry(study, trial)


def _end_orphan_run(uri: str, trial: FrozenTrial, why: str) -> None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return
    client = client_for(uri)
    if client.get_run(run_id).info.status == "RUNNING":
        from mlflow.entities import RunTag

        tags = {"optuna.state": "FAIL", "error": f"trial {trial.number} failed: {why}", **unlabelled(why)}
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, "FAILED")


# ------------------------------------------------------------------------------------------ storage
def open_storage(cfg: DictConfig) -> tuple[optuna.storages.BaseStorage, str]:
    """The study's storage and a masked description of where it lives."""
    spec, name = cfg.sweep.storage, cfg.sweep.name
    if spec is None or not str(spec).strip():
        path = Path("sweeps") / name / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return _journal(path), str(path)
    spec = str(spec)
    if spec.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres", "mysql", "sqlite"):
        hb = int(cfg.sweep.heartbeat_s)
        storage = optuna.storages.RDBStorage(
            database_url(spec), heartbeat_interval=hb, grace_period=2 * hb,
            failed_trial_callback=_EndStaleRun(cfg.tracking.uri),
        )
        return storage, mask_secrets(spec)
    if spec.startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend

        return optuna.storages.JournalStorage(JournalRedisBackend(spec)), mask_secrets(spec)
    return _journal(Path(spec)), spec


def _journal(path: Path) -> optuna.storages.BaseStorage:
    """A journal file storage; a journal whose last record is cut short is refused, untouched: Optuna
    would append the next record to the broken line and so corrupt a record that was whole."""
    from optuna.storages.journal import JournalFileBackend

    if _ends_mid_record(path):
        time.sleep(0.5)  # another worker may be in the middle of a write
        if _ends_mid_record(path):
            raise ConfigError(f"sweep.storage: the study journal {path} ends in a cut-off record (was it "
                              "truncated?); it was left as it is -- delete its incomplete last line to keep "
                              "the trials before it, then run the same command again")
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:  # a corrupt or truncated journal: say so, touch nothing
        raise ConfigError(f"sweep.storage: the study journal {path} cannot be read ({type(exc).__name__}: {exc}); "
                          "it was left as it is -- move it away to start the study afresh") from exc


def _ends_mid_record(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


# -------------------------------------------------------------------------------------------- sweep
class _Pruning(train.Callback):
    """Reports the sweep metric every epoch and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, history: train.History) -> None:
        row = history.epochs[-1]
        value = row.get(self.metric, math.nan)
        if not math.isfinite(value):
            return
        step = int(row["epoch"])
        with stopping.shielded():  # a journal record cut short (or its lock left behind) would stall every worker
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if prune:
            history.stop_reason = "pruned"
            history.note = f"pruned at epoch {step} with {self.metric}={value:.4g}"


def own_label(history: train.History, cfg: DictConfig) -> tuple[str, str]:
    """The label of a trial's own curve, as the tracker tags its run. The trial keeps it (user attributes
    `regime`, `regime_reason`), so that relabelling the siblings again, when a resumed sweep ends, starts
    from it and not from the previous relabelling. (Once `History` carries the label, this reads it.)"""
    return regimes.classify(history.initial.get("train_loss", math.nan), history.curve("train_loss"),
                            diverged=history.diverged, note=history.note, rules=cfg.regimes)


def unlabelled(why: str) -> dict[str, str]:
    """The tags of a run that is no regime sample (interrupted, failed): `regime=none` and why."""
    return {"regime": regimes.NONE, "regime_reason": f"{why}: not a regime sample"}


def trial_value(history: train.History, metric: str, direction: str, factor: float) -> float:
    """The trial's objective: the metric's last value; for a diverged run a finite penalty worse than
    anything it reached (minimize: worst finite value x divergence factor; maximize: its worst value)."""
    values = history.curve(metric)
    finite = values[np.isfinite(values)]
    if not history.diverged and len(values) and math.isfinite(values[-1]):
        return float(values[-1])
    initial = history.initial.get(metric, math.nan)
    seen = np.concatenate([finite, [initial] if math.isfinite(initial) else []])
    if direction == "minimize":
        return float(np.max(np.abs(seen)) * factor) if seen.size else 1e30
    return float(np.min(seen)) if seen.size else -1e30


class Sweep:
    """One process's view of a study: its storage, search space, parent run and trial loop."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], *, worker: int = 0, lock: Any = None,
                 parent_run_id: str | None = None, space: dict[str, BaseDistribution] | None = None) -> None:
        """`space`: what `validate_sweep(cfg)` returned, when the caller validated `cfg` already."""
        self.cfg, self.overrides, self.worker, self.lock = cfg, list(overrides), worker, lock
        self.space = validate_sweep(cfg) if space is None else space
        self.storage, self.where = open_storage(cfg)
        self.parent_run_id = parent_run_id
        self._held = False
        existing = self._load(optuna.samplers.RandomSampler())
        n_existing = len(existing.get_trials(deepcopy=False)) if existing else 0
        seed = int(np.random.SeedSequence([cfg.train.seed, n_existing, worker]).generate_state(1)[0] % (2**31))
        self.study = optuna.create_study(
            study_name=cfg.sweep.name, storage=self.storage, direction=cfg.sweep.direction,
            sampler=_make_sampler(cfg.sweep.sampler, seed, self.space), pruner=_make_pruner(cfg.sweep.pruner),
            load_if_exists=True,
        )

    def _load(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=self.cfg.sweep.name, storage=self.storage, sampler=sampler)
        except KeyError:
            return None

    # ------------------------------------------------------------------------ trial configuration
    def trial_config(self, params: Mapping[str, Any]) -> DictConfig:
        """The composed config of one trial: the sweep's own overrides plus the sampled values."""
        groups = {k: v for k, v in params.items() if (CONFIG_DIR / k).is_dir()}
        if groups:
            from hydra import compose

            extra = [f"{k}={v}" for k, v in groups.items()]
            kept = [o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") not in groups]
            cfg = compose(config_name="config", overrides=kept + extra)
        else:
            cfg = copy.deepcopy(self.cfg)
        for key, value in params.items():
            if key not in groups:
                OmegaConf.update(cfg, key, value, merge=False)
        return cfg

    # --------------------------------------------------------------------------------- objective
    def _objective(self, trial: optuna.Trial) -> float:
        self._release()
        trials = self.study.get_trials(deepcopy=False)
        ahead = sum(1 for t in trials if t.number < trial.number
                    and (counted(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)))
        if ahead >= self.cfg.sweep.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrialError(f"trial {trial.number} is beyond sweep.n_trials={self.cfg.sweep.n_trials}")
        trial.set_user_attr("worker", _worker_id())
        name, metric = self.cfg.sweep.name, self.cfg.sweep.metric
        try:  # from here on every error is the trial's own: counted as failed, so the sweep always ends
            params = {key: _suggest(trial, key, dist) for key, dist in self.space.items()}
            cfg = self.trial_config(params)
            validate(cfg)

            def end_tags(history: train.History, status: str) -> dict[str, str]:
                state = "PRUNED" if history.stop_reason == "pruned" else "COMPLETE" if status == "FINISHED" else "FAIL"
                if status == "FINISHED":
                    return {"optuna.state": state}
                why = "interrupted" if status == "KILLED" else "training failed"
                return {"optuna.state": state, **unlabelled(f"{why} after {len(history.epochs)} epochs")}

            tracker = MlflowTracker(
                cfg, parent_run_id=self.parent_run_id, end_tags=end_tags,
                tags={"optuna.study": name, "optuna.trial": str(trial.number), "gdexp.sweep": name},
                on_run=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
            )
            history = train.run(cfg, [tracker, _Pruning(trial, metric)])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            stop = stopping.requested()
            if stop is not None:  # a library turned the Ctrl-C into an error of its own: still an interruption
                trial.set_user_attr("interrupted", True)
                raise stop from exc
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            raise
        val = history.curve("val_loss")
        trial.set_user_attr("diverged", history.diverged)
        trial.set_user_attr("final_val_loss", float(val[-1]) if len(val) else math.nan)
        trial.set_user_attr("lr", float(cfg.optim.lr))
        trial.set_user_attr("hidden_size", int(cfg.model.hidden_size))
        regime, reason = own_label(history, cfg)
        trial.set_user_attr("regime", regime)
        trial.set_user_attr("regime_reason", reason)
        if history.stop_reason == "pruned":
            raise optuna.TrialPruned(history.note)
        return trial_value(history, metric, self.cfg.sweep.direction, self.cfg.train.divergence_factor)

    def _take(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
            self._held = True

    def _release(self) -> None:
        if self._held:
            self._held = False
            self.lock.release()

    # ------------------------------------------------------------------------------------- loop
    def reap_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone: by heartbeat (RDB storages), or, for journal
        storages, by a dead process id on this host; their MLflow runs are ended too."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(t.user_attrs.get("worker", ""))
            whose, _, pid = worker.rpartition(":")
            if whose == host and pid.isdigit() and not _alive(int(pid)):
                try:
                    self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                except (ValueError, RuntimeError):
                    continue
                _end_orphan_run(self.cfg.tracking.uri, t, f"its worker process {pid} is gone")

    def work(self, deadline: float | None = None, on_trial: Any = None) -> None:
        """Run trials until the study holds `sweep.n_trials` counted trials (or the deadline passes)."""
        n = self.cfg.sweep.n_trials
        callbacks = [_report_failure, *([on_trial] if on_trial else [])]
        while True:
            with stopping.shielded():
                self.reap_stale()
            counts = tally(self.study.get_trials(deepcopy=False))
            if counts["done"] >= n or (deadline is not None and time.time() >= deadline):
                return
            if counts["done"] + counts["active"] >= n:
                time.sleep(POLL_S)  # the rest is in flight; stay to replace a trial whose worker dies
                continue
            self._take()
            try:  # Optuna's writes run whole; the trial's training is interruptible (train.run)
                with stopping.shielded():
                    self.study.optimize(self._objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            finally:
                self._release()


def _report_failure(study: optuna.Study, trial: FrozenTrial) -> None:
    """One line for a trial whose training raised (Optuna's own warning would print a traceback)."""
    if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
        from tqdm.auto import tqdm

        tqdm.write(f"trial {trial.number} failed: {trial.user_attrs['error']}", file=sys.stderr)


# --------------------------------------------------------------------------------- parent & workers
class _Workers:
    """The `sweep.n_workers - 1` local workers beside this process (worker 0).

    They are forked before this process opens the study's storage or the MLflow store, so no
    connection is shared, and after it imported what a trial needs, so they inherit the imports: a
    spawned worker spent ~3 s importing before its first trial. Each waits for the parent run's id
    (None: nothing to do), then runs trials like any other worker.
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution],
                 deadline: float | None) -> None:
        import matplotlib.figure  # noqa: F401 -- imported here once, inherited by every worker
        import mlflow.tracking  # noqa: F401

        n = cfg.sweep.n_workers
        ctx = multiprocessing.get_context("fork")
        self.lock = ctx.Lock()
        self.threads = max(1, (os.cpu_count() or 1) // n)
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        for i in range(1, n):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"gdexp-sweep-worker-{i}",
                               args=(cfg, overrides, space, i, self.threads, self.lock, receive, deadline))
            proc.start()
            receive.close()
            self.procs.append(proc)
            self.pipes.append(send)

    def start(self, parent_run_id: str | None) -> None:
        for pipe in self.pipes:
            pipe.send(parent_run_id)
            pipe.close()

    def stop(self, *, interrupt: bool) -> None:
        """Wait for the workers; on an interruption first pass it on (each closes its own trial)."""
        for pipe in self.pipes:
            if not pipe.closed:
                pipe.close()  # a worker still waiting for the parent run's id gets EOF and ends
        for proc in self.procs:
            if interrupt and proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in self.procs:
            proc.join(timeout=60 if interrupt else None)


def _worker_main(cfg: DictConfig, overrides: Sequence[str], space: dict[str, BaseDistribution], worker: int,
                 threads: int, lock: Any, receive: Any, deadline: float | None) -> None:
    """A forked worker: its own BLAS thread share, its own storage and MLflow connections, the same study."""
    from threadpoolctl import threadpool_limits

    stopping.install(once=True)
    threadpool_limits(threads)
    try:
        parent_run_id = receive.recv()
        if parent_run_id is None:
            return
        Sweep(cfg, overrides, worker=worker, lock=lock, parent_run_id=parent_run_id, space=space).work(deadline)
    except (KeyboardInterrupt, EOFError):
        pass


@contextlib.contextmanager
def _exclusive(storage: optuna.storages.BaseStorage, where: str, name: str) -> Iterator[None]:
    """Serialise one step (creating the parent run) between all processes and machines that share the
    study: a PostgreSQL advisory lock for an RDB storage on PostgreSQL, a file lock beside a journal file;
    other storages (SQLite, Redis) have no lock and rely on workers starting one after another."""
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = zlib.crc32(f"gdexp.sweep:{name}".encode())
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    elif isinstance(storage, optuna.storages.JournalStorage) and Path(where).is_file():
        import fcntl

        with open(f"{where}.parent-lock", "a") as handle:  # not .lock: Optuna's own journal lock file
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def _parent_run(cfg: DictConfig, study: optuna.Study) -> str:
    """The sweep's MLflow parent run: created with the study, reopened (same id) when it resumes."""

    client = client_for(cfg.tracking.uri)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return str(run_id)
    experiment_id = ensure_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    name = cfg.sweep.name
    tags = {"gdexp.sweep": name, "optuna.study": name, "gdexp.role": "sweep",
            "dataset": cfg.data.name, "optimizer": cfg.optim.name, "gd.variant": cfg.gd.variant}
    run = client.create_run(experiment_id, run_name=f"sweep-{name}", tags=tags)
    log_config(client, run.info.run_id, cfg)
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    return str(run.info.run_id)


def relabel_siblings(cfg: DictConfig, study: optuna.Study) -> None:
    """Label every trial's run among its siblings (`regimes.label_siblings`) and write its `regime` and
    `regime_reason` tags. Siblings are the trials that differ only in the learning rate and the hidden
    size (`regimes.SIBLING_FREE`): the hidden size moves the loss far less than the learning rate does,
    and in the `lr` sweep, where both are sampled, no two runs would otherwise share a group. A pruned
    trial is compared as the pruner compared it, by its intermediate values; an interrupted or failed
    trial's run is labelled `none`; a trial still running is left alone."""
    from mlflow.entities import RunTag

    client = client_for(cfg.tracking.uri)
    labels: dict[str, tuple[str, str]] = {}
    groups: dict[tuple[Any, ...], list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id is None or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            key = tuple(sorted((k, str(v)) for k, v in t.params.items() if k not in regimes.SIBLING_FREE))
            groups.setdefault(key, []).append(t)
        else:
            tags = unlabelled(_why_not_labelled(t))
            labels[run_id] = (tags["regime"], tags["regime_reason"])
    for trials in groups.values():
        members = [_sibling(cfg, t) for t in trials]
        placed = regimes.label_siblings(members, cfg.regimes.sibling_tolerance,
                                        minimize=cfg.sweep.direction == "minimize", metric=cfg.sweep.metric)
        labels.update((t.user_attrs["mlflow_run_id"], label) for t, label in zip(trials, placed, strict=True))
    for run_id, (regime, reason) in labels.items():
        client.log_batch(run_id, tags=[RunTag("regime", regime), RunTag("regime_reason", reason)])


def _sibling(cfg: DictConfig, t: FrozenTrial) -> regimes.Sibling:
    """A finished or pruned trial as `regimes.label_siblings` reads it."""
    a = t.user_attrs
    if "regime" in a:
        own = (str(a["regime"]), str(a.get("regime_reason", "")))
    else:  # a trial of an older gdexp: its run's tag, as the tracker wrote it
        tags = client_for(cfg.tracking.uri).get_run(a["mlflow_run_id"]).data.tags
        own = (tags.get("regime", ""), tags.get("regime_reason", ""))
    pruned = t.state == TrialState.PRUNED and bool(t.intermediate_values)
    return regimes.Sibling(
        float(a.get("lr", math.nan)), float(a.get("final_val_loss", math.nan)), *own,
        hidden=float(a.get("hidden_size", t.params.get("model.hidden_size", cfg.model.hidden_size))),
        name=f"trial {t.number}", pruned_at=max(t.intermediate_values) if pruned else None,
        values=t.intermediate_values)


def _why_not_labelled(t: FrozenTrial) -> str:
    if t.user_attrs.get("interrupted"):
        return "interrupted"
    error = t.user_attrs.get("error")
    return f"training failed ({error})" if error else "its worker stopped"


def _finish_parent(cfg: DictConfig, study: optuna.Study, run_id: str, status: str) -> None:
    """Counts, best value and params, and the study's plots on the parent run; then end it."""
    from mlflow.entities import Metric, RunTag

    client = client_for(cfg.tracking.uri)
    try:
        trials = study.get_trials(deepcopy=False)
        counts = tally(trials)
        now = int(time.time() * 1000)
        metrics = [Metric(f"n_{k}", float(counts[k]), now, 0) for k in ("complete", "pruned", "failed", "diverged")]
        tags = []
        best = _best(study)
        if best is not None:
            metrics.append(Metric("best_value", float(best.value), now, 0))  # type: ignore[arg-type]
            tags += [RunTag("best_trial", str(best.number))]
            tags += [RunTag(f"best.{k}", str(v)) for k, v in best.params.items()]
        client.log_batch(run_id, metrics=metrics, tags=tags)
        relabel_siblings(cfg, study)  # also when interrupted: the report reads the labels of what finished
        if status == "FINISHED":
            with tempfile.TemporaryDirectory(prefix="gdexp-sweep-") as tmp:
                _plots(cfg, study, Path(tmp))
                client.log_artifacts(run_id, tmp)
    finally:
        client.set_terminated(run_id, status)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _plots(cfg: DictConfig, study: optuna.Study, folder: Path) -> None:
    """optimization_history.png, param_importances.png, and the metric over learning rate x hidden size."""
    metric = cfg.sweep.metric
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return
    numbers = [t.number for t in done]
    values = np.array([t.value for t in done], dtype=float)
    best = np.minimum.accumulate(values) if cfg.sweep.direction == "minimize" else np.maximum.accumulate(values)
    fig, ax = plots.axes()
    ax.scatter(numbers, values, s=14, label=metric)
    ax.plot(numbers, best, color="C1", label="best so far")
    if plots.positive(values):
        plots.log_y(ax)
    ax.set(xlabel="trial", ylabel=metric, title=f"{cfg.sweep.name}: optimization history")
    ax.legend()
    plots.save(fig, folder / "optimization_history.png")

    importances = param_importances(study) if len(done) >= 3 else {}
    if importances:  # margins in inches: the parameter names at the left, the axis label below the bars
        height, names = 1.7 + 0.45 * len(importances), 0.35 + 0.085 * max(len(k) for k in importances)
        fig, ax = plots.axes(6.5, height, left=names / 6.5, bottom=0.65 / height, top=1 - 0.4 / height)
        ax.barh(list(importances)[::-1], list(importances.values())[::-1])
        ax.set(xlabel="importance (PED-ANOVA)", title=f"{cfg.sweep.name}: parameter importances")
        plots.save(fig, folder / "param_importances.png")

    lrs = np.array([t.params.get("optim.lr", t.user_attrs.get("lr", np.nan)) for t in done], dtype=float)
    hidden = np.array([t.params.get("model.hidden_size", cfg.model.hidden_size) for t in done], dtype=float)
    fig, ax = plots.axes(left=0.14)
    points = ax.scatter(lrs, values, c=np.log2(hidden), cmap="viridis", s=22)
    fig.colorbar(points, label="log2 hidden size")
    ax.set_xscale("log")
    if plots.positive(values):
        plots.log_y(ax)
    ax.set(xlabel="learning rate", ylabel=metric, title=f"{cfg.sweep.name}: {metric} over lr and hidden size")
    plots.save(fig, folder / f"{metric}_vs_lr_hidden.png")


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's PED-ANOVA importances of the searched parameters ({} when they cannot be computed).

    PED-ANOVA is computed from the trials alone, in milliseconds. Importing `optuna.importance` also
    imports scikit-learn for the fANOVA evaluator, which gdexp does not use: 1.0 s, serial, at the end of
    every sweep; while scikit-learn is not loaded yet, that import is skipped (fANOVA then is unavailable,
    which Optuna allows).
    """
    skip = "sklearn" not in sys.modules and "sklearn.ensemble" not in sys.modules
    if skip:
        sys.modules["sklearn.ensemble"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import optuna.importance
    finally:
        if skip:
            del sys.modules["sklearn.ensemble"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental in Optuna 4
        try:
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):
            return {}


def summary_table(cfg: DictConfig, study: optuna.Study, where: str) -> str:
    """The console's closing table: best trial, top five, counts by state, where things live."""
    from tabulate import tabulate

    trials = study.get_trials(deepcopy=False)
    counts = tally(trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1.0 if cfg.sweep.direction == "minimize" else -1.0
    done.sort(key=lambda t: sign * float(t.value or 0.0))
    rows = [[t.number, f"{t.value:.4g}", "yes" if t.user_attrs.get("diverged") else "",
             *(f"{v:.3g}" if isinstance(v, float) else v for v in t.params.values())] for t in done[:5]]
    keys = list(study.best_trial.params) if done else []
    lines = [f"Study {cfg.sweep.name!r}: {counts['done']} of {cfg.sweep.n_trials} trials "
             f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed, "
             f"{counts['diverged']} diverged; {counts['not counted']} interrupted or lost, not counted)"]
    if done:
        lines += [f"Best: trial {done[0].number}, {cfg.sweep.metric} = {done[0].value:.4g}", "",
                  tabulate(rows, headers=["trial", cfg.sweep.metric, "diverged", *keys], tablefmt="simple"), ""]
    lines += [f"Study storage: {where}",
              f"MLflow: experiment {cfg.tracking.experiment!r} in {mask_secrets(cfg.tracking.uri)}",
              f"Open the UI: {ui_command(cfg.tracking.uri)}"]
    return "\n".join(lines)


def run(cfg: DictConfig, overrides: Sequence[str]) -> float | None:
    """Run (or resume, or join) the study `cfg.sweep` describes; return the best value."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = validate_sweep(cfg)  # before any worker is forked
    deadline = time.time() + cfg.sweep.timeout if cfg.sweep.timeout else None
    workers = _Workers(cfg, overrides, space, deadline) if cfg.sweep.n_workers > 1 else None
    status = "KILLED"
    sweep: Sweep | None = None
    bar: Any = None
    try:
        sweep = Sweep(cfg, overrides, lock=workers.lock if workers else None, space=space)
        study, n = sweep.study, cfg.sweep.n_trials
        counts = tally(study.get_trials(deepcopy=False))
        if counts["done"] >= n:
            status = "FINISHED"  # nothing to run: no parent run is reopened, the workers are told to end
            if workers:
                workers.start(None)
            with stopping.shielded():  # by this gdexp's rule, also for a study an older one labelled
                relabel_siblings(cfg, study)
            print(summary_table(cfg, study, sweep.where))
            return _best_value(study)
        with stopping.shielded(), _exclusive(sweep.storage, sweep.where, cfg.sweep.name):
            sweep.parent_run_id = _parent_run(cfg, study)
        if workers:
            workers.start(sweep.parent_run_id)
        bar = tqdm(total=n, initial=counts["done"], desc=f"sweep {cfg.sweep.name}", unit="trial")

        def refresh(*_: Any) -> None:
            trials = study.get_trials(deepcopy=False)
            bar.n = min(n, tally(trials).get("done", 0))
            best = _best(study)
            if best is not None:
                bar.set_postfix_str(f"best {cfg.sweep.metric}={best.value:.4g} (trial {best.number})", refresh=False)
            bar.refresh()

        with threadpool_limits(workers.threads if workers else None):
            sweep.work(deadline, on_trial=refresh)
        if workers:
            workers.stop(interrupt=False)
        refresh()
        status = "FINISHED"
    finally:
        if workers:
            workers.stop(interrupt=status == "KILLED")
        if bar is not None:
            bar.close()
        if sweep is not None and sweep.parent_run_id is not None:
            with stopping.shielded():  # a second Ctrl-C waits until the parent run is ended
                sweep.reap_stale()
                _finish_parent(cfg, sweep.study, sweep.parent_run_id, status)
    print(summary_table(cfg, sweep.study, sweep.where))
    return _best_value(sweep.study)


def _best_value(study: optuna.Study) -> float | None:
    best = _best(study)
    return None if best is None else float(best.value)  # type: ignore[arg-type]
