"""`python -m gdexp.server`: an MLflow tracking server for sweeps across machines.

A database backend (PostgreSQL: `postgresql://user@host/db`) holds runs and metrics; the server
serves the artifact root, so workers on other machines upload `loss_curve.png` and `weights.npz`
through it. It binds to 127.0.0.1 unless `--host` says otherwise (`--host 0.0.0.0` for other
machines). Workers then use `tracking.uri=http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gdexp.config import database_url, mask_secrets
from gdexp.ui import command, free_port, serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdexp.server", description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True,
                        help="where runs live: postgresql://user[:password]@host[:port]/db (or sqlite:///path)")
    parser.add_argument("--artifacts-destination", default=str(Path("mlruns/server-artifacts").resolve().as_uri()),
                        help="artifact root the server writes to (default mlruns/server-artifacts)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    args = parser.parse_args(argv)
    port = args.port or free_port(args.host)
    cmd = command(database_url(args.backend_store_uri), host=args.host, port=port, artifacts=args.artifacts_destination,
                  workers=args.workers)
    return serve(cmd, f"http://{args.host}:{port}", f"MLflow tracking server on {mask_secrets(args.backend_store_uri)}")


if __name__ == "__main__":
    sys.exit(main())
