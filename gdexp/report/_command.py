"""`python -m gdexp.report NAME`: read, check the order of the labels, write the files, log them to the parent run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gdexp import errors, reach, stopping, store
from gdexp.config import mask_secrets
from gdexp.regimes import REGIMES
from gdexp.report._bands import recommend
from gdexp.report._figures import plot_final_loss_vs_lr, plot_loss_curves, plot_lr_hidden_heatmap
from gdexp.report._read import Report, ReportError, build
from gdexp.report._render import as_json, html_page, latex, markdown, tables
from gdexp.report._stability import plot_sharpness
from gdexp.report._tables import caption, fmt_lr, order_problems
from gdexp.store import DEFAULT_URI

FORMATS = ("csv", "md", "tex", "html", "json", "png")


def write(report: Report, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the report files into `out`; return their paths."""
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
        report.runs.to_csv(out / "runs.csv", index=False)
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
                    plot_sharpness(report, out / "sharpness.png"))
        written += [path for path in optional if path is not None]
    return written


def log_to_parent(report: Report, out: Path) -> None:
    """The same files on the parent run, under `report/` (a finished parent stays finished)."""
    store.log_artifacts(report.uri, report.parent_id, out, artifact_path="report")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gdexp.report`: every failure through the error table (bad input: one line, exit code 2)."""
    stopping.install()
    return errors.command("gdexp.report", lambda: _report(argv))


def _parser() -> errors.Parser:
    parser = errors.Parser(
        prog="python -m gdexp.report",
        description="Turn a sweep's MLflow runs into tables (csv, md, tex, html, json) and plots for a report. "
                    "Reads only the MLflow store; writes sweeps/<name>/report/ and logs the files to the "
                    "sweep's parent run under report/.")
    parser.add_argument("name", help="the sweep's name (sweep.name, e.g. lr or regimes) or its parent run id")
    parser.add_argument("--uri", default=DEFAULT_URI,
                        help=f"MLflow tracking URI: a SQLite store or http://host:port (default {DEFAULT_URI})")
    parser.add_argument("--experiment", default="gdexp", help="MLflow experiment holding the sweep (default gdexp)")
    parser.add_argument("--out", type=Path, help="output folder (default sweeps/<name>/report)")
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
    out = args.out or Path("sweeps") / report.name / "report"
    written = write(report, out, formats)
    if not args.no_log:
        log_to_parent(report, out)
    print("\n".join(caption(report)))
    for row in recommend(report).itertuples(index=False):
        print(f"Recommended learning rate, {row[0]}: {fmt_lr(row[1])} -- {row[5]} (range test: {fmt_lr(row[3])}; "
              f"2/λmax(0): {fmt_lr(row[4])})")
    print(f"\n{len(written)} files in {out}" + ("" if args.no_log else
                                                  f", also on MLflow run {report.parent_id} under report/"))
    for path in written:
        print(f"  {path}")
    return 0
