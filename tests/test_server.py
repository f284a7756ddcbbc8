"""gdexp.server: refusals before anything starts (bad flags, another machine's reach without --auth, the admin's
password), and a server a team can share, tested for real: MLflow's basic-auth app over HTTPS with a self-signed
certificate the test makes, its runs on PostgreSQL as a role whose password only a password file holds (in a
PostgreSQL of the test's own that asks for it, `tests/postgres.py`), users added with `user add`, an EDIT user's
sweep, and no test password in any file, console line or process command line."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdexp import server
from gdexp.config import database_url
from gdexp.serving import free_port, stop_group
from tests.conftest import (
    UNASSIGNED,
    child_env,
    command_lines,
    counted,
    descendants,
    files_holding,
    self_signed,
    still_running,
)
from tests.postgres import PrivatePostgres

PASSWORDS = {who: f"{who}-pw-{secrets.token_hex(8)}" for who in ("admin", "editor", "reader", "database")}
EXPERIMENT = "shared"
ROLE = "gdexp_runs"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_SERVER_CERT_PATH")

REFUSED = [  # (flags after --backend-store-uri, environment, words of the one line)
    (["--port", "99999"], {}, "99999 is not a port"),
    (["--host", UNASSIGNED], {}, f"'{UNASSIGNED}' is not an address of this machine"),
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 lets other machines in, and without --auth anyone"),
    (["--workers", "0"], {}, "'0' is not allowed: give a whole number >= 1"),
    (["--default-permission", "ALL"], {}, "invalid choice: 'ALL'"),
    (["--tls-cert", "{cert}"], {}, "--tls-cert and --tls-key go together"),
    (["--tls-cert", "{key}", "--tls-key", "{cert}"], {}, "are not a certificate and its unencrypted private key"),
    (["--auth"], {}, "--auth needs the admin's password in the environment variable GDEXP_SERVER_ADMIN_PASSWORD"),
    (["--auth"], {"GDEXP_SERVER_ADMIN_PASSWORD": "password1234"}, "MLflow's old default admin password"),
    (["--auth"], {"GDEXP_SERVER_ADMIN_PASSWORD": "short"}, "Password must be at least 12 characters"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("flags,env,words", REFUSED)
def test_bad_flags_are_one_line_and_leave_nothing(flags: list[str], env: dict[str, str], words: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("GDEXP_SERVER_ADMIN_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = [flag.format(cert=cert, key=key) for flag in flags]
    assert server.main(["--backend-store-uri", "sqlite:///m.db", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp.server: ") and words in lines[0], lines
    assert list((tmp_path / "cwd").iterdir()) == [], "nothing left behind"


@pytest.mark.parametrize("args,words", [
    ([], "give --backend-store-uri, or set MLFLOW_BACKEND_STORE_URI"),
    # the store is asked before the server starts: MLflow retried a store that does not answer for 108 s, then
    # the server exited with code 1; an unknown scheme was a 30-line traceback
    (["--backend-store-uri", "postgresql://postgres@127.0.0.1:1/x"],
     "--backend-store-uri=postgresql://postgres@127.0.0.1:1/x cannot be used: connection failed"),
    (["--backend-store-uri", "foo://x"], "a tracking server keeps its runs in a database: use postgresql://"),
    (["--backend-store-uri", "mysql://u@127.0.0.1/x"], "its database driver is not installed"),
    (["--backend-store-uri", "postgresql+psycopg2://u@127.0.0.1/x"],  # advice for PostgreSQL, not MySQL's
     "is not installed (No module named 'psycopg2'): use postgresql://... or postgresql+psycopg://..."),
    (["user"], "the following arguments are required: action"),
    (["user", "add", "someone"], "give the server with --uri https://host:port (or set MLFLOW_TRACKING_URI)"),
    (["user", "grant", "someone", "--uri", "https://127.0.0.1:1"], "required: --experiment"),
    (["user", "add", "someone", "--uri", "http://127.0.0.1:1"], "nothing answers there (Connection refused)"),
])
def test_a_missing_store_or_a_bad_user_command_is_one_line(args: list[str], words: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    assert server.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert list(tmp_path.iterdir()) == []


class Shared:
    """`python -m gdexp.server --auth` over HTTPS on a PostgreSQL that asks for passwords, as a team would run
    it: in a folder of its own (its users' database and secret key land in mlruns/server-auth, its artifacts in
    mlruns/server-artifacts), its console in console.log there. `secrets/` holds what is secret by design: the
    password file and the certificate's key."""

    def __init__(self, tmp: Path) -> None:
        self.pg = PrivatePostgres()
        try:
            self._start(tmp)
        except BaseException:  # the database, and a server that started, go with a failed start
            if hasattr(self, "proc"):
                stop_group(self.proc, grace=30)
            self.pg.close()
            raise

    def _start(self, tmp: Path) -> None:
        self.pg.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORDS['database']}'",
                    f"CREATE DATABASE runs OWNER {ROLE}", f"CREATE DATABASE study OWNER {ROLE}")
        (tmp / "secrets").mkdir()
        (tmp / "server").mkdir()
        self.folder = tmp / "server"
        self.pgpass = self.pg.password_file(tmp / "secrets", ROLE, PASSWORDS["database"])
        self.cert, key = self_signed(tmp / "secrets")
        self.study = self.pg.url(ROLE, "study")
        self.url = f"https://127.0.0.1:{free_port()}"
        self.env = {"PGPASSFILE": str(self.pgpass), "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.cert)}
        self.console = self.folder / "console.log"
        with self.console.open("w") as console:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gdexp.server", "--backend-store-uri", self.pg.url(ROLE, "runs"), "--auth",
                 "--tls-cert", str(self.cert), "--tls-key", str(key), "--port", self.url.rsplit(":", 1)[1],
                 "--workers", "1"],
                cwd=self.folder, env=self.child({"GDEXP_SERVER_ADMIN_PASSWORD": PASSWORDS["admin"]}),
                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        while "(Ctrl-C stops it)" not in self.console.read_text():  # up, and its admin's password checked
            assert self.proc.poll() is None, self.console.read_text()
            time.sleep(0.2)
        self.commands = command_lines({self.proc.pid} | descendants(self.proc.pid))
        self.context = ssl.create_default_context(cafile=str(self.cert))  # verified: name, chain and all

    def child(self, extra: dict[str, str] | None = None, *, who: str | None = None) -> dict[str, str]:
        """A child's environment: the password file and the certificate; `who`'s credentials, or none."""
        env = child_env({**self.env, **(extra or {})})
        for name in CREDENTIALS[:2]:
            env.pop(name, None)
        if who is not None:
            env.update(MLFLOW_TRACKING_USERNAME=who, MLFLOW_TRACKING_PASSWORD=PASSWORDS.get(who, "not-a-password"))
        return env

    def run(self, *args: str, cwd: Path, who: str | None = None, extra: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """`python -m <args>` as `who` (`child`), to the end."""
        return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=self.child(extra, who=who),
                              capture_output=True, text=True, timeout=300, check=False)

    def call(self, method: str, path: str, body: dict | None = None, who: str | None = None) -> tuple[int, dict]:
        """The status and the JSON answer ({} for none) of one REST call, with `who`'s user and password (None:
        anonymous)."""
        headers = {"Content-Type": "application/json"}
        if who is not None:
            token = base64.b64encode(f"{who}:{PASSWORDS.get(who, 'not-a-password')}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.context) as answer:
                json_answer = answer.headers.get_content_type() == "application/json"
                return int(answer.status), json.loads(answer.read()) if json_answer else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def experiment_id(self) -> str:
        path = f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        return str(self.call("GET", path, who="admin")[1]["experiment"]["experiment_id"])

    def close(self) -> None:
        """SIGTERM, as `kill` sends it: gdexp.server stops its MLflow server's process group, then exits."""
        pids = descendants(self.proc.pid)
        stop_group(self.proc, grace=30)
        self.pg.close()
        assert not still_running(pids), "the server left processes behind"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One shared server for the module, with two users: `editor` (EDIT on the experiment, added with `user add`)
    and `reader` (added by a REST call; the server's default permission, READ)."""
    s = Shared(tmp_path_factory.mktemp("shared"))
    try:
        result = s.run("gdexp.server", "user", "add", "editor", "--uri", s.url, "--experiment", EXPERIMENT,
                       "--permission", "EDIT", cwd=s.folder, who="admin",
                       extra={"GDEXP_USER_PASSWORD": PASSWORDS["editor"]})
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.splitlines()[-1] == f"user 'editor' has EDIT on experiment '{EXPERIMENT}'"
        again = s.run("gdexp.server", "user", "add", "editor", "--uri", s.url, cwd=s.folder, who="admin",
                      extra={"GDEXP_USER_PASSWORD": "another-password"})
        assert again.returncode == 2 and again.stderr.strip() == (
            "gdexp.server user: user 'editor' exists already: to give it a permission, user grant; a new password, "
            "user password"), again.stderr
        assert s.call("POST", "/api/2.0/mlflow/users/create", {"username": "reader", "password": PASSWORDS["reader"]},
                      who="admin")[0] == 200, "the REST call the README shows"
        s.commands |= command_lines(descendants(s.proc.pid))
        yield s
    finally:
        s.close()


@pytest.mark.slow
def test_anonymous_rest_calls_get_401(shared: Shared) -> None:
    experiment_id = shared.experiment_id()
    calls = [("GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}", None),
             ("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]}),
             ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}),
             ("POST", "/api/2.0/mlflow/experiments/create", {"name": "anonymous"}),
             ("POST", "/api/2.0/mlflow/users/create", {"username": "intruder", "password": "intruder-password"})]
    for method, path, body in calls:
        assert shared.call(method, path, body)[0] == 401, path
        assert shared.call(method, path, body, who="nobody")[0] == 401, f"{path} with a made-up user"
    assert shared.call("GET", "/health")[0] == 200, "the health check stays open (load balancers ask it)"


@pytest.mark.slow
def test_a_read_user_reads_and_gets_403_on_writes(shared: Shared) -> None:
    experiment_id = shared.experiment_id()
    assert shared.call("GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}",
                       who="reader")[0] == 200
    assert shared.call("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]},
                       who="reader")[0] == 200
    writes = [("/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}),
              ("/api/2.0/mlflow/experiments/set-experiment-tag",
               {"experiment_id": experiment_id, "key": "k", "value": "v"}),
              ("/api/2.0/mlflow/experiments/delete", {"experiment_id": experiment_id}),
              ("/api/2.0/mlflow/users/create", {"username": "friend", "password": "friend-password"})]
    for path, body in writes:
        assert shared.call("POST", path, body, who="reader")[0] == 403, path
    result = shared.run("gdexp.server", "user", "add", "friend", "--uri", shared.url, cwd=shared.folder, who="reader",
                        extra={"GDEXP_USER_PASSWORD": "friend-password"})
    assert result.returncode == 2 and result.stderr.strip() == (
        "gdexp.server user: user 'reader' is not an admin of the server: managing users takes an admin's "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"), result.stderr


def sweep(shared: Shared, name: str) -> list[str]:
    return [sys.executable, "-m", "gdexp", "+sweep=lr", f"sweep.name={name}", "sweep.n_trials=4", "train.epochs=1",
            "sweep.n_workers=2", f"sweep.storage={shared.study}", f"tracking.uri={shared.url}",
            f"tracking.experiment={EXPERIMENT}"]


@pytest.mark.slow
def test_an_edit_user_sweeps_to_exact_totals_and_no_password_shows(shared: Shared, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTPS (the certificate trusted through MLFLOW_TRACKING_SERVER_CERT_PATH), the study on PostgreSQL
    through the password file: then no test password in any file of the working folder or the server's, in any
    console line, or in the command line of any process gdexp started (sampled while they ran)."""
    proc = subprocess.Popen(sweep(shared, "lr"), cwd=tmp_path, env=shared.child(who="editor"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = command_lines({proc.pid})
    while proc.poll() is None:
        seen |= command_lines({proc.pid} | descendants(proc.pid))  # the forked worker too
        time.sleep(0.1)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    import optuna
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("PGPASSFILE", str(shared.pgpass))
    trials = optuna.load_study(study_name="lr", storage=database_url(shared.study)).get_trials()
    assert sum(map(counted, trials)) == 4
    for name, value in (("MLFLOW_TRACKING_USERNAME", "editor"), ("MLFLOW_TRACKING_PASSWORD", PASSWORDS["editor"]),
                        ("MLFLOW_TRACKING_SERVER_CERT_PATH", str(shared.cert))):
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_uri=shared.url)
    runs = client.search_runs([shared.experiment_id()], "tags.`gdexp.sweep` = 'lr'")
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(kids) == 4 and len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert "weights.npz" in {a.path for a in client.list_artifacts(kids[0].info.run_id)}, \
        "artifacts go up through the server, over HTTPS"
    shared.commands |= command_lines({shared.proc.pid} | descendants(shared.proc.pid))
    assert len(seen) >= 2 and len(shared.commands) >= 3, (seen, shared.commands)  # sweep + worker; server + children
    words = list(PASSWORDS.values())
    assert [c for c in [*seen.values(), *shared.commands.values()] if any(w in c for w in words)] == []
    assert [w for w in words if w in out + err + shared.console.read_text()] == []
    assert files_holding(tmp_path, words) == [] and files_holding(shared.folder, words) == []
    auth = shared.folder / "mlruns" / "server-auth"
    assert sorted(p.name for p in auth.iterdir()) == ["basic_auth.db", "basic_auth.ini", "secret_key"]
    assert (auth.stat().st_mode & 0o777, (auth / "secret_key").stat().st_mode & 0o777) == (0o700, 0o600)


@pytest.mark.slow
def test_an_edit_user_logs_reports_to_the_parent_run(shared: Shared, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The report of the sweep `lr` the test above made, by its user (EDIT): its files go up. The report emptied
    the run's report/ first, and deleting an artifact needs MANAGE there: every report of an EDIT user failed with
    a 403 after writing its local files. A second report of fewer formats replaces what it wrote; the older files
    stay, said in one line."""
    args = ("gdexp.report", "lr", "--uri", shared.url, "--experiment", EXPERIMENT, "--out", "out")
    first = shared.run(*args, cwd=tmp_path, who="editor")
    assert first.returncode == 0 and first.stderr == "", first.stderr
    again = shared.run(*args, "--formats", "md", cwd=tmp_path, who="editor")
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith("gdexp.report: note: the older report/") and again.stderr.strip().endswith(
        "stayed on the run beside this report's files: deleting an artifact on this server needs MANAGE on the "
        "experiment"), again.stderr
    for name, value in (("MLFLOW_TRACKING_USERNAME", "editor"), ("MLFLOW_TRACKING_PASSWORD", PASSWORDS["editor"]),
                        ("MLFLOW_TRACKING_SERVER_CERT_PATH", str(shared.cert))):
        monkeypatch.setenv(name, value)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=shared.url)
    (parent,) = client.search_runs([shared.experiment_id()],
                                   "tags.`gdexp.role` = 'sweep' and tags.`gdexp.sweep` = 'lr'")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/regimes.md" in logged and len(logged) == len(list((tmp_path / "out").iterdir()))


CASES = {  # who runs the sweep -> (is the certificate trusted, words of the one line)
    "nobody": (True, "it asks for a user and password (401: none were given, or not a user's): set "
                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    "intruder": (True, "it refused user 'intruder' (401: no such user, or not its password): check "
                       "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    "reader": (True, f"user 'reader' may not change experiment '{EXPERIMENT}' (its permission: READ): ask the "
                     f"server's admin for EDIT (python -m gdexp.server user grant reader --experiment {EXPERIMENT} "
                     "--permission EDIT)"),
    "editor": (False, "TLS failed (certificate verify failed: self-signed certificate): a certificate not signed by "
                      "a CA this machine trusts needs MLFLOW_TRACKING_SERVER_CERT_PATH"),
}


@pytest.mark.slow
@pytest.mark.parametrize("who", list(CASES))
def test_a_sweep_without_the_right_to_write_stops_before_anything_exists(shared: Shared, tmp_path: Path, who: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, wrong ones, a READ user, a certificate not trusted: one line, exit code 2, before the
    study or any run exists."""
    trusted, words = CASES[who]
    env = shared.child(who=None if who == "nobody" else who)
    if not trusted:
        del env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    began = time.monotonic()
    result = subprocess.run(sweep(shared, f"refused-{who}"), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    print(f"{who}: refused in {time.monotonic() - began:.1f} s")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gdexp: config error: tracking.uri={shared.url} cannot be used: {words}"), lines[0]
    assert list(tmp_path.iterdir()) == [], "no study journal, no Hydra folder"
    import optuna

    monkeypatch.setenv("PGPASSFILE", str(shared.pgpass))
    assert f"refused-{who}" not in optuna.get_all_study_names(database_url(shared.study))
    status, found = shared.call("POST", "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [shared.experiment_id()], "filter": f"tags.`gdexp.sweep` = 'refused-{who}'"}, who="admin")
    assert status == 200 and found.get("runs", []) == [], "no run exists"


@pytest.mark.slow
def test_the_report_and_the_ui_use_the_same_credentials(shared: Shared, tmp_path: Path) -> None:
    report = shared.run("gdexp.report", "lr", "--uri", shared.url, "--experiment", EXPERIMENT, cwd=tmp_path)
    assert report.returncode == 2 and report.stderr.strip().splitlines() == [
        f"gdexp.report: --uri={shared.url} cannot be read: it asks for a user and password (401: none were given, "
        "or not a user's): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"], report.stderr
    report = shared.run("gdexp.report", "lr", "--uri", shared.url, "--experiment", EXPERIMENT, cwd=tmp_path,
                        who="reader")
    assert report.returncode == 2 and "--no-log writes nothing" in report.stderr, report.stderr
    ui = shared.run("gdexp.ui", "--uri", shared.url, "--experiment", EXPERIMENT, cwd=tmp_path)
    assert ui.returncode == 2 and "(401" in ui.stderr and len(ui.stderr.strip().splitlines()) == 1, ui.stderr
    assert list(tmp_path.iterdir()) == [], "refused: nothing written"
    ui = shared.run("gdexp.ui", "--uri", shared.url, "--experiment", EXPERIMENT, cwd=tmp_path, who="reader")
    assert ui.returncode == 0 and f"MLflow UI at {shared.url}" in ui.stdout, ui.stderr
    assert "The trials by regime: not saved (user 'reader' may not change experiment" in ui.stdout
    ui = shared.run("gdexp.ui", "--uri", shared.url, "--experiment", EXPERIMENT, cwd=tmp_path, who="editor")
    assert ui.returncode == 0 and f"The trials by regime: {shared.url}/#/experiments/" in ui.stdout, ui.stderr


@pytest.mark.slow
def test_the_admin_password_must_be_the_one_the_users_were_made_with(shared: Shared) -> None:
    """MLflow reads the admin's password only when it creates the admin: a server started again with another is
    stopped, in one line, and leaves no process."""
    proc = subprocess.Popen([sys.executable, "-m", "gdexp.server", "--backend-store-uri", shared.pg.url(ROLE, "runs"),
                             "--auth", "--port", "0", "--workers", "1"], cwd=shared.folder,
                            env=shared.child({"GDEXP_SERVER_ADMIN_PASSWORD": "another-admin-password"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids: set[int] = set()
    while proc.poll() is None:
        pids |= descendants(proc.pid)
        time.sleep(0.2)
    out, err = proc.communicate()
    mine = [line for line in err.splitlines() if line.startswith("gdexp.server: ")]
    assert proc.returncode == 2 and mine[-1].startswith(
        "gdexp.server: GDEXP_SERVER_ADMIN_PASSWORD is not the password of the server's admin"), err
    assert "Ctrl-C stops it" not in out and pids and not still_running(pids), "stopped whole"
