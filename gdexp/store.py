"""The one door to MLflow: opening a store, experiments, runs, chunked and shielded writes, searches.

Every other module asks this one; none holds an `MlflowClient`. That keeps these rules in one place:
- a write is never cut in half: each runs inside `stopping.shielded()`, so a Ctrl-C or SIGTERM that arrives
  during it is raised after it (a SQLite write lock left held would stall every other writer);
- MLflow's per-call limits are respected: at most 1,000 items per write, of which 100 params and 100 tags;
- a store found unreachable (MLflow's own retries spent) is not asked again by this process: every later call
  raises that error at once, so a command that cannot record stops in seconds, not after minutes of retries;
- a relative SQLite store (`sqlite:///mlruns/mlflow.db`) means the folder the command started in, and its
  artifacts live beside it (`mlruns/artifacts/<experiment>`).
It imports no training code, so `gdexp.ui`, `gdexp.server` and `gdexp.report` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from gdexp import compat, stopping

__all__ = [
    "DEFAULT_URI",
    "EXPERIMENT_KIND",
    "Point",
    "ask_again",
    "close",
    "config_params",
    "create_run",
    "default_uri",
    "down",
    "end_run",
    "ensure_experiment",
    "experiment_names",
    "find_experiment",
    "get_run",
    "local_store_missing",
    "log_artifacts",
    "log_batch",
    "log_metrics",
    "log_params",
    "metric",
    "metric_histories",
    "metric_points",
    "preload",
    "read_artifact",
    "reopen_run",
    "search_runs",
    "set_experiment_tag",
    "set_tags",
    "set_tags_unless_deleted",
    "sqlite_path",
    "unreachable",
]

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"  # tracking.uri's default (conf/tracking/mlflow.yaml)

MAX_ITEMS_PER_CALL = 1000  # MLflow's limit for one log_batch (metrics, params and tags together)
MAX_PARAMS_PER_CALL = 100  # of which params, and tags, each at most this many
PAGE = 1000  # runs per search request
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens such an experiment on its runs


def default_uri() -> str:
    """The store a command reads or writes unless told: MLflow's own `MLFLOW_TRACKING_URI` when set, as every
    MLflow tool does (and `tracking.uri` of a run or sweep), else `DEFAULT_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` store (relative to the working folder unless it starts with `////`)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def local_store_missing(uri: str) -> bool:
    """Is `uri` a SQLite store whose file does not exist yet (nothing has been tracked there)?"""
    path = sqlite_path(uri)
    return path is not None and not path.exists()


def _client(uri: str) -> Any:
    """The MlflowClient for a tracking URI, one per store and process. A relative SQLite path is made absolute
    first: MLflow caches its store by URI, and a cached relative one would follow the process into another
    working folder."""
    path = sqlite_path(uri)
    if path is not None:
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # MLflow would run all its migrations: seconds; the kept schema takes milliseconds
            compat.create_sqlite_store(path)
    return _cached_client(_absolute(uri))


def _absolute(uri: str) -> str:
    path = sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path is not None and not path.is_absolute() else uri


def preload(uri: str) -> None:
    """Import what opening the store at `uri` imports, and open nothing: processes forked after this inherit the
    imports and only open their own connection. A SQL store's modules (MLflow's ORM, SQLAlchemy's dialect and the
    driver) are 0.6 s of import that each forked worker would otherwise repeat in its first trial."""
    import mlflow.tracking

    from gdexp.config import DATABASES, scheme

    if scheme(uri) in ("http", "https"):
        import mlflow.store.tracking.rest_store
    elif scheme(uri) in DATABASES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        with contextlib.suppress(ImportError, ArgumentError):  # no such driver: opening the store says so, and
            make_url(_absolute(uri)).get_dialect().import_dbapi()  # is where that is handled


@functools.cache
def _cached_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    # MLflow prints "View run ... / View experiment ..." at every run's end on a tracking server: two lines
    # per trial under a sweep's progress bar, with any password of the URL. gdexp's summary gives the address.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A download draws a progress bar per file on stderr: a report reading twenty trajectories would print twenty.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # An asynchronous write that fails is logged by MLflow's queue, one line per batch, and raised again when the
    # run's writes are waited for (`log_metrics`' operations): gdexp says it once, there.
    compat.quiet_loggers()
    return _Guarded(uri, MlflowClient(tracking_uri=uri))


_down: dict[str, BaseException] = {}  # tracking URI -> the error that found it unreachable


