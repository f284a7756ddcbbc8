"""`sweep.launcher=ray` on a real Ray cluster of two nodes on this machine (tests/raycluster.py): a head and
a second node, one CPU each, in a loopback-only network namespace, with an MLflow server started in it (and,
for one test, a tracking server with users, `gdexp.server --auth`, whose credentials the nodes do not have).

Each test reads what the sweep left with Optuna and MLflow's own clients: the study's trials and their
states, the runs' status and tags. The cluster's processes are gone when the module ends.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from gdexp.config import database_url
from gdexp.serving import command, free_port, stop_group
from gdexp.sweep._record import TrialRecord
from tests.conftest import all_runs, child_env, counted, default_sigint, mlflow_client
from tests.raycluster import RayCluster

pytestmark = pytest.mark.slow

# PostgreSQL by its Unix socket: the cluster's network namespace has no route to 127.0.0.1:5432 outside it
PG_SOCKET = "postgresql://postgres@/test?host=/var/run/postgresql"
PASSWORDS = {who: f"{who}-pw-{secrets.token_hex(8)}" for who in ("admin", "student")}


class Cluster:
    """A two-node cluster and an MLflow server (SQLite backend) in its namespace."""

    def __init__(self, folder: Path) -> None:
        self.ray = RayCluster(child_env())
        self.db = folder / "server.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        launch = command(f"sqlite:///{self.db}", port=port, artifacts=str(folder / "artifacts"))
        self.server = subprocess.Popen(self.ray.command(*launch.argv), env=child_env(launch.env),
                                       start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_until_up(self.url)

    def wait_until_up(self, url: str) -> None:
        up = self.ray.command(sys.executable, "-c",
                              f"from gdexp.serving import wait_until_up; wait_until_up({url!r}, timeout=120)")
        subprocess.run(up, env=child_env(), check=True, timeout=120)

    def sweep(self, *args: str, address: str | None = None, url: str | None = None,
              env: Sequence[str] = ()) -> list[str]:
        """`python -m gdexp +sweep=lr` on this cluster (at the head's address unless told) with two workers,
        recorded by its server (or the one at `url`), with `env` (NAME=value) added to its environment."""
        return self.ray.command(*env, sys.executable, "-m", "gdexp", "+sweep=lr", "sweep.launcher=ray",
                                f"sweep.ray.address={address or self.ray.address}", "sweep.n_workers=2",
                                f"tracking.uri={url or self.url}", *args)

    def runs(self, experiment: str) -> list:
        client = mlflow_client(f"sqlite:///{self.db}")
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id], max_results=1000) if found else []

    def close(self) -> None:
        stop_group(self.server)  # type: ignore[arg-type]
        self.ray.close()
        assert not self.ray.leftovers(), "the cluster leaves no process behind"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("ray-cluster"))
    yield c
    c.close()


@pytest.fixture
def experiment() -> str:
    return f"ray-{uuid.uuid4().hex[:8]}"


def study(storage: str, name: str) -> optuna.Study:
    """The study as Optuna reads it: a journal file's path, or a PostgreSQL URL."""
    if storage.startswith("postgresql"):
        return optuna.load_study(study_name=name, storage=database_url(storage))
    if not Path(storage).exists():
        raise KeyError(name)
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(storage)))


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout)


def assert_exact(c: Cluster, s: optuna.Study, experiment: str, n: int) -> list:
    """n counted trials, one parent run, no RUNNING run; the trial runs (children) returned."""
    assert len([t for t in s.get_trials() if counted(t)]) == n
    runs = c.runs(experiment)
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1, "one parent run"
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.parametrize(("storage", "client"), [("journal", False), ("postgresql", False), ("journal", True)])
def test_two_workers_on_two_nodes_exact_totals(cluster: Cluster, tmp_path: Path, experiment: str,
                                               storage: str, client: bool) -> None:
    """On a journal and on PostgreSQL, through the head's address or through Ray Client (ray://)."""
    name = f"ray-{storage}-{uuid.uuid4().hex[:6]}"
    url = str(tmp_path / "sweeps" / name / "study.journal") if storage == "journal" else PG_SOCKET
    extra = [f"sweep.storage='{PG_SOCKET}'"] if storage == "postgresql" else []
    try:
        result = run(cluster.sweep(f"sweep.name={name}", f"tracking.experiment={experiment}", "sweep.n_trials=6",
                                   "train.epochs=6", *extra, address=cluster.ray.client if client else None),
                     tmp_path)
        assert result.returncode == 0, result.stderr[-3000:] + (cluster.ray.client_server_logs() if client else "")
        assert "6 of 6 trials" in result.stdout and "Traceback" not in result.stderr
        kids = assert_exact(cluster, study(url, name), experiment, 6)
        assert {r.data.tags["worker"] for r in kids} == {f"ray:{cluster.ray.head}", f"ray:{cluster.ray.node}"}, \
            "both nodes ran trials, and each run says which"
        assert all(r.data.tags["host"] for r in kids)
    finally:
        if storage == "postgresql":
            with contextlib.suppress(KeyError):  # the study was never made: the assertion above says why
                optuna.delete_study(study_name=name, storage=database_url(PG_SOCKET))


