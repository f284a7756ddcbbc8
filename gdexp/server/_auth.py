"""MLflow's basic-auth app for `python -m gdexp.server --auth`: its folder, its secret key, its config, its admin.

MLflow's app (`mlflow server --app-name basic-auth`, the `mlflow[auth]` extra) asks every request for a user
and password, keeps users, their passwords (hashed) and their per-experiment permissions (READ, EDIT, MANAGE,
NO_PERMISSIONS) in a database of its own, and gives a user with no permission on an experiment the default
permission. Left to its defaults it would keep that database in the folder the server starts in; gdexp keeps it
in a folder that only its owner may enter (`--auth-dir`, mode 0700):
- `basic_auth.db`: the users, passwords (hashed) and permissions (SQLite);
- `basic_auth.ini`: MLflow's auth config (read from MLFLOW_AUTH_CONFIG_PATH): the default permission, that
  database, the admin's name; no password;
- `secret_key`: the key Flask signs its CSRF tokens with (MLFLOW_FLASK_SERVER_SECRET_KEY), made once, mode 0600,
  so the tokens of every worker and every restart agree.
The admin's password comes from GDEXP_SERVER_ADMIN_PASSWORD and reaches MLflow as MLFLOW_AUTH_ADMIN_PASSWORD, in
the environment only. MLflow reads it only to create the admin, at the first start; afterwards the database's
password stands and the variable is ignored, so `check_admin` asks the started server whether the two agree.
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gdexp import compat, reach
from gdexp.config import UsageError

__all__ = ["ADMIN", "PASSWORD_VARIABLE", "PERMISSIONS", "AuthFolder", "admin_password", "check_admin"]

ADMIN = "admin"  # the admin's user name (MLflow's admin_username)
PASSWORD_VARIABLE = "GDEXP_SERVER_ADMIN_PASSWORD"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")  # MLflow's names
PUBLISHED_DEFAULT = "password1234"  # the admin password older MLflow versions shipped: known to everybody


def admin_password() -> str:
    """The admin's password, from GDEXP_SERVER_ADMIN_PASSWORD (never a flag, which `ps` shows, nor a file in a
    repository); refused when missing, MLflow's published default, or not a password MLflow takes."""
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if not password:
        raise UsageError(f"--auth needs the admin's password in the environment variable {PASSWORD_VARIABLE} "
                         "(12 characters or more; never on the command line): set it, then start again")
    if password == PUBLISHED_DEFAULT:
        raise UsageError(f"{PASSWORD_VARIABLE} is MLflow's old default admin password, which everybody knows: "
                         "choose another")
    problem = compat.mlflow_password_problem(password)
    if problem is not None:
        raise UsageError(f"{PASSWORD_VARIABLE} is not a password MLflow takes: {problem}")
    return password


@dataclass(frozen=True)
class AuthFolder:
    """The folder of the auth app's database, config and secret key (module docstring)."""

    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / "secret_key"

    def problem(self) -> str | None:
        """Why the folder cannot hold the auth app's files, or None; asked before anything is made."""
        if self.path.exists() and not self.path.is_dir():
            return f"--auth-dir {self.path} is a file, not a folder"
        if self.key_file.exists():
            mode = self.key_file.stat()
            if mode.st_uid != os.getuid() or stat.S_IMODE(mode.st_mode) & 0o077:
                return (f"{self.key_file} (the server's secret key) can be read by other users: chmod 600 it (and "
                        "chown it to the user that runs the server)")
            return None
        return reach.writable_folder(self.path)

    def prepare(self, default_permission: str, password: str) -> dict[str, str]:
        """Make the folder (0700), the secret key once (0600) and MLflow's auth config; return the environment
        `mlflow server --app-name basic-auth` reads them from."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            handle = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(handle, "w") as out:
                out.write(secrets.token_urlsafe(48))
        config = self.path / "basic_auth.ini"
        config.write_text("# written by python -m gdexp.server --auth at every start; it holds no password\n"
                          "[mlflow]\n"
                          f"default_permission = {default_permission}\n"
                          f"database_uri = sqlite:///{self.path / 'basic_auth.db'}\n"
                          f"admin_username = {ADMIN}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                          encoding="utf-8")
        return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": self.key_file.read_text(encoding="utf-8").strip()}


def check_admin(url: str, context: ssl.SSLContext | None, password: str, folder: Path) -> None:
    """Raise UsageError unless the started server takes `password` for its admin: MLflow set the admin's
    password at the first start, from the variable as it was then, and ignores it since."""
    token = base64.b64encode(f"{ADMIN}:{password}".encode()).decode()
    request = urllib.request.Request(f"{url}{compat.CURRENT_USER}", headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=reach.HTTP_TIMEOUT_S, context=context):
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise UsageError(f"the server answered {exc.code} {exc.reason} when asked who its admin is") from None
    except urllib.error.URLError as exc:
        raise RuntimeError(f"the MLflow server stopped answering ({exc.reason})") from None
    raise UsageError(f"{PASSWORD_VARIABLE} is not the password of the server's admin: its users in {folder} were "
                     "made at an earlier start, and MLflow keeps the admin's password from then; give that one "
                     "(change it with: python -m gdexp.server user password admin), or remove the folder to "
                     "start over with no users")
