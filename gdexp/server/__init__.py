"""`python -m gdexp.server`: an MLflow tracking server for sweeps across machines, and for a team or a course.

`_command` is the command (its flags and refusals); `_auth` sets up MLflow's basic-auth app for `--auth` (users,
per-experiment permissions, an admin whose password never sits in a file or on a command line); `_users` is the
`user` subcommand that manages the users. Starting and stopping the server process is `gdexp.serving`'s.
"""

from __future__ import annotations

from gdexp.server._command import main

__all__ = ["main"]
