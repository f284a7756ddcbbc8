"""`python -m gdexp.report NAME`: a sweep's runs, read from MLflow, as the tables and plots a report needs.

NAME is a sweep's name (`sweep.name`) or its parent run id; the id of any other run (a single `python -m gdexp`
run, one trial) gives that run's own figures, `loss_landscape.png` (.gif) and `cost.png` (and its row in `runs.csv`),
under `sweeps/runs/<run id>/report/`. The report reads only the MLflow store
(a SQLite file or a tracking server): the parent run, its child runs with their params, final metrics
and tags, and each child's `val_loss` history. It writes under `sweeps/<name>/report/` (or `--out`)
and logs the same files to the sweep's parent run (folder `report/`):

- `runs.csv`: one row per run, raw numbers as stored;
- `regimes.{csv,md,tex,html,json}`: learning rate (and data set, hidden size) down, GD variant across, each cell
  the final validation loss (accuracy) and regime, with the epochs each run ran, plus the best run per
  variant and a caption saying which runs the table covers -- and, when the experiment holds a
  learning-rate range test on the same data, GD variant and optimizer, its suggestion beside the
  sweep's best learning rates;
- `loss_curves.png`, `final_loss_vs_lr.png`, `lr_hidden_heatmap.png` (the last when the sweep varied
  the hidden size);
- `loss_landscape.png` (when runs recorded their trajectory, `diagnostics.trajectory`): each GD variant's
  path on the training-loss surface at a too-small, the just-right and a too-large step (`_landscape.py`),
  and `loss_landscape.gif`, its linear-regression block step by step (when a run has two parameters);
- `cost.png` (when runs recorded what their updates cost: every run of this gdexp): the training loss
  against the examples processed and the seconds the updates took, one line per GD variant.

The regime tables and figures hold the runs that have a regime: finished and pruned trials. An
interrupted or failed trial (`regime=none`) is listed in `runs.csv` and counted apart in the caption.
Before it writes anything, the report checks the order invariant of the labels
(`regimes.order_violations`) and refuses, naming the runs, when they break it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gdexp.report._command import FORMATS, log_to_parent, main, write
    from gdexp.report._read import Report, ReportError, build, epochs_to
    from gdexp.report._tables import best_per_variant, caption, order_problems, pivot

__all__ = ["FORMATS", "Report", "ReportError", "best_per_variant", "build", "caption", "epochs_to", "log_to_parent",
           "main", "order_problems", "pivot", "write"]

# Each name is imported from its module when first asked for (PEP 562): `python -m gdexp.report` imports this
# package before its __main__, which ends a Ctrl-C during the heavy imports (MLflow, pandas) in one line; imported
# here, they came before it and such a Ctrl-C printed a traceback from the middle of a library.
_HOMES = {"FORMATS": "_command", "log_to_parent": "_command", "main": "_command", "write": "_command",
          "Report": "_read", "ReportError": "_read", "build": "_read", "epochs_to": "_read",
          "best_per_variant": "_tables", "caption": "_tables", "order_problems": "_tables", "pivot": "_tables"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
