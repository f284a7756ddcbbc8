"""`python -m gdexp.ui`: the MLflow UI on this project's store, for this machine only.

On a local store (`sqlite:///...`, `postgresql://...`) it runs MLflow's own server on it, bound to a loopback
address: that server has no login, so anyone who reached it could read, change or delete every run, and a
`--host` that other machines reach is refused (`python -m gdexp.server --auth` serves a team). On a tracking
server (`--uri http(s)://...`) there is nothing to start: it checks that the server takes this process's
credentials (MLflow's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) and gives its addresses.

Either way it prints the address of the regime comparison, a view of the experiment's runs table saved on the
experiment (`comparison`): MLflow 3 opens an experiment on an overview page made for GenAI traces, where none
of gdexp's runs show. The server process itself is `gdexp.serving`'s.
"""

from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C during the imports below: nothing is open yet, so end at once, quietly
    from gdexp import stopping

    stopping.exit_at_once()

import shlex
import sys
from collections.abc import Sequence

from gdexp import compat, errors, reach, stopping, store
from gdexp.config import UsageError, mask_secrets, without_credentials
from gdexp.serving import command, free_port, loopback, serve
from gdexp.store import DEFAULT_URI, default_uri, local_store_missing

__all__ = ["comparison", "hint", "main", "run_hint"]


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
    key = f"gdexp-{sweep}" if sweep else "gdexp:all-sweeps"  # no sweep's name has a ':' (sweep.name's check)
    trials = "tags.`optuna.trial` != ''"  # the trials' runs, not their sweep's parent run (no regime: a group alone)
    search = f"tags.`gdexp.sweep` = '{sweep}' and {trials}" if sweep else trials
    value = compat.shared_view(f"gdexp: {'sweep ' + sweep if sweep else 'trials'} by regime", columns=VIEW_COLUMNS,
                               group_by_tag="regime", search_filter=search, order_by="params.`optim.lr`",
                               widths={"tags.`regime_reason`": 700, "tags.`sibling_group`": 110})
    store.set_experiment_tag(uri, experiment_id, compat.SHARED_VIEW_PREFIX + key, value)
    return compat.shared_view_address(experiment_id, key)


def hint(uri: str, experiment: str, sweep: str | None = None) -> str:
    """Where to look at a sweep's regimes in the UI: the comparison's address on a tracking server; on a local
    store, the command that starts the UI and the address it will serve it at."""
    return _opening(uri, comparison(uri, experiment, sweep))


def run_hint(uri: str, experiment: str, run_id: str | None = None) -> str:
    """Where to look at one run in the UI (its page), or without `run_id` at the experiment's runs table (a
    multirun's jobs), said as `hint` says a sweep's."""
    experiment_id = store.find_experiment(uri, experiment)
    return _opening(uri, None if experiment_id is None else compat.runs_address(experiment_id, run_id))


def _opening(uri: str, fragment: str | None) -> str:
    if uri.startswith(("http://", "https://")):  # an address a browser opens: it refuses one with a user in it
        return f"{without_credentials(uri).rstrip('/')}/{fragment or ''}"
    address = f"http://127.0.0.1:5000/{fragment}" if fragment else "its runs table"
    store_flag = f" --uri {shlex.quote(mask_secrets(uri))}" if uri != default_uri() else ""  # else it opens another
    return f"{errors.interpreter()} -m gdexp.ui{store_flag}, then {address}"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gdexp.ui`: every failure through the error table (bad input: one line, exit code 2)."""
    stopping.install()
    return errors.command("gdexp.ui", lambda: _ui(argv))


def _parser() -> errors.Parser:
    parser = errors.Parser(prog="python -m gdexp.ui",
                           description="Open the MLflow UI on gdexp's store, for this machine only; on a tracking "
                                       "server, print its addresses.")
    parser.add_argument("--uri", default=default_uri(),
                        help=f"the tracking store (default {DEFAULT_URI}, or $MLFLOW_TRACKING_URI); an "
                             "http(s):// tracking server is not started but checked")
    parser.add_argument("--host", type=errors.host, default="127.0.0.1",
                        help="loopback address to bind (default 127.0.0.1; ::1 and localhost too)")
    parser.add_argument("--port", type=errors.port, default=5000, help="port (default 5000; 0 picks a free one)")
    parser.add_argument("--experiment", default="gdexp",
                        help="the experiment whose regime comparison to open (default gdexp)")
    parser.add_argument("--sweep", help="compare the trials of this sweep only (default: of every sweep)")
    return parser


def _ui(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.uri.startswith(("http://", "https://")):
        return _on_server(args.uri, args.experiment, args.sweep)
    if not loopback(args.host):
        raise UsageError(f"--host {args.host} would let other machines in, and this UI has no login: it binds a "
                         "loopback address (127.0.0.1, ::1, localhost); to share runs, start python -m gdexp.server "
                         "--auth")
    if local_store_missing(args.uri):
        raise UsageError(f"no MLflow store at {args.uri} yet: run `python -m gdexp` first")
    problem = reach.tracking_store(args.uri, read=True)
    if problem is not None:
        raise UsageError(f"--uri={mask_secrets(args.uri)} cannot be read: {mask_secrets(problem)}")
    _check_sweep(args.uri, args.experiment, args.sweep)
    launch = command(args.uri, host=args.host, port=args.port or free_port(args.host))
    view = comparison(args.uri, args.experiment, args.sweep)
    found = f"{launch.url}/{view}" if view else (
        f"none (no experiment {args.experiment!r} in this store; its experiments: "
        f"{', '.join(store.experiment_names(args.uri)) or 'none yet'}; choose one with --experiment)")
    return serve(launch, f"MLflow UI on {mask_secrets(args.uri)}", prog="gdexp.ui",
                 lines=[f"The trials by regime: {found}"])


def _check_sweep(uri: str, experiment: str, sweep: str | None) -> None:
    """`--sweep` names a sweep of the experiment (a view of no trials, saved on the experiment, would stay there)."""
    if sweep is None:
        return
    experiment_id = store.find_experiment(uri, experiment)
    if experiment_id is None:
        raise UsageError(f"--sweep {sweep}: the store holds no experiment {experiment!r} yet (--experiment)")
    held = store.sweep_names(uri, experiment_id)
    if sweep not in held:
        raise UsageError(f"--sweep {sweep}: no sweep of that name in experiment {experiment!r}; its sweeps: "
                         f"{', '.join(held) or 'none yet'}")


def _on_server(uri: str, experiment: str, sweep: str | None) -> int:
    """A tracking server is its own UI: check it takes this process's credentials, save the comparison if this
    user may change the experiment, and print the addresses."""
    problem = reach.tracking_store(uri, experiment=experiment)
    if problem is not None:
        raise UsageError(f"--uri={mask_secrets(uri)} cannot be used: {mask_secrets(problem)}")
    _check_sweep(uri, experiment, sweep)
    root = mask_secrets(uri).rstrip("/")
    print(f"MLflow UI at {root}  (a tracking server: nothing to start)")
    read_only = reach.tracking_store(uri, experiment=experiment, edit=True)
    view = comparison(uri, experiment, sweep) if read_only is None else None
    print(f"The trials by regime: {root}/{view}" if view else
          f"The trials by regime: not saved ({mask_secrets(read_only or f'no experiment {experiment!r} yet')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