def down(uri: str) -> bool:
    """Has a call of this process found the store at `uri` unreachable?"""
    return _absolute(uri) in _down


def ask_again() -> None:
    """Forget the stores found unreachable: a process that outlives a command (a Ray worker) asks anew."""
    _down.clear()


def unreachable(exc: BaseException) -> bool:
    """Is `exc` the tracking store being out of reach (or the error that found it so), rather than a bad request
    (`compat.mlflow_unreachable`)?"""
    return any(exc is seen for seen in _down.values()) or compat.mlflow_unreachable(exc)


class _Guarded:
    """An MlflowClient that, once a call found its store unreachable, raises that error for every later call."""

    def __init__(self, uri: str, client: Any) -> None:
        self._uri, self._client = uri, client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return _guarded(self._uri, attr) if callable(attr) else attr


def _guarded(uri: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, raising at once when the store at (absolute) `uri` was found unreachable, and marking it so when
    `call` finds it."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        if uri in _down:
            raise _down[uri]
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:  # every failure of MLflow's client, the store out of reach among them
            if unreachable(exc):
                _down[uri] = exc
            raise

    return guarded


class Point(NamedTuple):
    """One metric point as gdexp holds it until it is written: MLflow's own `Metric` is made by the write, so that
    a run buffering its first epochs has not imported MLflow yet (2 s of a command's start: a single run's first
    epoch comes that much sooner, and MLflow is imported at the run's first write)."""

    key: str
    value: float
    step: int
    timestamp: int


def metric(key: str, value: float, step: int, timestamp: int) -> Point:
    """One metric point, as `log_batch` and `log_metrics` take it."""
    return Point(key, float(value), int(step), int(timestamp))


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite store (`mlruns/artifacts/<experiment>`); a server decides for itself. The folder's name is
    the experiment's with every character but letters, digits, `.`, `_` and `-` replaced: a name such as `../x`
    or `/tmp/x` stays a folder inside `mlruns/artifacts/`."""
    path = sqlite_path(uri)
    if path is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", experiment).strip(".") or "_"
    return (path.resolve().parent / "artifacts" / folder).as_uri()


def find_experiment(uri: str, name: str) -> str | None:
    """The id of experiment `name`, or None."""
    found = _client(uri).get_experiment_by_name(name)
    return None if found is None else str(found.experiment_id)


def experiment_names(uri: str) -> list[str]:
    return [e.name for e in _client(uri).search_experiments()]


def set_experiment_tag(uri: str, experiment_id: str, key: str, value: str) -> None:
    """Set (or replace) an experiment's tag. MLflow's database store sets one by a read, then an insert, with no
    retry: two processes setting the same new tag at once (the commands of one sweep ending together, each saving
    the UI's comparison view) had the later fail on the key's uniqueness, seen on PostgreSQL under a CPU hog.
    The tag is there then, and the write is made once more, as an update."""
    from mlflow.exceptions import MlflowException

    with stopping.shielded():
        try:
            _client(uri).set_experiment_tag(experiment_id, key, value)
        except MlflowException as exc:
            if not compat.duplicate_key(exc):
                raise
            _client(uri).set_experiment_tag(experiment_id, key, value)


_experiments: dict[tuple[str, str], str] = {}  # (absolute URI, name) -> id, found or made by this process


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name`, created if needed (safe when several workers race to create it), and
    marked as model training (`EXPERIMENT_KIND`): MLflow 3's UI opens an experiment by its kind, GenAI
    (traces, an assistant) or model training (the runs table), and gdexp trains models. Asked of the store
    once per process: every trial of a sweep records into the same experiment."""
    from mlflow.exceptions import MlflowException

    key = (_absolute(uri), name)
    if key in _experiments:
        return _experiments[key]
    found = find_experiment(uri, name)
    if found is not None:
        if _client(uri).get_experiment(found).tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            set_experiment_tag(uri, found, *EXPERIMENT_KIND)  # made by an older gdexp: marked when used again
    else:
        with stopping.shielded():
            try:
                found = str(_client(uri).create_experiment(name, artifact_location=_artifact_location(uri, name),
                                                           tags=dict([EXPERIMENT_KIND])))
            except MlflowException:
                found = find_experiment(uri, name)
                if found is None:
                    raise
    _experiments[key] = found
    return found


# ------------------------------------------------------------------------------------------ runs
_artifact_uris: dict[str, str] = {}  # run id -> its artifact URI as its creation returned it, until first used


@functools.cache
def _source_tags() -> dict[str, str]:
    """The tags MLflow's own `start_run` gives every run (`mlflow.tracking.context`'s default context): who ran
    it, from which entry point, run locally. The UI's User column and `tags.mlflow.user` filters read them;
    MLflow's context registry would also probe for git and notebooks, 0.2 s a process."""
    from mlflow.entities import SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's user with no name: MLflow's own fallback
        user = "unknown"
    return {MLFLOW_USER: user, MLFLOW_SOURCE_NAME: os.path.abspath(sys.argv[0]),
            MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL)}


def create_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str], start_ms: int | None = None) -> str:
    """A new run, with MLflow's standard tags (`_source_tags`) under `tags`; MLflow reads its user from them."""
    with stopping.shielded():
        info = _client(uri).create_run(experiment_id, start_time=start_ms, run_name=name,
                                       tags={**_source_tags(), **tags}).info
    _artifact_uris[info.run_id] = info.artifact_uri
    return str(info.run_id)