def _wait_for(c: Cluster, url: str, name: str, proc: subprocess.Popen[str], ready, timeout: float = 180) -> list:
    """Poll the study until `ready(running trials whose MLflow run exists)` holds (with `tracking.flush_every_s=0`:
    an epoch done); return those trials."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            running = study(url, name).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # not made yet
            continue
        running = [t for t in running if "mlflow_run_id" in t.user_attrs]
        if ready(running):
            return running
    _out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    raise AssertionError(f"the trials never got there: {err[-2000:]}")


# Trials a signal or a kill finds mid-way, all about as long (≈ 0.1 s an epoch here): the hidden size is fixed
# and the learning rate kept where stochastic GD neither diverges nor stalls
LONG = ["gd=stochastic", "train.epochs=30", "~sweep.params.model.hidden_size", "model.hidden_size=64",
        'sweep.params.optim.lr="tag(log, interval(0.003, 0.1))"', "sweep.pruner=none", "sweep.n_trials=3",
        "tracking.flush_every_s=0"]


def test_a_killed_node_loses_nothing(cluster: Cluster, tmp_path: Path, experiment: str) -> None:
    """The second node is SIGKILLed mid-trial: the head finishes the study, exact totals, the lost trial's
    run FAILED and the trial retried with the same parameters. A new second node takes its place after."""
    proc: subprocess.Popen[str] | None = None
    try:
        name = "ray-kill"
        url = str(tmp_path / "sweeps" / name / "study.journal")
        proc = subprocess.Popen(cluster.sweep(f"sweep.name={name}", f"tracking.experiment={experiment}", *LONG),
                                cwd=tmp_path, env=child_env(), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        def on_node(t: optuna.trial.FrozenTrial) -> bool:  # the trial's owner runs on the second node
            owner = TrialRecord.of(t).owner
            return owner is not None and owner.ray_node == cluster.ray.node

        running = _wait_for(cluster, url, name, proc, lambda ts: any(map(on_node, ts)))
        lost = next(t for t in running if on_node(t))
        cluster.ray.kill_node()
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        assert "3 of 3 trials" in out
        s = study(url, name)
        kids = assert_exact(cluster, s, experiment, 3)
        assert s.trials[lost.number].state == TrialState.FAIL and not counted(s.trials[lost.number])
        dead = next(r for r in kids if r.info.run_id == lost.user_attrs["mlflow_run_id"])
        assert dead.info.status == "FAILED" and "is gone" in dead.data.tags["error"], dead.data.tags
        retry = [t for t in s.trials if t.user_attrs.get("retry_of") == lost.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == lost.params
        assert {r.data.tags["worker"] for r in kids if r.info.status == "FINISHED"} >= {f"ray:{cluster.ray.head}"}
    finally:
        if proc is not None and proc.poll() is None:  # a failed assertion: the sweep leaves the shared cluster
            proc.kill()
            proc.communicate(timeout=60)
        if cluster.ray.node is None:  # killed: the tests after this one get a second node again
            cluster.ray.replace_node()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_every_worker_then_the_rerun_completes(cluster: Cluster, tmp_path: Path,
                                                                       experiment: str, signum: int) -> None:
    name = "ray-stop"
    url = str(tmp_path / "sweeps" / name / "study.journal")
    args = cluster.sweep(f"sweep.name={name}", f"tracking.experiment={experiment}", *LONG)
    proc = subprocess.Popen(args, cwd=tmp_path, env=child_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=default_sigint)
    running = _wait_for(cluster, url, name, proc, lambda ts: len(ts) == 2)
    sent = time.time()
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
    for t in running:
        r = mlflow_client(f"sqlite:///{cluster.db}").get_run(t.user_attrs["mlflow_run_id"])
        assert r.info.status == "KILLED", r.info.status
        assert r.info.end_time / 1000 - sent <= 10, "every worker stops within 10 s of the signal"
    assert not [r for r in cluster.runs(experiment) if r.info.status == "RUNNING"]
    rerun = run(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_exact(cluster, study(url, name), experiment, 3)


@pytest.mark.parametrize(("setting", "key"), [
    ("sweep.ray.address=127.0.0.1:1", "sweep.ray.address"),
    ("sweep.ray.cpus_per_worker=0", "sweep.ray.cpus_per_worker"),
    ("sweep.ray.cpus_per_worker=4", "sweep.ray.cpus_per_worker=4 is not allowed: no node of the cluster has that "
                                    "many CPUs (the largest has 1)"),  # 4, not 4.0
    ("tracking.uri=sqlite:///mlruns/mlflow.db", "tracking.uri"),
    ("sweep.storage=sqlite:///sweeps/study.db", "sweep.storage"),
])
def test_bad_ray_settings_fail_in_one_line_before_any_run(cluster: Cluster, tmp_path: Path, experiment: str,
                                                          setting: str, key: str) -> None:
    result = run([*cluster.sweep(f"tracking.experiment={experiment}"), setting], tmp_path, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("gdexp:")]
    assert result.returncode == 2 and len(lines) == 1 and key in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not cluster.runs(experiment) and not (tmp_path / "mlruns" / "mlflow.db").exists()
    assert not (tmp_path / "sweeps" / "lr").exists(), "no study was made"


def test_address_null_starts_a_ray_instance_of_its_own_beside_a_running_cluster(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    """sweep.ray.address=null is "a Ray instance for this command" (conf/sweep_defaults.yaml): it joined the cluster
    already running on the machine (Ray's own None does), and with its two nodes refused the local SQLite store.
    Run where that cluster is the machine's current one (its namespace and folder), it starts its own and runs."""
    ray_dir = Path(cluster.ray.temp_dir) / "ray"
    ray_dir.mkdir(exist_ok=True)
    (ray_dir / "ray_current_cluster").write_text(cluster.ray.address)  # as `ray start` notes it
    args = ["sweep.launcher=ray", "sweep.n_workers=2", "sweep.n_trials=2", "train.epochs=1"]
    result = run(cluster.ray.command(sys.executable, "-m", "gdexp", "+sweep=lr", *args), tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    assert len(all_runs(tmp_path)) == 3, "the parent and two trials, in the local store"


def test_the_tasks_write_as_the_user_who_submitted_the_sweep(cluster: Cluster, tmp_path: Path, experiment: str) -> None:
    """On a tracking server with users (`gdexp.server --auth`), the nodes, started without any MLflow credentials
    as an administrator starts them, run the tasks of a user who submits with theirs: every task got 401 (after
    the submitting command's own check had passed) and the command said to run it again, which never helped."""
    url, db = f"http://127.0.0.1:{free_port()}", tmp_path / "auth.db"
    serve = cluster.ray.command(sys.executable, "-m", "gdexp.server", "--backend-store-uri", f"sqlite:///{db}",
                                "--artifacts-destination", (tmp_path / "artifacts").as_uri(), "--auth",
                                "--port", url.rsplit(":", 1)[1], "--workers", "1")
    admin = child_env({"GDEXP_SERVER_ADMIN_PASSWORD": PASSWORDS["admin"]})
    server = subprocess.Popen(serve, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=admin)
    try:
        cluster.wait_until_up(url)
        add = cluster.ray.command(sys.executable, "-m", "gdexp.server", "user", "add", "student", "--uri", url)
        subprocess.run(add, cwd=tmp_path, check=True, timeout=120, capture_output=True, env=child_env({
            "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORDS["admin"],
            "GDEXP_USER_PASSWORD": PASSWORDS["student"]}))
        student = ["MLFLOW_TRACKING_USERNAME=student", f"MLFLOW_TRACKING_PASSWORD={PASSWORDS['student']}"]
        result = run(cluster.sweep(f"tracking.experiment={experiment}", "sweep.n_trials=2", "train.epochs=1",
                                   url=url, env=student), tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        stop_group(server)  # type: ignore[arg-type]
    client = mlflow_client(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert len(trials) == 2 and all(r.data.tags["worker"].startswith("ray:") for r in trials), "the tasks wrote them"
