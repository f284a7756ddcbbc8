"""`python -m gdexp.server`: an MLflow tracking server for sweeps across machines, and for a team or a course.

`_command` is the command (its flags and refusals); `_auth` sets up MLflow's basic-auth app for `--auth` (users,
per-experiment permissions, an admin whose password never sits in a file or on a command line); `_users` is the
`user` subcommand that manages the users. Starting and stopping the server process is `gdexp.serving`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command (`_command.main`), imported when called: `python -m gdexp.server` imports this package before
    its __main__, which ends a Ctrl-C during the imports (MLflow's) in one line."""
    from gdexp.server._command import main as command

    return command(argv)
