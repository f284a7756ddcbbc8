"""Scale-out against real servers on this machine: PostgreSQL at 127.0.0.1:5432 (each test makes and
drops its own databases) and an MLflow tracking server started here on a free 127.0.0.1 port."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gdexp.config import database_url
from gdexp.serving import free_port, stop_group, wait_until_up
from tests.conftest import child_env, counted, descendants, gdexp, still_running

pytestmark = pytest.mark.slow

PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def database() -> Iterator[Callable[[], str]]:
    """make() -> the URL of a new, empty PostgreSQL database; all are dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer at 127.0.0.1:5432 (.ci/run starts it): {exc}")
    made: list[str] = []

    def make() -> str:
        name = f"gdexp_test_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{PG}/{name}"

    yield make
    for name in made:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


class Server:
    """`python -m gdexp.server` on PostgreSQL, on a free port; stop() and start() again on the same port."""

    def __init__(self, backend: str, artifacts: Path) -> None:
        self.backend, self.artifacts, self.port = backend, artifacts, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gdexp.server", "--backend-store-uri", self.backend, "--port", str(self.port),
             "--workers", "1", "--artifacts-destination", self.artifacts.as_uri()],
            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_until_up(self.url, timeout=120)

    def stop(self) -> None:
        """SIGTERM, as `kill` would send: gdexp.server stops its MLflow server's process group, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            server = descendants(self.proc.pid)
            stop_group(self.proc, grace=30)
            assert not still_running(server), "SIGTERM to gdexp.server stops every process of its server"


@pytest.fixture(scope="module")
def server(database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (its PostgreSQL schema takes ~10 s to make); tests use own experiments."""
    s = Server(database(), tmp_path_factory.mktemp("server-artifacts"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return request.node.name[:60]


def client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def runs_of(url: str, experiment: str) -> list:
    c = client(url)
    found = c.get_experiment_by_name(experiment)
    return c.search_runs([found.experiment_id], max_results=1000) if found else []


def load(storage: str, name: str = "lr") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=database_url(storage))


def sweep_cmd(storage: str, url: str, experiment: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.storage={storage}", f"tracking.uri={url}",
            f"tracking.experiment={experiment}", *extra]


def test_two_workers_on_postgresql_and_the_server(project: Path, database: Callable[[], str], server: Server,
                                                  experiment: str) -> None:
    storage = database()
    result = gdexp("+sweep=lr", f"sweep.storage={storage}", f"tracking.uri={server.url}", "sweep.n_trials=6",
                   f"tracking.experiment={experiment}",
                   "sweep.n_workers=2", "gd=stochastic", "train.epochs=2", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "View run" not in result.stdout and "View experiment" not in result.stdout, \
        "MLflow's per-run address lines are silenced: the summary gives the one address"
    assert f"MLflow: experiment {experiment!r} in {server.url}" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("sweep lr: ")]
    assert lines and lines[-1].startswith("sweep lr: 6/6 trials"), "not a terminal: one plain line per trial"
    done = [t for t in load(storage).get_trials() if counted(t)]
    assert len(done) == 6 and len({t.number for t in done}) == 6
    # both ran trials: stochastic trials (about 0.3 s of training each), as in test_sweep's two-worker test, so that
    # the first trials outlast the forked worker's start on a busy machine (mini-batch ones did not, once, with a
    # CPU hog on one core: the command ran all 6 before its worker had opened its storage)
    assert len({t.user_attrs["worker"] for t in done}) == 2
    runs = runs_of(server.url, experiment)
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert {t.user_attrs["mlflow_run_id"] for t in done} <= {k.info.run_id for k in kids}
    assert all(r.info.status == "FINISHED" for r in runs)
    artifacts = {a.path for a in client(server.url).list_artifacts(kids[0].info.run_id)}
    assert {"config.yaml", "weights.npz"} <= artifacts, "uploaded through the server"


def test_sigkill_one_of_three_workers(project: Path, database: Callable[[], str], server: Server,
                                      experiment: str) -> None:
    storage = database()
    # trials of ~2 s: the victim's must still run when the SIGKILL lands, after the other two have started
    # (with 3 epochs, ~0.3 s, it had finished first under a CPU hog)
    args = sweep_cmd(storage, server.url, experiment, "sweep.n_trials=6", "sweep.heartbeat_s=1", "gd=stochastic",
                     "train.epochs=30", "sweep.pruner=none", "tracking.flush_every_s=0")
    env = child_env()
    first = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim: optuna.trial.FrozenTrial | None = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            running = load(storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
        mine = [t for t in running if str(t.user_attrs.get("worker", "")).endswith(f":{first.pid}")
                and "mlflow_run_id" in t.user_attrs]
        victim = mine[0] if mine else None
    assert victim is not None, "the first worker never started a trial"
    others = [subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for _ in range(2)]
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    for p in others:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode() if p.stderr else ""
    trials = load(storage).get_trials()
    done = [t for t in trials if counted(t)]
    assert len(done) == 6 and len({t.number for t in done}) == 6
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    retried = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    runs = {r.info.run_id: r for r in runs_of(server.url, experiment)}
    assert all(r.info.status != "RUNNING" for r in runs.values())
    victim_run = killed.user_attrs.get("mlflow_run_id")  # made at the run's end or first flush: maybe none
    assert victim_run is None or runs[victim_run].info.status == "FAILED"


def test_server_outage_mid_sweep_loses_nothing(project: Path, database: Callable[[], str], server: Server,
                                               experiment: str) -> None:
    storage = database()
    args = sweep_cmd(storage, server.url, experiment, "sweep.n_trials=4", "train.epochs=6", "sweep.pruner=none",
                     "tracking.flush_every_s=0")
    env = child_env()
    proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            if load(storage).get_trials(states=(TrialState.COMPLETE,)):
                break
        except KeyError:
            continue
    server.stop()
    time.sleep(4)
    assert proc.poll() is None, "the sweep goes on while the server is away"
    server.start()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    kids = [r for r in runs_of(server.url, experiment) if "mlflow.parentRunId" in r.data.tags]
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    c = client(server.url)
    for r in kids:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "val_loss")] == list(range(1, 7))
        assert "test_accuracy" in r.data.metrics


