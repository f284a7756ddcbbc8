"""`python -m gdexp.report NAME`: read, check the order of the labels, write the files, log them to the parent run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gdexp import store
from gdexp.regimes import REGIMES
from gdexp.report._figures import plot_final_loss_vs_lr, plot_loss_curves, plot_lr_hidden_heatmap
from gdexp.report._read import Report, ReportError, build
from gdexp.report._stability import plot_sharpness, recommend
from gdexp.report._tables import best_per_variant, caption, html_page, latex, markdown, order_problems, pivot
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
    table, best, recommended = pivot(report), best_per_variant(report), recommend(report)
    written = []
    if "csv" in formats:
        report.runs.to_csv(out / "runs.csv", index=False)
        table.to_csv(out / "regimes.csv")
        written += [out / "runs.csv", out / "regimes.csv"]
    text = {"md": markdown, "tex": latex, "html": html_page}
    for ext, render in text.items():
        if ext in formats:
            (out / f"regimes.{ext}").write_text(render(report, table, best, recommended), encoding="utf-8")
            written.append(out / f"regimes.{ext}")
    if "json" in formats:
        doc = {"sweep": report.name, "parent_run_id": report.parent_id, "caption": caption(report),
               "regimes": json.loads(table.reset_index().to_json(orient="records")),
               "best_per_variant": json.loads(best.to_json(orient="records")), "range_test": report.range_test,
               "recommended": json.loads(recommended.to_json(orient="records", force_ascii=False))}
        (out / "regimes.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        written.append(out / "regimes.json")
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
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        parser.error(f"--formats={args.formats!r}: choose from {', '.join(FORMATS)}")
    try:
        report = build(args.name, uri=args.uri, experiment=args.experiment, fraction=args.fraction)
        out = args.out or Path("sweeps") / report.name / "report"
        written = write(report, out, formats)
        if not args.no_log:
            log_to_parent(report, out)
    except ReportError as exc:
        print(f"gdexp.report: {exc}", file=sys.stderr)
        return 2
    print("\n".join(caption(report)))
    for row in recommend(report).itertuples(index=False):
        print(f"Recommended learning rate, {row[0]}: {row[1]} -- {row[4]} (range test: {row[2]}; 2/λmax(0): {row[3]})")
    print(f"\n{len(written)} files in {out}" + ("" if args.no_log else
                                                  f", also on MLflow run {report.parent_id} under report/"))
    for path in written:
        print(f"  {path}")
    return 0

