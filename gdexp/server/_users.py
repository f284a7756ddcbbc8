"""`python -m gdexp.server user ...`: the users of a server started with `--auth`, and their permissions.

It speaks MLflow's auth REST API through MLflow's own client (`mlflow.server.get_app_client("basic-auth")`), as
an admin: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD hold an admin's credentials (`admin` and the
password of GDEXP_SERVER_ADMIN_PASSWORD, or another admin's), MLFLOW_TRACKING_SERVER_CERT_PATH the CA of a
certificate no CA of this machine signed. A new password comes from the environment variable GDEXP_USER_PASSWORD
or, on a terminal, from a prompt: never from a flag, which `ps` would show to every user of the machine.
"""

from __future__ import annotations

import getpass
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from gdexp import compat, errors, reach, store
from gdexp.config import UsageError, mask_secrets
from gdexp.server._auth import PERMISSIONS

__all__ = ["main"]

NEW_PASSWORD = "GDEXP_USER_PASSWORD"


def main(argv: Sequence[str]) -> int:
    return errors.command("gdexp.server user", lambda: _user(argv))


def _parser() -> errors.Parser:
    parser = errors.Parser(prog="python -m gdexp.server user",
                           description="Manage the users of a gdexp.server started with --auth, as an admin "
                                       "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). New passwords come "
                                       f"from ${NEW_PASSWORD} or a prompt.")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=errors.Parser)
    add = actions.add_parser("add", help="add a user (and give it a permission on an experiment)")
    grant = actions.add_parser("grant", help="give a user a permission on an experiment (made if missing)")
    password = actions.add_parser("password", help="change a user's password")
    delete = actions.add_parser("delete", help="remove a user")
    for action in (add, grant, password, delete):
        action.add_argument("name", help="the user's name")
        action.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                            help="the server, https://host:port (default $MLFLOW_TRACKING_URI)")
    add.add_argument("--experiment", help="an experiment to give the user --permission on")
    grant.add_argument("--experiment", required=True, help="the experiment")
    for action in (add, grant):
        action.add_argument("--permission", choices=PERMISSIONS, default="EDIT",
                            help="READ, EDIT (run sweeps into it), MANAGE (and grant others), NO_PERMISSIONS "
                                 "(default EDIT)")
    return parser


def _user(argv: Sequence[str]) -> None:
    args = _parser().parse_args(argv)
    if not args.uri or not args.uri.startswith(("http://", "https://")):
        raise UsageError("give the server with --uri https://host:port (or set MLFLOW_TRACKING_URI)")
    problem = reach.http_server(args.uri, experiment="Default")  # it answers, and takes these credentials
    if problem is not None:
        raise UsageError(f"--uri={mask_secrets(args.uri)} cannot be used: {mask_secrets(problem)}")
    me = compat.mlflow_get(args.uri, compat.CURRENT_USER, timeout=reach.HTTP_TIMEOUT_S)
    if me.status_code == 404:
        raise UsageError(f"--uri={mask_secrets(args.uri)} has no users: it was started without --auth")
    if me.status_code != 200:
        raise UsageError(f"asked who these credentials are, the server answered {me.status_code} {me.reason}")
    if not me.json()["user"]["is_admin"]:
        raise UsageError(f"user {me.json()['user']['username']!r} is not an admin of the server: managing users "
                         "takes an admin's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    from mlflow.exceptions import RestException

    with warnings.catch_warnings():  # MLflow's server modules warn, as they load, about their own dependencies
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        client = get_app_client("basic-auth", tracking_uri=args.uri)
    try:
        _act(client, args)
    except RestException as exc:  # the server refused: a name taken or unknown, a password too short
        raise UsageError(f"the server refused to {args.action} user {args.name!r}: {exc.message}") from None


def _act(client: Any, args: Any) -> None:
    if args.action == "add":
        if _exists(client, args.name):  # the server's own refusal is its database's UNIQUE constraint, verbatim
            raise UsageError(f"user {args.name!r} exists already: to give it a permission, user grant; a new "
                             "password, user password")
        client.create_user(args.name, _new_password(args.name))
        print(f"user {args.name!r} added; until given more, it has the server's default permission on every "
              "experiment")
    if args.action in ("add", "grant") and args.experiment:
        experiment_id = store.ensure_experiment(args.uri, args.experiment)
        client.grant_user_permission(args.name, "experiment", experiment_id, args.permission)
        print(f"user {args.name!r} has {args.permission} on experiment {args.experiment!r}")
    if args.action == "password":  # one's own password: MLflow asks for the current one too
        own = os.environ.get("MLFLOW_TRACKING_USERNAME") == args.name
        client.update_user_password(args.name, _new_password(args.name),
                                    current_password=os.environ.get("MLFLOW_TRACKING_PASSWORD") if own else None)
        print(f"the password of user {args.name!r} is changed")
    if args.action == "delete":
        client.delete_user(args.name)
        print(f"user {args.name!r} removed")


def _exists(client: Any, name: str) -> bool:
    from mlflow.exceptions import RestException

    try:
        client.get_user(name)
    except RestException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _new_password(name: str) -> str:
    """From GDEXP_USER_PASSWORD, else asked twice on a terminal; one line when neither can be had."""
    password = os.environ.get(NEW_PASSWORD, "")
    if password:
        return password
    if not sys.stdin.isatty():
        raise UsageError(f"the new password of user {name!r} comes from the environment variable {NEW_PASSWORD} "
                         "(or a prompt, on a terminal): set it")
    password = getpass.getpass(f"new password of user {name!r}: ")
    if password != getpass.getpass("again: "):
        raise UsageError("the two passwords differ")
    return password
