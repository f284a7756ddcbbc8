"""`python -m gdexp.server`: an MLflow tracking server for sweeps across machines.

A database backend (PostgreSQL: `postgresql://user@host/db`) holds runs and metrics; the server
serves the artifact root, so workers on other machines upload `loss_curve.png` and `weights.npz`
through it. It binds to 127.0.0.1 unless `--host` says otherwise (`--host 0.0.0.0` for other
machines). Workers then use `tracking.uri=http://HOST:PORT`. Starting and stopping the server process is
`gdexp.serving`'s; a bad flag is one line (exit code 2) before anything starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gdexp import errors
from gdexp.config import database_url, mask_secrets
from gdexp.serving import command, free_port, serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return errors.command("gdexp.server", lambda: _serve(argv))


def _count(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a whole number >= 1")
    return int(text)


def _serve(argv: Sequence[str] | None) -> int:
    parser = errors.Parser(prog="python -m gdexp.server", description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True,
                        help="where runs live: postgresql://user[:password]@host[:port]/db (or sqlite:///path)")
    parser.add_argument("--artifacts-destination", default=str(Path("mlruns/server-artifacts").resolve().as_uri()),
                        help="artifact root the server writes to (default mlruns/server-artifacts)")
    parser.add_argument("--host", type=errors.host, default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=errors.port, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--workers", type=_count, default=2, help="server worker processes (default 2)")
    args = parser.parse_args(argv)
    launch = command(database_url(args.backend_store_uri), host=args.host, port=args.port or free_port(args.host),
                     artifacts=args.artifacts_destination, workers=args.workers)
    return serve(launch, f"MLflow tracking server on {mask_secrets(args.backend_store_uri)}", prog="gdexp.server")


if __name__ == "__main__":
    sys.exit(main())
