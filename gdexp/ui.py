"""`python -m gdexp.ui`: the MLflow UI on this project's store, bound to 127.0.0.1.

It runs MLflow's own server (`mlflow ui`) with the store gdexp writes to (`tracking.uri`), so the
experiment, its sweeps (parent runs) and their trials (child runs) are there with their regime tags.
Once the server answers, it prints the address of the experiment's runs table: MLflow 3 opens an
experiment on an overview page made for GenAI traces, where none of gdexp's runs show.
`python -m gdexp.server` starts the same server for several machines; both build the command here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence

from gdexp import compat, stopping, store
from gdexp.config import mask_secrets
from gdexp.store import DEFAULT_URI, local_store_missing

__all__ = ["command", "comparison", "free_port", "hint", "main", "port_taken", "serve", "stop_group", "wait_until_up"]



def command(backend: str, *, host: str = "127.0.0.1", port: int = 5000, artifacts: str | None = None,
            workers: int = 1) -> list[str]:
    """The `mlflow server` command line: a backend store, an address, and, when `artifacts` is given,
    a served artifact root (clients on other machines upload through the server)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", host,
           "--port", str(port), "--workers", str(workers)]
    if artifacts:
        cmd += ["--serve-artifacts", "--artifacts-destination", artifacts]
    if host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]  # reachable by name or address from other machines
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> str | None:
    """Why a server could not listen on `port` of `host` (another one does), or None. Bound as a server binds
    it (SO_REUSEADDR), so a port whose last connections are in TIME_WAIT counts as free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    """Poll the server's /health until it answers; raise with the reason when it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the MLflow server at {url} did not answer within {timeout:.0f} s")


def serve(cmd: Sequence[str], url: str, what: str, *, view: str | None = None) -> int:
    """Start the server, say where it is once it answers (and the address of `view`), and stay until Ctrl-C or
    SIGTERM.

    The server runs in a process group of its own, which is stopped whole: `mlflow server` starts
    uvicorn and job consumers that a signal to it alone leaves running. A port that another process holds is
    said in one line before anything starts: the server would find out only after its store's migrations, and
    `/health` could be answered by whatever holds the port."""
    stopping.install()
    address = urllib.parse.urlsplit(url)
    held = port_taken(address.hostname or "127.0.0.1", address.port or 80)
    if held is not None:
        print(f"gdexp: cannot serve at {url}: port {address.port} is in use ({held}); stop what holds it, "
              "or choose another with --port (--port 0 picks a free one)", file=sys.stderr)
        return 1
    proc = subprocess.Popen(list(cmd), start_new_session=True)
    try:
        wait_until_up(url, proc)
        print(f"{what} at {url}  (Ctrl-C stops it)", flush=True)
        if view is not None:
            print(f"The trials by regime: {view}", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"gdexp: {exc}", file=sys.stderr)
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


VIEW_COLUMNS = ["params.`optim.lr`", "params.`model.hidden_size`", "params.`gd.variant`", "metrics.`val_loss`",
                "metrics.`test_accuracy`", "tags.`regime`", "tags.`sibling_group`", "tags.`regime_reason`"]


def comparison(uri: str, experiment: str, sweep: str | None = None) -> str | None:
    """Save the regime comparison as a shared view of the experiment's runs table, and return the address
    (after the server's root) that opens it; None when there is no such experiment yet.

    The view: the trials (of sweep `sweep`, or of every sweep) grouped by `regime`, so that every trial shows
    (grouped, the UI lists child runs flat, not folded under their parent), sorted by learning rate, with the
    columns that back a label: learning rate, hidden size, GD variant, val_loss, test_accuracy, regime, sibling
    group and the reason."""
    experiment_id = store.find_experiment(uri, experiment)
    if experiment_id is None:
        return None
    key = f"gdexp-{sweep}" if sweep else "gdexp-regimes"
    search = f"tags.`gdexp.sweep` = '{sweep}'" if sweep else "tags.`gdexp.sweep` != ''"
    value = compat.shared_view(f"gdexp: {'sweep ' + sweep if sweep else 'trials'} by regime", columns=VIEW_COLUMNS,
                               group_by_tag="regime", search_filter=search, order_by="params.`optim.lr`",
                               widths={"tags.`regime_reason`": 700, "tags.`sibling_group`": 110})
    store.set_experiment_tag(uri, experiment_id, compat.SHARED_VIEW_PREFIX + key, value)
    return compat.shared_view_address(experiment_id, key)


def hint(uri: str, experiment: str, sweep: str | None = None) -> str:
    """Where to look at a sweep's regimes in the UI: the comparison's address on a tracking server; on a local
    store, the command that starts the UI and the address it will serve it at."""
    from gdexp.config import mask_secrets

    fragment = comparison(uri, experiment, sweep)
    if uri.startswith(("http://", "https://")):
        return f"{mask_secrets(uri).rstrip('/')}/{fragment or ''}"
    address = f"http://127.0.0.1:5000/{fragment}" if fragment else "its runs table"
    return f"python -m gdexp.ui, then {address}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdexp.ui",
                                     description="Open the MLflow UI on gdexp's store (bound to 127.0.0.1).")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI),
                        help=f"the tracking store (default {DEFAULT_URI}, or $MLFLOW_TRACKING_URI)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--experiment", default="gdexp",
                        help="the experiment whose regime comparison to open (default gdexp)")
    parser.add_argument("--sweep", help="compare the trials of this sweep only (default: of every sweep)")
    args = parser.parse_args(argv)
    if local_store_missing(args.uri):
        print(f"gdexp: no MLflow store at {args.uri} yet: run `python -m gdexp` first", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    url = f"http://{args.host}:{port}"
    view = comparison(args.uri, args.experiment, args.sweep)
    return serve(command(args.uri, host=args.host, port=port), url, f"MLflow UI on {mask_secrets(args.uri)}",
                 view=f"{url}/{view}" if view else None)


if __name__ == "__main__":
    sys.exit(main())

