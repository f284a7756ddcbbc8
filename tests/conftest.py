"""Shared fixtures: the real Hydra config (composed, then shrunk) and a throw-away project folder."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gdexp.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]

UNASSIGNED = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this machine

# MLflow's own variable picks the store of every command that is not told one: a developer's shell pointing at a
# tracking server (README's server section exports it) must not send the suite's runs there.
os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_configure(config: pytest.Config) -> None:
    """hypothesis keeps its example database and caches in a temp folder, not `.hypothesis/` in the
    checkout (set before collection, when it first writes there)."""
    from hypothesis.configuration import set_hypothesis_home_dir

    home = tempfile.mkdtemp(prefix="gdexp-hypothesis-")
    set_hypothesis_home_dir(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow SQLite store, made once as gdexp makes one (MLflow's own schema, tests/test_compat.py)."""
    from mlflow.tracking import MlflowClient

    from gdexp import compat

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    compat.create_sqlite_store(path)
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """Work in a fresh folder, as a user would in a fresh checkout: mlruns/ and sweeps/ land there."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_store, tmp_path / "mlruns" / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


_composed: dict[tuple[str, ...], DictConfig] = {}


@pytest.fixture
def make_cfg(project: Path) -> Iterator[Callable[..., DictConfig]]:
    """compose("optim=adam", ...) -> the validated-by-Hydra config, quiet and tracked into `project`.

    Each list of overrides is composed by Hydra once a session (~0.1 s: it reads every YAML file again) and
    handed out as a deep copy, so a test may change its config; an override Hydra refuses raises every time.
    Paths in the config stay relative: they are read against `project` when used, not when composed."""
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):

        def make(*overrides: str) -> DictConfig:
            if overrides not in _composed:
                _composed[overrides] = compose("config", overrides=["train.progress=false", *overrides])
            return copy.deepcopy(_composed[overrides])

        yield make


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`stopping.install()` in this process, undone afterwards (pytest's own handlers, a clean state)."""
    from gdexp import stopping

    for name in ("_first", "_pending", "_shield", "_once", "_hook"):
        monkeypatch.setattr(stopping, name, getattr(stopping, name))
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stopping.install()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def gdexp(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Run `python -m gdexp ...` (or another module with `-m` first) as a user would; `env` adds variables."""
    cmd = [sys.executable, *(args if args and args[0] == "-m" else ("-m", "gdexp", *args))]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=child_env(env),
                          check=False)


PG = "postgresql://postgres@127.0.0.1:5432"  # the machine's PostgreSQL (.ci/run starts it)


@pytest.fixture
def database() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL, dropped after the test."""
    import psycopg

    name = f"gdexp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG}/{name}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `python -m gdexp...` child: this checkout importable, no GUI backend, and the venv's
    `bin` first on PATH, as a user's activated venv has it (so the commands it prints to run read `python -m`)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT), **{"PATH": path, **(extra or {})})


def default_sigint() -> None:
    """Popen's preexec_fn for a child that must see Ctrl-C: a shell's background job (`cmd &`) starts with
    SIGINT ignored, and Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The same for the test processes themselves, and through them every process they start (an ignored signal stays
# ignored across exec, a handled one does not): a suite started as a background job (`pytest ... &`) failed every
# test that sends Ctrl-C, the Ray workers' included.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _live_parent(pid: int) -> int | None:
    """The parent of process `pid` (gdexp's own /proc reader), or None when it is gone or a zombie."""
    from gdexp.processes import proc_stat

    found = proc_stat(pid)
    return None if found is None or found[0] == "Z" else found[1]


def still_running(pids: set[int]) -> set[int]:
    """Those of `pids` that are alive (not gone, not zombies)."""
    return {pid for pid in pids if _live_parent(pid) is not None}


def descendants(pid: int) -> set[int]:
    """The live processes below `pid` (children, grandchildren, ...), read from /proc."""
    parents = {p: _live_parent(p) for p in (int(d.name) for d in Path("/proc").glob("[0-9]*"))}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def mlflow_client(uri: str):
    """MLflow's own client on a tracking URI: tests read what gdexp wrote with MLflow, not with gdexp. A relative
    SQLite path is made absolute: MLflow caches stores by URI, and each test has its own working folder."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return MlflowClient(tracking_uri=uri)


def store(path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{path / 'mlruns' / 'mlflow.db'}")


def all_runs(path: Path) -> list:
    client = store(path)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=10000) if ids else []


def counted(trial) -> bool:
    """Does an Optuna trial count toward `sweep.n_trials` (by gdexp's typed trial record)?"""
    from gdexp.sweep import TrialRecord

    return TrialRecord.of(trial).counted


def self_signed(folder: Path, *, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A self-signed certificate for `names` (host names and IP addresses) and its key, PEM files in `folder`,
    made with the `cryptography` package: (certificate, key). It is its own CA: clients trust it through
    MLFLOW_TRACKING_SERVER_CERT_PATH=<the certificate>."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def alt(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gdexp test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def command_lines(pids: set[int]) -> dict[int, str]:
    """What `ps` shows of each live process in `pids`: its command line, from /proc/<pid>/cmdline."""
    found = {}
    for pid in pids:
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
    return found


def files_holding(folder: Path, secrets: list[str]) -> list[str]:
    """The files under `folder` whose bytes hold any of `secrets` ('path: secret')."""
    held = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            held += [f"{path}: {secret}" for secret in secrets if secret.encode() in data]
    return held
