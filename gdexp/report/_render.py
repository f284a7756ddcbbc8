"""The report's tables as text: Markdown, LaTeX (booktabs, pure ASCII: it compiles with pdflatex as it is) and
HTML, from one bundle of tables (`Tables`); and as data (`as_json`: numbers as numbers)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gdexp.report._bands import bands, recommend
from gdexp.report._read import Report, with_counts
from gdexp.report._tables import best_per_variant, caption, fmt_lr, pivot, representatives

__all__ = ["Tables", "as_json", "html_page", "latex", "markdown", "tables"]


@dataclass
class Tables:
    """Everything the text formats show: the regime table and the best runs (text cells), the bands and the
    recommendations (numbers, formatted when shown)."""

    regimes: pd.DataFrame
    best: pd.DataFrame
    bands: pd.DataFrame
    recommended: pd.DataFrame
    caption: list[str]


def tables(report: Report) -> Tables:
    return Tables(pivot(report), best_per_variant(report), bands(report), recommend(report), caption(report))


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as the tables show them: learning rates as 1.00e-03, NaN as a dash."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind == "f":
            out[column] = out[column].map(fmt_lr)
    return out


def markdown(report: Report, t: Tables) -> str:
    from tabulate import tabulate

    def table(frame: pd.DataFrame, index: bool = False) -> str:
        return tabulate(frame, headers="keys", tablefmt="pipe", showindex=index, disable_numparse=True)

    return "\n".join([
        f"## Learning-rate regimes: sweep `{report.name}`", "",
        "\n>\n".join(f"> {line}" for line in t.caption), "",  # a paragraph each: rendered, lines of one would merge
        table(t.regimes, index=True), "",
        "### Just-right band per GD variant and sibling group", "", table(_shown(t.bands)), "",
        "### Recommended learning rate per GD variant", "", table(_shown(t.recommended)), "",
        "### Best run per GD variant (lowest final val_loss)", "", table(t.best), "",
    ])


# Unicode in gdexp's text -> LaTeX that pdflatex reads without packages beyond booktabs
LATEX = {"η": r"$\eta$", "λ": r"$\lambda$", "→": r"$\to$", "—": "---", "–": "--", "·": r"$\cdot$",
         "×": r"$\times$", "≤": r"$\le$", "≥": r"$\ge$", "±": r"$\pm$", "≈": r"$\approx$", "⁻¹": r"$^{-1}$",
         "²": r"$^2$", "…": r"\dots{}"}


def tex_text(text: str) -> str:
    """LaTeX source in pure ASCII: the symbols gdexp writes as their macros, accents decomposed, anything else
    dropped."""
    for char, macro in LATEX.items():
        text = text.replace(char, macro)
    text = text.replace("$$", "")  # two symbols in a row: one formula
    text = re.sub(r"(?<![\w\\])'([^'\n]+)'", r"`\1'", text)  # 'regimes' in TeX's quotes; sweep's stays
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def latex(report: Report, t: Tables) -> str:
    from tabulate import tabulate

    def esc(text: str) -> str:
        return tabulate([[text]], tablefmt="latex").splitlines()[2].removesuffix("\\\\").strip()

    def environment(frame: pd.DataFrame, text: str, kind: str, showindex: str | bool = False,
                    wrap: Sequence[str] = ()) -> list[str]:
        """One booktabs table in a floating `table` with its caption and the label tab:<kind>-<sweep>. The columns
        `wrap` names break their text over lines (a regime cell is a sentence); a table still wider than the page
        shrinks to its width (graphicx's `\\resizebox`, only when wider: `\\width` is the table's own)."""
        label = re.sub(r"[^A-Za-z0-9]+", "-", report.name)
        body = tabulate(frame, headers="keys", tablefmt="latex_booktabs", showindex=showindex, disable_numparse=True)
        if wrap:
            names = [*([frame.index.name] if showindex else []), *frame.columns]
            spec = "".join(">{\\raggedright\\arraybackslash}p{2.6cm}" if n in wrap else "l" for n in names)
            body = re.sub(r"\\begin\{tabular\}\{l+\}", lambda _: f"\\begin{{tabular}}{{{spec}}}", body, count=1)
        return ["\\begin{table}[htbp]", "\\centering", "\\small",
                "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%", body, "}",
                f"\\caption{{{text}}}", f"\\label{{tab:{kind}-{label}}}", "\\end{table}", ""]

    reasons = " ".join(f"{v}: {r}." for v, r in zip(t.recommended["GD variant"], t.recommended["reason"], strict=True))
    return tex_text("\n".join([
        "% needs \\usepackage{array,booktabs,graphicx}",
        *environment(t.regimes, " ".join(esc(line) for line in t.caption), "regimes", showindex="default",
                     wrap=[c for c in t.regimes.columns if c in set(report.runs["gd_variant"])]),
        *environment(_shown(t.bands.drop(columns="reason")), f"Just-right bands, sweep {esc(report.name)}.", "bands"),
        *environment(_shown(t.recommended.drop(columns="reason")),
                     f"Recommended learning rate per GD variant, sweep {esc(report.name)}: {esc(reasons)}",
                     "recommended"),
        *environment(t.best.drop(columns="run"), f"Best run per GD variant, sweep {esc(report.name)}.", "best"),
    ]))


def html_page(report: Report, t: Tables) -> str:
    import html

    from tabulate import tabulate

    def table(frame: pd.DataFrame, index: bool = False) -> str:
        return tabulate(frame, headers="keys", tablefmt="html", showindex=index, disable_numparse=True)

    style = ("body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "th,td{border-bottom:1px solid #ccc;padding:.3em .8em;text-align:right}th:first-child,"
             "td:first-child{text-align:left}")
    return "\n".join([
        "<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
        f"<title>gdexp: sweep {html.escape(report.name)}</title><style>{style}</style></head><body>",
        f"<h1>Learning-rate regimes: sweep {html.escape(report.name)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in t.caption),
        table(t.regimes, index=True),
        "<h2>Just-right band per GD variant and sibling group</h2>", table(_shown(t.bands)),
        "<h2>Recommended learning rate per GD variant</h2>", table(_shown(t.recommended)),
        "<h2>Best run per GD variant (lowest final val_loss)</h2>", table(t.best),
        "</body></html>", "",
    ])


def _plain(value: Any) -> Any:
    """A JSON value: NumPy numbers as Python numbers, NaN and infinities as null."""
    if value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


JSON_KEYS = {"2/λmax(0)": "lr_edge", "data set": "dataset"}  # as the MLflow metric and tag name them


def json_key(label: str) -> str:
    """A table's column label as a JSON key, in the runs' style: `recommended lr` -> `recommended_lr`, `GD variant`
    -> `gd_variant` (a program reads keys; the labels are for people)."""
    return JSON_KEYS.get(label) or re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{json_key(str(k)): _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


RUN_FIELDS = ["run_id", "trial", "state", "gd_variant", "batch_size", "optimizer", "lr", "hidden_size",
              "sibling_group", "epochs_run", "initial_train_loss", "final_train_loss", "final_val_loss",
              "val_accuracy", "test_accuracy", "diverged", "overshot", "regime", "regime_reason"]


def as_json(report: Report, t: Tables) -> str:
    """The report as data: every labelled run (numbers as numbers), the bands, the recommendations, the range test."""
    shown = with_counts(representatives(report.runs)[RUN_FIELDS])
    best = [{"gd_variant": v, "run_id": r} for v, r in zip(t.best["GD variant"], t.best["run"], strict=True)]
    return json.dumps({
        "sweep": report.name, "parent_run_id": report.parent_id, "caption": t.caption,
        "runs": _records(shown), "best": best, "bands": _records(t.bands), "recommended": _records(t.recommended),
        "range_test": {k: _plain(v) for k, v in report.range_test.items()} if report.range_test else None,
    }, indent=2, ensure_ascii=False, allow_nan=False)
