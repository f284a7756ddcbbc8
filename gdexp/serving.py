"""An MLflow server process: its command line and environment, the wait until it answers, and its stop.

`python -m gdexp.ui` (this machine's store, for this machine) and `python -m gdexp.server` (a tracking server
for several machines) both start `mlflow server` through here. Two rules hold for every server gdexp starts:
- nothing secret on a command line: `ps` shows every process's command line to every user of the machine, so
  the backend store's URI (it may hold a database password), the artifact destination and the auth app's keys
  reach `mlflow server` through its environment (`MLFLOW_BACKEND_STORE_URI`, ... : its CLI reads them), and
  it passes them on to its uvicorn workers the same way;
- it is stopped whole: `mlflow server` starts uvicorn and job consumers that a signal to it alone leaves
  running, so it leads a process group of its own, which is stopped together; and it does not outlive the
  command that started it, even one killed with SIGKILL (`stopping.tied_to_this_process`: `mlflow server` is then
  sent SIGTERM, which it passes on to uvicorn), so that the next start does not find the port held by an orphan.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gdexp import errors, stopping

__all__ = ["Launch", "Tls", "command", "free_port", "loopback", "port_taken", "serve", "stop_group", "url_of",
           "wait_until_up"]

STILL_STARTING_S = 10.0  # after this long without an answer, say once that the server is still starting
# MLflow's server-side jobs (GenAI judges, trace roll-ups) run in a job runner and seven job consumers beside the
# web server: gdexp's runs use none of them, and without them a server is 2 processes instead of 10 and starts in
# about half the time on a 2-core machine (measured 7-11 s against 18-23 s)
JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


@dataclass(frozen=True)
class Tls:
    """A certificate (PEM, the chain after the server's own) and its private key (PEM, not encrypted): the
    server speaks HTTPS with them (uvicorn's `--ssl-certfile`/`--ssl-keyfile`)."""

    cert: Path
    key: Path

    def problem(self) -> str | None:
        """Why this pair cannot serve HTTPS (a file missing or unreadable, not PEM, a key that does not match
        the certificate, an encrypted key), or None: found now, not by a worker that crashes at start."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:  # an encrypted key would make OpenSSL ask for its passphrase on the terminal: refused instead
            context.load_cert_chain(self.cert, self.key, password=lambda: b"")
        except ssl.SSLError as exc:  # an OSError too: first
            return (f"--tls-cert {self.cert} and --tls-key {self.key} are not a certificate and its unencrypted "
                    f"private key, both PEM ({exc.reason or exc})")
        except OSError as exc:
            return f"cannot read --tls-cert {self.cert} or --tls-key {self.key}: {exc.strerror or exc}"
        return None

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate, whatever names it holds: for gdexp's own
        requests to the server it started, which it reaches by the address it bound, not by a name the
        certificate need list. Only a process that holds the private key passes."""
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
        return context


@dataclass(frozen=True)
class Launch:
    """An `mlflow server` to start: `argv` holds nothing secret, `env` (added to this process's environment)
    holds the rest; it listens at `host:port`, speaking HTTPS with `tls` (None: plain HTTP)."""

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    tls: Tls | None

    @property
    def url(self) -> str:
        return url_of(self.host, self.port, tls=self.tls is not None)

    def context(self) -> ssl.SSLContext | None:
        """How gdexp's own requests trust this server (None: plain HTTP, or the system's CAs)."""
        return None if self.tls is None else self.tls.trusting()


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    """`http(s)://host:port`, an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def command(backend: str, *, host: str = "127.0.0.1", port: int = 5000, artifacts: str | None = None,
            workers: int = 1, tls: Tls | None = None, app: str | None = None,
            env: Mapping[str, str] | None = None) -> Launch:
    """`mlflow server` on store `backend` at `host:port`; with `artifacts`, it serves that artifact root
    (clients on other machines upload through it); `app` names an MLflow app (`basic-auth`), `env` what that
    app reads from the environment. The store and the artifact root travel in the environment."""
    argv = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers)]
    variables = {"MLFLOW_BACKEND_STORE_URI": backend, **(env or {})}
    if JOBS not in os.environ:  # gdexp's runs use none of them; a user who wants them sets the variable
        variables[JOBS] = "false"
    if "PYTHONWARNINGS" not in os.environ:  # MLflow 3.17's server warns of its own use of Starlette at every start
        variables["PYTHONWARNINGS"] = "ignore:starlette.middleware.wsgi is deprecated"
    if artifacts:
        argv.append("--serve-artifacts")
        variables["MLFLOW_ARTIFACTS_DESTINATION"] = artifacts
    if not loopback(host):
        argv += ["--allowed-hosts", "*"]  # reachable by name or address from other machines
    if app is not None:
        argv += ["--app-name", app]
    if tls is not None:  # paths, not secrets; uvicorn is `mlflow server`'s default web server
        argv += ["--uvicorn-opts", f"--ssl-certfile {_quoted(tls.cert)} --ssl-keyfile {_quoted(tls.key)}"]
    return Launch(argv, variables, host, port, tls)


def _quoted(path: Path) -> str:
    return shlex.quote(str(path.resolve()))


def loopback(host: str) -> bool:
    """Does `host` name this machine's loopback interface only (127.0.0.0/8, ::1, localhost)? Anything else
    (0.0.0.0 included) can be reached from other machines."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> str | None:
    """Why a server could not listen on `port` of `host` (another one does), or None. Bound as a server binds
    it (SO_REUSEADDR), so a port whose last connections are in TIME_WAIT counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None = None, *, timeout: float | None = None,
                  context: ssl.SSLContext | None = None, patience: float = STILL_STARTING_S,
                  prog: str = "gdexp") -> None:
    """Poll the server's /health until it answers 200.

    With `proc` (the server's process) and no `timeout`, for as long as that process lives: a new store runs all
    of MLflow's schema migrations first, which took over a minute on a loaded machine, and no fixed bound fits
    every machine; after `patience` s without an answer it says so once. Raise RuntimeError, in one line, when
    the process ends first or TLS fails (a certificate that will not do is no passing state); TimeoutError
    once `timeout` s have passed (for a server started elsewhere, whose life this process cannot watch)."""
    if proc is None and timeout is None:
        raise ValueError("wait_until_up needs the server's process or a timeout")
    began = time.monotonic()
    said = False
    while timeout is None or time.monotonic() - began < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {proc.returncode} before it answered "
                               "(its own lines above say why)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise RuntimeError(f"the MLflow server at {url} does not complete TLS: {exc.reason}") from None
        except OSError:
            pass
        if not said and time.monotonic() - began > patience:
            errors.say(f"{prog}: the MLflow server is still starting (a new store's schema migrations can take a "
                       "minute); waiting for as long as it runs")
            said = True
        time.sleep(0.3)
    raise TimeoutError(f"the MLflow server at {url} did not answer within {timeout:.0f} s")


def serve(launch: Launch, what: str, *, prog: str, lines: Sequence[str] = (),
          ready: Callable[[], None] | None = None) -> int:
    """Start the server, check it with `ready` once it answers (an error raised there stops it), say where it
    is (then `lines`), and stay until Ctrl-C or SIGTERM; return the exit code of the command.

    A port that another process holds is said in one line before anything starts: the server would find out
    only after its store's migrations, and `/health` could be answered by whatever holds the port."""
    stopping.install()
    held = port_taken(launch.host, launch.port)
    if held is not None:
        errors.say(f"{prog}: cannot serve at {launch.url}: port {launch.port} is in use ({held}); stop what holds "
                   "it, or choose another with --port (--port 0 picks a free one)")
        return 1
    proc = subprocess.Popen(launch.argv, env={**os.environ, **launch.env}, start_new_session=True,
                            preexec_fn=stopping.tied_to_this_process())
    try:
        wait_until_up(launch.url, proc, context=launch.context(), prog=prog)
        if ready is not None:
            ready()
        print(f"{what} at {launch.url}  (Ctrl-C stops it)", flush=True)
        for line in lines:
            print(line, flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        errors.say(f"{prog}: {exc}")
        return 1
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the process group `proc` leads, then SIGKILL to whatever of it is left after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap it, or the group never looks empty
            os.killpg(proc.pid, 0)  # raises ProcessLookupError once the whole group is gone
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
