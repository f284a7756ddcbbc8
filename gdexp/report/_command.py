"""`python -m gdexp.report NAME`: read, check the order of the labels, write the files, log them to the parent run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from gdexp import errors, reach, stopping, store
from gdexp.config import mask_secrets
from gdexp.regimes import REGIMES
from gdexp.report._bands import recommend
from gdexp.report._figures import plot_final_loss_vs_lr, plot_loss_curves, plot_lr_hidden_heatmap
from gdexp.report._landscape import animate_steps, plot_cost, plot_landscape
from gdexp.report._read import Report, ReportError, build, with_counts
from gdexp.report._render import as_json, html_page, latex, markdown, tables
from gdexp.report._stability import plot_sharpness
from gdexp.report._tables import caption, fmt_lr, lr_words, order_problems
from gdexp.store import DEFAULT_URI, default_uri

FORMATS = ("csv", "md", "tex", "html", "json", "png")


def write(report: Report, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the report files into `out`; return their paths. A single run's report is its own figures."""
    if report.single:
        return _write_run(report, out, formats)
    if not report.runs["regime"].isin(REGIMES).any():
        raise ReportError(f"sweep {report.name!r} has no finished or pruned run yet: nothing has a regime")
    problems = order_problems(report.runs)
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ReportError(f"the regime labels of sweep {report.name!r} break the order invariant, so no table was "
                          f"written: {'; '.join(problems[:10])}{more}. Run the sweep's command again: it labels "
                          "the runs of a finished sweep anew")
    out.mkdir(parents=True, exist_ok=True)
    t = tables(report)
    written = []
    if "csv" in formats:
        _runs_csv(report, out / "runs.csv")
        t.regimes.to_csv(out / "regimes.csv")
        written += [out / "runs.csv", out / "regimes.csv"]
    text = {"md": markdown, "tex": latex, "html": html_page, "json": as_json}
    for ext, render in text.items():
        if ext in formats:
            (out / f"regimes.{ext}").write_text(render(report, t), encoding="utf-8")
            written.append(out / f"regimes.{ext}")
    if "png" in formats:
        written += [plot_loss_curves(report, out / "loss_curves.png"),
                    plot_final_loss_vs_lr(report, out / "final_loss_vs_lr.png")]
        optional = (plot_lr_hidden_heatmap(report, out / "lr_hidden_heatmap.png"),
                    plot_sharpness(report, out / "sharpness.png"), *_seen(report, out))
        written += [path for path in optional if path is not None]
    return written


def _seen(report: Report, out: Path) -> tuple[Path | None, Path | None, Path | None]:
    """loss_landscape.png, its linear-regression block step by step (loss_landscape.gif) and cost.png, each when
    the runs carry what it draws."""
    return (plot_landscape(report, out / "loss_landscape.png"), animate_steps(report, out / "loss_landscape.gif"),
            plot_cost(report, out / "cost.png"))


def _runs_csv(report: Report, path: Path) -> None:
    with_counts(report.runs).to_csv(path, index=False)


def _write_run(report: Report, out: Path, formats: Sequence[str]) -> list[Path]:
    """One run: runs.csv (its row) and the figures of its own steps and cost."""
    if report.parent_id not in report.trajectories and report.parent_id not in report.costs:
        raise ReportError(f"run {report.parent_id} ({report.name}) recorded neither a trajectory nor its cost: run it "
                          "again with diagnostics.trajectory=true for its path on the loss surface")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "csv" in formats:
        _runs_csv(report, out / "runs.csv")
        written.append(out / "runs.csv")
    if "png" in formats:
        written += [path for path in _seen(report, out) if path is not None]
    return written


def log_to_parent(report: Report, written: Sequence[Path]) -> list[str]:
    """The files this report wrote, on the parent run under `report/`, in place of the last report's (a finished
    parent stays finished): a report of fewer formats (`--formats md,png`) left the files of an older one beside
    them, of another set of runs, both in the output folder and on the run. Returns the older files that stayed
    (a user with EDIT, not MANAGE, on a server with users may not delete them)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gdexp-report-") as tmp:
        for path in written:
            shutil.copy2(path, Path(tmp) / path.name)
        return store.log_artifacts(report.uri, report.parent_id, Path(tmp), artifact_path="report", replace=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gdexp.report`: every failure through the error table (bad input: one line, exit code 2)."""
    stopping.install()
    return errors.command("gdexp.report", lambda: _report(argv))


