"""`python -m gdexp.server`: an MLflow tracking server for sweeps across machines.

A database backend (PostgreSQL: `postgresql://user@host/db`) holds runs and metrics; the server serves the
artifact root, so workers on other machines upload `loss_curve.png` and `weights.npz` through it. It binds to
127.0.0.1 unless `--host` says otherwise; a `--host` other machines reach needs `--auth` (users and permissions,
`_auth`), since without it anyone who reaches the port may read, change or delete every run. `--tls-cert` and
`--tls-key` serve HTTPS, without which passwords cross the network in clear text. Workers then use
`tracking.uri=https://HOST:PORT` with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.

No secret goes on a command line, where `ps` shows it to every user: the backend store's URI may come from
MLFLOW_BACKEND_STORE_URI (a database password from PGPASSWORD or a password file, PGPASSFILE / ~/.pgpass), the
admin's password from GDEXP_SERVER_ADMIN_PASSWORD, and `gdexp.serving` hands them to the server's processes in
their environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gdexp import errors, reach, stopping
from gdexp.config import UsageError, database_url, mask_secrets, password_warning
from gdexp.server import _auth
from gdexp.serving import Tls, command, free_port, loopback, serve, url_of

__all__ = ["main"]

PROG = "gdexp.server"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve, or (`user ...`) manage the users of a server started with --auth."""
    stopping.install()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["user"]:
        from gdexp.server._users import main as users

        return users(args[1:])
    return errors.command(PROG, lambda: _serve(args))


def _parser() -> errors.Parser:
    parser = errors.Parser(prog="python -m gdexp.server", description=__doc__.splitlines()[0],
                           epilog="Users of a server started with --auth: python -m gdexp.server user --help")
    parser.add_argument("--backend-store-uri",
                        help="where runs live: postgresql://user@host[:port]/db (or sqlite:///path); default "
                             "$MLFLOW_BACKEND_STORE_URI, which keeps a password off the command line")
    parser.add_argument("--artifacts-destination", default=str(Path("mlruns/server-artifacts").resolve().as_uri()),
                        help="artifact root the server writes to (default mlruns/server-artifacts)")
    parser.add_argument("--host", type=errors.host, default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; another machine's reach, such as 0.0.0.0, needs "
                             "--auth)")
    parser.add_argument("--port", type=errors.port, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--workers", type=_count, default=2, help="server worker processes (default 2)")
    parser.add_argument("--auth", action="store_true",
                        help=f"users and per-experiment permissions (MLflow's basic-auth app); the admin is "
                             f"'{_auth.ADMIN}', its password from ${_auth.PASSWORD_VARIABLE}")
    parser.add_argument("--auth-dir", type=Path, default=Path("mlruns/server-auth"),
                        help="with --auth: the folder (mode 0700) of the users' database and the secret key "
                             "(default mlruns/server-auth)")
    parser.add_argument("--default-permission", choices=_auth.PERMISSIONS, default="READ",
                        help="with --auth: what a user may do with an experiment nobody gave it a permission on "
                             "(default READ)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM; with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM, not encrypted)")
    return parser


def _count(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a whole number >= 1")
    return int(text)


def _serve(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    backend = args.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not backend:
        raise UsageError("give --backend-store-uri, or set MLFLOW_BACKEND_STORE_URI (postgresql://user@host/db)")
    problem = None if backend.startswith(("sqlite:///", "postgres", "mysql")) else (
        "a tracking server keeps its runs in a database: use postgresql://user@host/db (or sqlite:///path)")
    problem = problem or reach.tracking_store(backend)  # in seconds, before MLflow's two minutes of retries
    if problem is not None:
        raise UsageError(f"--backend-store-uri={mask_secrets(backend)} cannot be used: {mask_secrets(problem)}")
    if not loopback(args.host) and not args.auth:
        raise UsageError(f"--host {args.host} lets other machines in, and without --auth anyone who reaches the port "
                         "may read, change or delete every run: add --auth (with the admin's password in "
                         f"{_auth.PASSWORD_VARIABLE}), or bind 127.0.0.1")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both (or neither, for plain HTTP)")
    tls = Tls(args.tls_cert.resolve(), args.tls_key.resolve()) if args.tls_cert else None
    problem = tls.problem() if tls is not None else None
    if problem is not None:
        raise UsageError(problem)
    password = _auth.admin_password() if args.auth else ""
    folder = _auth.AuthFolder(args.auth_dir.resolve())
    problem = folder.problem() if args.auth else None
    if problem is not None:
        raise UsageError(problem)
    given = [f"--backend-store-uri={args.backend_store_uri}"] if args.backend_store_uri else []
    warning = password_warning(given, keys=["--backend-store-uri"])
    if warning is not None:
        errors.say(f"{PROG}: {warning}")
    if not loopback(args.host) and tls is None:
        errors.say(f"{PROG}: warning: without --tls-cert and --tls-key, passwords and runs cross the network in "
                   "clear text")
    launch = command(database_url(backend), host=args.host, port=args.port or free_port(args.host),
                     artifacts=args.artifacts_destination, workers=args.workers, tls=tls,
                     app="basic-auth" if args.auth else None,
                     env=folder.prepare(args.default_permission, password) if args.auth else None)
    if not args.auth:
        return serve(launch, f"MLflow tracking server on {mask_secrets(backend)}", prog=PROG)
    # a wildcard bind (0.0.0.0, ::) is no address to connect to: this machine's loopback is
    here = url_of({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host), launch.port, tls=tls is not None)
    return serve(launch, f"MLflow tracking server with users (--auth) on {mask_secrets(backend)}", prog=PROG,
                 ready=lambda: _auth.check_admin(launch.url, launch.context(), password, folder.path),
                 lines=[f"Admin: {_auth.ADMIN}, password from ${_auth.PASSWORD_VARIABLE}; add users with: "
                        f"python -m gdexp.server user add NAME --uri {here}"])
