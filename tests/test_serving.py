"""gdexp.serving: what an MLflow server is started with, which addresses count as this machine's only, the TLS
pair checked before a start, and the wait that lasts as long as the server's process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdexp.serving import Tls, command, free_port, loopback, wait_until_up
from tests.conftest import UNASSIGNED, gdexp, self_signed


def test_the_store_and_the_artifact_root_travel_in_the_environment(tmp_path: Path) -> None:
    """`ps` shows a command line to every user: the store's URI (a database password) never goes there."""
    cert, key = self_signed(tmp_path)
    launch = command("postgresql+psycopg://u:s3cr3t@db/runs", host="0.0.0.0", port=5001, workers=2,
                     artifacts="s3://k:s3cr3t@bucket/a", tls=Tls(cert, key), app="basic-auth",
                     env={"MLFLOW_FLASK_SERVER_SECRET_KEY": "s3cr3t"})
    assert not any("s3cr3t" in arg for arg in launch.argv), launch.argv
    assert launch.env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg://u:s3cr3t@db/runs"
    assert launch.env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://k:s3cr3t@bucket/a"
    assert launch.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "s3cr3t"
    assert launch.argv[2:4] == ["mlflow", "server"] and "--serve-artifacts" in launch.argv
    assert launch.argv[launch.argv.index("--app-name") + 1] == "basic-auth"
    assert launch.argv[launch.argv.index("--uvicorn-opts") + 1] == f"--ssl-certfile {cert} --ssl-keyfile {key}"
    assert launch.url == "https://0.0.0.0:5001" and "--allowed-hosts" in launch.argv
    local = command("sqlite:///m.db", host="::1", port=5002)
    assert local.url == "http://[::1]:5002" and "--allowed-hosts" not in local.argv and "--app-name" not in local.argv


@pytest.mark.parametrize("host,only_here", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.1.2.3", False), ("server.example.org", False)])
def test_loopback_addresses_are_this_machines_only(host: str, only_here: bool) -> None:
    assert loopback(host) is only_here


def test_a_tls_pair_is_checked_before_a_start(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    assert Tls(cert, key).problem() is None
    assert "not a certificate and its unencrypted private key" in str(Tls(key, cert).problem())
    assert "not a certificate and its unencrypted private key" in str(Tls(other_cert, key).problem())
    assert "No such file or directory" in str(Tls(tmp_path / "none.pem", key).problem())


@pytest.mark.slow
def test_the_wait_lasts_as_long_as_the_server_process(capsys: pytest.CaptureFixture[str]) -> None:
    """No fixed bound (a new store's migrations took over a minute under load): it says once that the server is
    still starting, and fails in one line when the process ends without answering."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code 0 before it answered"):
        wait_until_up(f"http://127.0.0.1:{free_port()}", proc, patience=0.5)  # nothing listens there
    assert time.monotonic() - began >= 2.5, "it waited for the process, not for a time of its own"
    said = capsys.readouterr().err.splitlines()
    assert len([line for line in said if "still starting" in line]) == 1, said


@pytest.mark.slow
@pytest.mark.parametrize("command", [["gdexp.ui"], ["gdexp.server", "--backend-store-uri", "sqlite:///m.db"]])
@pytest.mark.parametrize("args", [["--port", "99999"], ["--host", UNASSIGNED]])
def test_a_refusal_takes_under_three_seconds(command: list[str], args: list[str], tmp_path: Path) -> None:
    """As a user runs either command: a fresh interpreter, its imports and the refusal. On a machine busier than
    its cores the bound grows with the load (the interpreter's start-up is most of the time)."""
    began = time.monotonic()
    result = gdexp("-m", *command, *args, cwd=tmp_path)
    took = time.monotonic() - began
    print(f"python -m {' '.join(command)} {' '.join(args)}: refused in {took:.2f} s")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert took < 3 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), f"{took:.2f} s"
    assert list(tmp_path.iterdir()) == []