def _parser() -> errors.Parser:
    parser = errors.Parser(
        prog="python -m gdexp.report",
        description="Turn a sweep's MLflow runs into tables (csv, md, tex, html, json) and plots for a report, or "
                    "one run into the figures of its own steps and cost. Reads only the MLflow store; writes "
                    "sweeps/<name>/report/ (one run: sweeps/runs/<run id>/report/) and logs the files to the "
                    "sweep's parent run (or the run) under report/.")
    parser.add_argument("name", help="the sweep's name (sweep.name, e.g. lr or regimes), its parent run id, or the id "
                                     "of one run")
    parser.add_argument("--uri", default=default_uri(),
                        help=f"MLflow tracking URI: a SQLite store or http://host:port (default {DEFAULT_URI}, or "
                             "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", default="gdexp", help="MLflow experiment holding the sweep (default gdexp)")
    parser.add_argument("--out", type=Path, help="output folder (default sweeps/<name>/report, or "
                                                 "sweeps/runs/<run id>/report)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (default all)")
    parser.add_argument("--fraction", type=float, default=0.9,
                        help="runs.csv's epochs_to_<N>pct: epochs until the val loss made this share of its "
                             "decrease from the initial to the best value (default 0.9)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    return parser


def _report(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise ReportError(f"--formats={args.formats!r}: choose from {', '.join(FORMATS)}")
    problem = reach.tracking_store(args.uri, read=True, experiment=args.experiment)
    if problem is not None:
        raise ReportError(f"--uri={mask_secrets(args.uri)} cannot be read: {mask_secrets(problem)}")
    if not args.no_log and (problem := reach.tracking_store(args.uri, experiment=args.experiment, edit=True)):
        raise ReportError(f"the report's files go to the sweep's parent run, but {mask_secrets(problem)}; --no-log "
                          "writes nothing to the store")
    if args.out is not None and (bad := reach.writable_folder(args.out)) is not None:
        raise ReportError(f"--out={args.out} cannot be used: {bad}")
    report = build(args.name, uri=args.uri, experiment=args.experiment, fraction=args.fraction)
    out = args.out or report.folder
    written = write(report, out, formats)
    kept = [] if args.no_log else log_to_parent(report, written)
    if kept:
        errors.say(f"gdexp.report: note: the older {', '.join(kept)} stayed on the run beside this report's files: "
                   "deleting an artifact on this server needs MANAGE on the experiment")
    if report.single:
        run = report.runs.iloc[0]
        # a run of one learning rate that recorded no path: say how to get one (a range test has none to show)
        why = (" (its path on the loss surface, loss_landscape.png, needs a run with diagnostics.trajectory=true)"
               if report.parent_id not in report.trajectories and math.isfinite(run["lr"]) else "")
        print(f"Run {report.parent_id} ({report.name}, experiment {report.experiment!r}): {run['gd_variant']} GD, "
              f"{lr_words(run['lr'], 6)}, {run['regime'] or 'no regime'}; written: "
              f"{', '.join(p.name for p in written)}{why}.")
    else:
        print("\n".join(caption(report)))
        for row in recommend(report).to_dict(orient="records"):
            which = ", ".join(str(row[k]) for k in ("data set", "GD variant") if k in row)
            print(f"Recommended learning rate, {which}: {fmt_lr(row['recommended lr'])} -- {row['reason']} (range "
                  f"test: {fmt_lr(row['range test'])}; 2/λmax(0): {fmt_lr(row['2/λmax(0)'])})")
    print(f"\n{len(written)} files in {out}" + ("" if args.no_log else
                                                  f", also on MLflow run {report.parent_id} under report/"))
    for path in written:
        print(f"  {path}")
    return 0