def test_an_absent_server_gives_a_clear_error(project: Path) -> None:
    port = free_port()
    result = gdexp("train.epochs=1", f"tracking.uri=http://127.0.0.1:{port}", cwd=project,
                   env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, "refused before any run: a config error"
    (line,) = result.stderr.strip().splitlines()
    assert f"tracking.uri=http://127.0.0.1:{port} cannot be used: nothing answers there (Connection refused)" in line


@pytest.mark.parametrize("multirun", [(), ("-m", "gdexp", "-m")])
def test_passwords_never_reach_mlflow_or_the_console(project: Path, database: Callable[[], str],
                                                     multirun: tuple[str, ...]) -> None:
    """Nor Hydra's files: with `-m`, its launcher's line of each job's overrides and the `multirun.yaml` it saves
    (once both held the password)."""
    import psycopg

    storage = database()
    name = storage.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gdexp_secret') THEN "
                      "CREATE ROLE gdexp_secret LOGIN PASSWORD 's3cr3t-pw'; END IF; END $$")
        admin.execute(f'GRANT ALL ON DATABASE "{name}" TO gdexp_secret')
        admin.execute(f'ALTER DATABASE "{name}" OWNER TO gdexp_secret')
    secret = f"postgresql://gdexp_secret:s3cr3t-pw@127.0.0.1:5432/{name}"
    result = gdexp(*multirun, "+sweep=lr", f"sweep.storage={secret}", "sweep.n_trials=2", "train.epochs=1",
                   cwd=project)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr and "gdexp_secret:***@" in result.stdout
    saved = list((project / "sweeps").rglob("*.yaml"))
    assert len(saved) == bool(multirun) and not [f for f in saved if "s3cr3t-pw" in f.read_text()]
    assert result.stderr.count("gdexp: warning: sweep.storage holds a password on the command line") == 1, \
        "warned once"
    from tests.conftest import all_runs, store

    for run in all_runs(project):
        text = repr(run.data.params) + repr(run.data.tags)
        assert "s3cr3t-pw" not in text
        config = store(project).download_artifacts(run.info.run_id, "config.yaml", str(project)) \
            if "mlflow.parentRunId" in run.data.tags else None
        assert config is None or "s3cr3t-pw" not in Path(config).read_text()
    parent = next(r for r in all_runs(project) if r.data.tags.get("gdexp.role") == "sweep")
    assert parent.data.params["sweep.storage"].endswith(f"gdexp_secret:***@127.0.0.1:5432/{name}")


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgresql", "redis"])
def test_four_workers_started_together_make_one_study_and_one_parent_run(project: Path, database, kind: str) -> None:
    """Four commands joining one fresh study at the same moment, on every supported storage: no crash while
    the storage is created (PostgreSQL's tables), exactly one parent run, the exact total."""
    import redis

    storage = {"journal": None, "sqlite": f"sqlite:///{project / 'study.db'}", "postgresql": None,
               "redis": "redis://127.0.0.1:6379/15"}[kind]
    if kind == "postgresql":
        storage = database()
    if kind == "redis":
        redis.Redis.from_url(storage).flushdb()
    extra = [f"sweep.storage={storage}"] if storage else []
    args = [sys.executable, "-m", "gdexp", "+sweep=lr", "sweep.n_trials=4", "train.epochs=1", *extra]
    procs = [subprocess.Popen(args, cwd=project, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    try:
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        from tests.conftest import all_runs

        runs = all_runs(project)
        assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1
        from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

        backend = {"journal": lambda: JournalFileBackend(str(project / "sweeps" / "lr" / "study.journal")),
                   "redis": lambda: JournalRedisBackend(str(storage))}
        study = optuna.load_study(study_name="lr", storage=optuna.storages.JournalStorage(backend[kind]())
                                  if kind in backend else database_url(str(storage)))
        assert len([t for t in study.get_trials() if counted(t)]) >= 4
        assert all(r.info.status != "RUNNING" for r in runs)
    finally:
        if kind == "redis":
            redis.Redis.from_url(storage).flushdb()