def reopen_run(uri: str, run_id: str) -> None:
    """A finished run RUNNING again (a resumed sweep's parent)."""
    with stopping.shielded():
        _client(uri).update_run(run_id, status="RUNNING")


def end_run(uri: str, run_id: str, status: str) -> None:
    """FINISHED, FAILED or KILLED."""
    with stopping.shielded():
        _client(uri).set_terminated(run_id, status)


def get_run(uri: str, run_id: str) -> Any:
    return _client(uri).get_run(run_id)


def log_batch(uri: str, run_id: str, *, metrics: Sequence[Point] = (), params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None, synchronous: bool = True) -> list[Any]:
    """Metric points (`metric(...)`), params (as strings, at most 6,000 characters each) and tags in as few
    writes as MLflow's per-call limits allow (1,000 items, of which at most 100 params and 100 tags): a short run
    is one write. The tags go last, as MLflow writes them last within a call: a run's end tags (`optuna.state`,
    `regime`) are never in the store before the metrics they were written with, wherever a write is cut.
    Asynchronous writes return the operations to wait on."""
    from mlflow.entities import Metric, Param, RunTag

    queue: deque[tuple[str, Any]] = deque([("param", Param(k, str(v)[:6000])) for k, v in (params or {}).items()])
    queue += [("metric", Metric(m.key, m.value, m.timestamp, m.step)) for m in metrics]
    queue += [("tag", RunTag(k, str(v))) for k, v in (tags or {}).items()]
    pending = []
    while queue:
        batch: dict[str, list[Any]] = {"metric": [], "param": [], "tag": []}
        while queue and sum(map(len, batch.values())) < MAX_ITEMS_PER_CALL:
            kind, item = queue[0]
            if kind != "metric" and len(batch[kind]) >= MAX_PARAMS_PER_CALL:
                break
            batch[kind].append(item)
            queue.popleft()
        with stopping.shielded():
            op = _client(uri).log_batch(run_id, metrics=batch["metric"], params=batch["param"], tags=batch["tag"],
                                        synchronous=synchronous)
        if op is not None:
            pending.append(op)
    return pending


def log_params(uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    log_batch(uri, run_id, params=params)


def log_metrics(uri: str, run_id: str, metrics: Sequence[Point], *, synchronous: bool = True) -> list[Any]:
    return log_batch(uri, run_id, metrics=metrics, synchronous=synchronous)


def config_params(cfg: Any) -> dict[str, Any]:
    """The resolved config as params with dotted keys (`optim.lr`), secrets masked."""
    from gdexp.config import as_dict, flatten, mask_secrets

    return {k: mask_secrets(v) for k, v in flatten(as_dict(cfg)).items()}


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    if tags:
        log_batch(uri, run_id, tags=tags)


def set_tags_unless_deleted(uri: str, run_id: str, tags: Mapping[str, str]) -> bool:
    """`set_tags`, or False when the run is deleted: MLflow refuses every write to a run a user deleted (in the
    UI, `mlflow runs delete`), and what a user threw away is theirs to keep away, not an error of the sweep's."""
    try:
        set_tags(uri, run_id, tags)
    except Exception as exc:
        if unreachable(exc) or get_run(uri, run_id).info.lifecycle_stage != "deleted":
            raise
        return False
    return True


def log_artifacts(uri: str, run_id: str, folder: Path, artifact_path: str | None = None, *,
                  replace: bool = False) -> list[str]:
    """Every file in `folder`, under `artifact_path` of the run, through the artifact repository MLflow's client
    would use. Its location is the one the run's creation returned, when this process made the run: the client
    would first read the whole run back (params, metrics and tags with it) only to learn it, about 4 ms of a
    sweep trial's 30-40 ms of MLflow writes. `replace`: `artifact_path` then holds these files only (a report of
    fewer formats left the older ones beside them, of another set of runs); the others are deleted after the upload,
    so that a process killed in between leaves old files beside the new ones, never an empty folder. A server
    with users lets only MANAGE delete an artifact, and EDIT write one: what such a user could not delete stays,
    and is returned."""
    import posixpath

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from requests import HTTPError

    absolute = _absolute(uri)
    location = _artifact_uris.pop(run_id, None) or get_run(uri, run_id).info.artifact_uri  # kept once: bounded
    with stopping.shielded():
        repository = _guarded(absolute, get_artifact_repository)(location, tracking_uri=absolute)
        _guarded(absolute, repository.log_artifacts)(str(folder), artifact_path)
        kept: list[str] = []
        if replace and artifact_path:
            fresh = {posixpath.join(artifact_path, p.name) for p in folder.iterdir()}
            for stale in _guarded(absolute, repository.list_artifacts)(artifact_path):
                if stale.path not in fresh:
                    try:
                        _guarded(absolute, repository.delete_artifacts)(stale.path)
                    except HTTPError as exc:  # the artifact proxy's answer (MLflow raises requests' own)
                        if exc.response is None or exc.response.status_code != 403:
                            raise
                        kept.append(stale.path)
    return kept


# --------------------------------------------------------------------------------------- reading
def search_runs(uri: str, experiment_id: str, query: str, order: Sequence[str] = ()) -> list[Any]:
    """Every run of the experiment that matches the MLflow filter `query`, page by page."""
    client, runs, token = _client(uri), [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=PAGE, order_by=list(order), page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def sweep_names(uri: str, experiment_id: str) -> list[str]:
    """The sweeps the experiment holds: the `gdexp.sweep` tags of its parent runs, sorted."""
    runs = search_runs(uri, experiment_id, "tags.`gdexp.role` = 'sweep'")
    return sorted({r.data.tags.get("gdexp.sweep", "") for r in runs} - {""})


def close() -> None:
    """End of a command: close its connections to database stores, so that a SQLite store's `mlflow.db` alone
    holds every run (a copy or a backup of the file is whole; `compat.close_sql_stores`)."""
    compat.close_sql_stores()


def _bulk_reader(uri: str) -> Any:
    """MLflow's database store when it can read many runs' histories in one query, else None
    (`compat.metric_history_bulk`); without it the per-run path below gives the same answer."""
    return compat.metric_history_bulk(_client(uri)._client)


def metric_points(uri: str, run_ids: Iterable[str], key: str, threads: int = 8) -> dict[str, list[tuple[int, float]]]:
    """Each run's (step, value) points of metric `key`, in step order. A database store answers for 500 runs
    per query; a tracking server is asked run by run, `threads` requests at a time."""
    ids = list(run_ids)
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in ids}
    bulk = _bulk_reader(uri)
    if bulk is not None:
        for i in range(0, len(ids), 500):
            for point in bulk.get_metric_history_bulk(ids[i : i + 500], key, max_results=10**9):
                found[point.run_id].append((point.step, point.value))
    else:
        client = _client(uri)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            answers = pool.map(lambda run_id: client.get_metric_history(run_id, key), ids)
            for run_id, points in zip(ids, answers, strict=True):
                found[run_id] = [(m.step, m.value) for m in points]
    return {run_id: sorted(points) for run_id, points in found.items()}


def read_artifact(uri: str, run_id: str, path: str, keys: Sequence[str]) -> dict[str, Any] | None:
    """The arrays `keys` of the run's .npz artifact `path` (no pickle), or None when the run has no such file.
    Only those arrays are read: a trajectory's `origin` and `axes` are as long as the network is wide."""
    import tempfile

    import numpy as np

    client = _client(uri)
    folder, _, name = path.rpartition("/")
    if name not in {Path(f.path).name for f in client.list_artifacts(run_id, folder or None)}:
        return None
    with tempfile.TemporaryDirectory(prefix="gdexp-artifact-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        with np.load(local, allow_pickle=False) as saved:
            return {key: saved[key] for key in keys if key in saved.files}


def metric_histories(uri: str, run_ids: Iterable[str], key: str, threads: int = 8) -> dict[str, list[float]]:
    """Each run's values of metric `key`, in step order (`metric_points` without the steps)."""
    return {run_id: [v for _, v in points] for run_id, points in metric_points(uri, run_ids, key, threads).items()}
