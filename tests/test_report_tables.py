"""The report's tables, order check and figures from hand-made runs, in milliseconds (no store, no sweep)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from gdexp import plots, report
from gdexp.report import Report, ReportError
from gdexp.report._bands import bands, recommend
from gdexp.report._figures import plot_loss_curves, uniform_bins
from gdexp.report._render import as_json, latex, tables, tex_text
from gdexp.report._stability import plot_sharpness


def row(trial: int, lr: float, regime: str, *, variant: str = "minibatch", val: float = 0.5, state: str = "COMPLETE",
        status: str = "FINISHED", hidden: float = 64.0, epochs: float = 10.0, overshot: bool = False,
        group: str = "h64-127") -> dict[str, Any]:
    """One run as `report.build` reads it from MLflow."""
    return {"run_id": f"run{trial:02d}", "run_name": f"lr{lr:g}-h{hidden:g}-{variant}-sgd", "trial": trial,
            "state": state, "status": status, "dataset": "digits", "gd_variant": variant, "batch_size": "32",
            "optimizer": "sgd", "lr": lr, "hidden_size": hidden, "hidden_layers": 1.0,
            "n_params": 74 * hidden + 10, "epochs_run": epochs, "initial_train_loss": 2.3,
            "final_train_loss": val / 2,
            "best_train_loss": val, "final_val_loss": val, "best_val_loss": val, "val_accuracy": 0.9,
            "test_loss": val, "test_accuracy": 0.9, "epochs_to_90pct": 3.0, "diverged": False, "overshot": overshot,
            "regime": regime, "regime_reason": "", "sibling_group": group,
            "ratio_start": math.nan, "ratio_end": math.nan, "lr_edge": math.nan, "edge": math.nan,
            "edge_of_stability": "", "train_time_s": 0.1}


def make(rows: list[dict[str, Any]]) -> Report:
    curves = {r["run_id"]: np.geomspace(2.3, r["final_val_loss"], int(r["epochs_run"]) + 1) for r in rows}
    train = {r["run_id"]: np.geomspace(2.3, r["final_train_loss"], int(r["epochs_run"]) + 1) for r in rows}
    return Report("toy", "parent0", "gdexp", "sqlite:///none.db", pd.DataFrame(rows), curves, train, None, 0.9)


def grid() -> list[dict[str, Any]]:
    """Three variants, four learning rates; at lr 1 batch is just right and stochastic too large (the issue's
    case of a majority band that painted a too-large run green); one run of each other kind."""
    rows = []
    for i, (variant, labels, losses) in enumerate([
        ("batch", ["too_small", "too_small", "just_right", "too_large"], [2.2, 1.5, 0.5, 2.0]),
        ("minibatch", ["too_small", "just_right", "just_right", "too_large"], [1.0, 0.1, 0.11, 2.4]),
        ("stochastic", ["too_small", "just_right", "too_large", "too_large"], [0.4, 0.09, 2.6, 8.0]),
    ]):
        rows += [row(4 * i + j, lr, label, variant=variant, val=loss)
                 for j, (lr, label, loss) in enumerate(zip([1e-3, 1e-1, 1.0, 10.0], labels, losses, strict=True))]
    rows[-1].update(overshot=True)
    rows += [row(20, 3.0, "too_large", variant="minibatch", val=2.2, state="PRUNED", epochs=2),
             row(21, 0.3, "none", variant="minibatch", state="FAIL", status="KILLED", epochs=4),
             row(22, 0.03, "none", variant="minibatch", state="FAIL", status="FAILED", epochs=1)]
    return rows


def test_tables_leave_out_interrupted_and_failed_runs_and_the_caption_agrees() -> None:
    toy = make(grid())
    table = report.pivot(toy)
    assert list(table.columns) == ["hidden size", "batch", "batch epochs", "minibatch", "minibatch epochs",
                                   "stochastic", "stochastic epochs"]
    assert list(table.index) == ["1.00e-03", "1.00e-01", "1.00e+00", "3.00e+00", "1.00e+01"]
    assert table.loc["3.00e+00", "minibatch"] == "train 1.1, val 2.2 (90.0%) too_large, pruned"
    assert table.loc["3.00e+00", "minibatch epochs"] == "2" and table.loc["3.00e+00", "batch"] == "—"
    assert "3.00e-01" not in table.index and "3.00e-02" not in table.index, "interrupted and failed runs are out"
    covered, _cells, counts = report.caption(toy)
    assert "13 runs with a regime (12 finished, 1 pruned, 0 diverged); 1 interrupted, 1 failed, not counted" in covered
    assert counts == "Regimes: 4 too_small, 4 just_right, 5 too_large."
    running = make([*grid(), row(40, 0.5, "none", state="RUNNING", status="RUNNING")])  # a report during a sweep
    assert "1 interrupted, 1 running, 1 failed, not counted" in report.caption(running)[0]


def test_the_report_refuses_labels_out_of_order_and_names_the_runs(tmp_path: Path) -> None:
    rows = grid()
    rows[3].update(regime="too_small")  # batch at lr 10, above batch's just-right run at lr 1
    rows[9].update(regime="too_small")  # stochastic at lr 0.1, below its too_large runs: still in order
    rows[1].update(regime="just_right")  # batch at lr 0.1, below batch's too_small ... lr 10 now
    with pytest.raises(ReportError) as caught:
        report.write(make(rows), tmp_path / "out")
    message = str(caught.value)
    assert "break the order invariant" in message
    for words in ("trial 1 (run run01) (lr 0.1) is just_right but trial 3 (run run03) (lr 10, a larger step) is "
                  "too_small", "trial 2 (run run02) (lr 1) is just_right but trial 3 (run run03) (lr 10, a larger "
                  "step) is too_small"):
        assert words in message
    assert "trial 9 " not in message and "minibatch" not in message
    assert not (tmp_path / "out").exists(), "nothing is written"
    assert report.order_problems(make(grid()).runs) == []


def test_order_is_checked_per_capacity_group() -> None:
    """A tiny network may be too_large at a step a larger one takes in its stride: other groups, no conflict."""
    rows = [row(0, 0.1, "too_small", group="h64-127"), row(1, 0.5, "too_large", group="h8-15", hidden=11),
            row(2, 1.0, "just_right", group="h64-127"), row(3, 3.0, "too_large", group="h64-127")]
    assert report.order_problems(make(rows).runs) == []
    rows[1]["sibling_group"] = "h64-127"
    assert report.order_problems(make(rows).runs) != []


def test_a_run_that_overshot_may_stay_too_large_below_the_best() -> None:
    rows = [row(0, 1e-3, "too_large", overshot=True, val=3.0), row(1, 1e-2, "too_small", val=1.0),
            row(2, 1e-1, "just_right", val=0.1)]
    assert report.order_problems(make(rows).runs) == []
    rows[0]["overshot"] = False
    assert report.order_problems(make(rows).runs) == [
        "trial 0 (run run00) (lr 0.001) is too_large but trial 1 (run run01) (lr 0.01, a larger step) is too_small",
        "trial 0 (run run00) (lr 0.001) is too_large but trial 2 (run run02) (lr 0.1, a larger step) is just_right"]


def test_epochs_to_is_empty_for_a_run_that_did_not_learn() -> None:
    assert math.isnan(report.epochs_to(np.array([2.3, 2.29, 2.28, 2.27]), 0.9, min_progress=0.1))
    assert math.isnan(report.epochs_to(np.array([2.3, 2.4, np.nan]), 0.9, min_progress=0.1))
    assert report.epochs_to(np.array([2.3, 1.0, 0.5, 0.45, 0.44]), 0.9, min_progress=0.1) == 2.0


def test_heatmap_bins_keep_the_empty_ones() -> None:
    axis, index = uniform_bins(np.log10([2.3e-4, 1.2e-2, 0.05, 9.0]), 0.5)
    assert axis.tolist() == [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5]
    assert index.tolist() == [0, 4, 5, 9]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Every figure `write` draws for `grid()`, by file name, and the folder of the files (drawn once)."""
    figures: dict[str, Any] = {}
    save, folder = plots.save, tmp_path_factory.mktemp("figures")

    def keep(fig: Any, path: Path) -> Path:
        figures[path.name] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", keep)
        report.write(make(grid()), folder, ["png"])
    return figures, folder


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[16:24]
    return int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")


def test_final_loss_vs_lr_colours_each_point_by_its_own_regime_and_keeps_pruned_runs_apart(
        drawn: tuple[dict[str, Any], Path]) -> None:
    fig = drawn[0]["final_loss_vs_lr.png"]
    mains = [ax for ax in fig.axes if ax.get_xlabel() == "learning rate"]
    strips = [ax for ax in fig.axes if [t.get_text() for t in ax.get_yticklabels()] == ["diverged", "pruned"]]
    assert len(mains) == 2 and len(strips) == 2
    finished = {(r["lr"], r["final_train_loss"]): r["regime"] for r in grid() if r["state"] == "COMPLETE"}

    def points(ax: Any) -> dict[tuple[float, float], str]:
        seen = {}
        for collection in ax.collections:
            faces, edges = collection.get_facecolors(), collection.get_edgecolors()
            for i, (x, y) in enumerate(collection.get_offsets()):
                hollow = len(faces) and tuple(faces[i % len(faces)][:3]) == (1.0, 1.0, 1.0)
                colour = (edges if hollow else faces)[i % len(edges if hollow else faces)]
                seen[(float(x), float(y))] = matplotlib.colors.to_hex(colour)
        return seen

    assert points(mains[0]) == {p: plots.REGIME_COLORS[r].lower() for p, r in finished.items()}
    pruned = points(strips[0])
    assert len(pruned) == 1 and next(iter(pruned)) [0] == 3.0, "the pruned run sits in the strip, not on the axes"
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert {"too_small", "just_right", "too_large", "batch", "minibatch", "stochastic",
            "recommended lr\n(one per GD variant)"} <= set(labels)


def test_loss_curves_show_the_training_curve_of_each_regime(drawn: tuple[dict[str, Any], Path]) -> None:
    (figures, folder), fig = drawn, drawn[0]["loss_curves.png"]
    panels = [ax for ax in fig.axes if ":" in ax.get_title()]
    assert [ax.get_title().split(" (")[0] for ax in panels] == [
        f"{v}: {r}" for v in ("batch", "minibatch", "stochastic") for r in ("too_small", "just_right", "too_large")]
    assert all(ax.get_ylabel() == "training loss" for ax in panels[::3])
    width, _ = png_size(folder / "loss_curves.png")
    assert fig.dpi == 150 and width >= 1200
    stochastic = [c for ax in panels[6:] for c in ax.collections if isinstance(c, LineCollection)]
    assert len({matplotlib.colors.to_hex(rgba) for c in stochastic for rgba in c.get_colors()}) == 4, \
        "each of the four learning rates has its colour"
    assert any(ax.get_ylabel() == "learning rate" for ax in fig.axes), "a colour bar says which colour is which lr"
    assert png_size(folder / "final_loss_vs_lr.png")[0] >= 1200 and figures["final_loss_vs_lr.png"].dpi == 150


def test_pruned_runs_that_stop_together_share_one_marker_with_their_count() -> None:
    rows = [row(i, lr, "too_large", val=2.3, state="PRUNED", epochs=5) for i, lr in enumerate([2.0, 3.0, 5.0, 8.0])]
    rows.append(row(9, 0.5, "just_right", val=0.1))
    fig_holder: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", lambda fig, path: fig_holder.setdefault("fig", fig) and path)
        plot_loss_curves(make(rows), Path("unused.png"))
    (ax,) = [a for a in fig_holder["fig"].axes if a.get_title().startswith("minibatch: too_large")]
    circles = [c for c in ax.collections if not isinstance(c, LineCollection)]
    assert len(circles) == 1 and [t.get_text() for t in ax.texts] == ["4"]


def test_readme_shows_the_committed_report_of_the_regimes_sweep() -> None:
    """README's excerpt and figures are the ones docs/make_figures.sh made: each excerpt row is in docs/regimes.md."""
    root = Path(__file__).resolve().parents[1]
    readme, made = (root / "README.md").read_text(), (root / "docs" / "regimes.md").read_text()
    for figure in ("loss_curves.png", "final_loss_vs_lr.png"):
        assert f"](docs/{figure})" in readme and (root / "docs" / figure).stat().st_size > 10_000
    rows = [line.split("|")[1:-1] for line in readme.splitlines() if line.startswith("| 1.00e")]
    assert len(rows) == 6
    for lr, *cells in rows:
        line = next(x for x in made.splitlines() if x.startswith(f"| {lr.strip()} "))
        assert all(f" {cell.strip()} " in line for cell in cells), (lr, line)


def test_the_band_and_the_recommended_learning_rate_per_variant() -> None:
    rows = [row(i, lr, regime, val=0.1) for i, (lr, regime) in enumerate(
        [(0.01, "too_small"), (0.1, "just_right"), (0.2, "just_right"), (0.4, "just_right"), (0.6, "just_right"),
         (1.0, "too_large")])]
    rows += [row(10, 0.2, "just_right", group="h8-15", hidden=11), row(11, 0.3, "too_large", group="h8-15", hidden=11)]
    toy = make(rows)
    table = bands(toy).set_index("sibling group")
    assert table.loc["h64-127", ["band low", "band high", "just-right runs", "smallest too-large lr"]].tolist() == \
        [0.1, 0.6, 4, 1.0]
    assert table.loc["h64-127", "recommended lr"] == 0.4, "the largest just-right rate at most half the edge"
    assert table.loc["h8-15", "recommended lr"] == 0.2 and "smallest of them" in table.loc["h8-15", "reason"]
    rec = recommend(toy).set_index("GD variant")
    assert rec.loc["minibatch", "recommended lr"] == 0.4 and rec.loc["minibatch", "sibling group"] == "h64-127"
    assert "largest stable step with a margin of 2x" in rec.loc["minibatch", "reason"]
    assert "0.1 to 0.6 (4 just-right runs)" in rec.loc["minibatch", "reason"]


def test_json_holds_numbers_and_tex_is_pure_ascii_latex(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess

    toy = make(grid())
    t = tables(toy)
    doc = json.loads(as_json(toy, t))
    first = doc["runs"][0]
    assert isinstance(first["lr"], float) and isinstance(first["final_val_loss"], float)
    assert isinstance(first["diverged"], bool) and isinstance(doc["bands"][0]["band_low"], float)
    assert all(isinstance(r["recommended_lr"], float | None) for r in doc["recommended"])
    keys = {k for part in ("runs", "best", "bands", "recommended") for r in doc[part] for k in r}
    assert all(k.isascii() and k.isidentifier() for k in keys), keys  # once "GD variant", "2/λmax(0)"
    assert {"gd_variant", "sibling_group", "lr_edge"} <= keys
    counts = [first[key] for key in ("trial", "batch_size", "hidden_size", "epochs_run")]
    assert all(type(n) is int for n in counts), counts  # whole numbers: 64, not 64.0 nor "64"
    runs = {r["run_id"] for r in doc["runs"]}
    assert doc["best"] and all(b["run_id"] in runs for b in doc["best"]), doc["best"]
    batch = json.loads(as_json(make([row(0, 0.1, "just_right", variant="batch") | {"batch_size": "None"}]), t))
    assert batch["runs"][0]["batch_size"] is None  # the whole set: no batch size
    tex = latex(toy, t)
    assert tex.isascii() and "\\begin{table}" in tex and "\\toprule" in tex
    assert tex.startswith("% needs \\usepackage{") and "\\resizebox{\\ifdim\\width>\\linewidth" in tex
    assert tex_text("η·λmax start → end — 2/λ") == "$\\eta\\cdot\\lambda$max start $\\to$ end --- 2/$\\lambda$"
    if shutil.which("pdflatex") is None:
        return
    needs = tex.splitlines()[0].removeprefix("% needs ")  # the packages the file says it needs, and no more
    (tmp_path / "doc.tex").write_text(f"\\documentclass{{article}}{needs}\\begin{{document}}\n" + tex
                                      + "\n\\end{document}\n")
    made = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stdout[-2000:]


def test_sharpness_figure_and_ratio_columns_from_hand_made_runs(tmp_path: Path) -> None:
    """Three full-batch runs that measured their sharpness: each rises to its own 2/η, drawn dashed."""
    rows = [row(i, lr, "just_right", variant="batch", val=0.5 - i / 10) for i, lr in enumerate([0.02, 0.03, 0.05])]
    sharpness = {}
    for r in rows:
        edge = 2 / r["lr"]
        r.update(ratio_start=25 * r["lr"], ratio_end=2.0, lr_edge=2 / 25, edge=edge)
        steps = np.arange(0, 101, 10, dtype=float)
        sharpness[r["run_id"]] = (steps, np.minimum(25 + steps, edge))
    toy = make(rows)
    toy.sharpness = sharpness
    assert report.pivot(toy).loc["5.00e-02", "batch η·λmax"] == "1.25 → 2.00"
    assert recommend(toy).loc[0, "2/λmax(0)"] == pytest.approx(0.08)
    path = plot_sharpness(toy, tmp_path / "sharpness.png")
    assert path is not None and path.stat().st_size > 10_000
    assert plot_sharpness(make(grid()), tmp_path / "none.png") is None, "no run measured: no figure"


def test_sharpness_figure_goes_log_when_the_edges_span_decades(tmp_path: Path, monkeypatch) -> None:
    """A decade grid of rates (1e-4 .. 1) puts the edges 2/η at 20,000 .. 2 against a sharpness of 4 .. 50: on a
    linear axis from 0 every sharpness curve lies flat on the floor. The y axis is then logarithmic and every
    curve and edge is inside it; the edge-of-stability sweep's (edges 40-100) stays linear from 0."""
    from tests.test_report_landscape import kept_figures

    def figure(lrs: list[float], name: str) -> Any:
        rows = [row(i, lr, "just_right", variant="batch", val=0.5 - i / 10) for i, lr in enumerate(lrs)]
        sharpness = {}
        for r in rows:
            r.update(ratio_start=4 * r["lr"], ratio_end=50 * r["lr"], lr_edge=0.5, edge=2 / r["lr"])
            sharpness[r["run_id"]] = (np.arange(0, 21, dtype=float), np.r_[np.linspace(4, 50, 20), -1e-4])
        toy = make(rows)
        toy.sharpness = sharpness
        figures = kept_figures(monkeypatch)
        assert plot_sharpness(toy, tmp_path / name) is not None
        return figures[name].axes[0]

    decades = figure([1e-4, 1e-3, 1e-2, 0.1, 1.0], "decades.png")
    low, high = decades.get_ylim()
    assert decades.get_yscale() == "log" and 1 < low < 4 and high > 20_000
    drawn = np.concatenate([line.get_ydata() for line in decades.lines if line.get_linestyle() == "-"])
    assert np.isnan(drawn).sum() == 5, "a negative sharpness breaks its line on a log axis, not plunges off it"
    eos = figure([0.02, 0.03, 0.04, 0.05], "eos.png")
    assert eos.get_yscale() == "linear" and eos.get_ylim()[0] == 0 and eos.get_ylim()[1] >= 100


def test_a_run_not_ended_is_no_regime_sample_whatever_its_tags() -> None:
    """A run cut while it was written can hold its end tags without its curve: RUNNING, it is not labelled."""
    from types import SimpleNamespace

    from gdexp.report._read import _row

    tags = {"optuna.state": "COMPLETE", "regime": "too_small", "optuna.trial": "0"}
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", run_name="n", status="RUNNING"),
                          data=SimpleNamespace(params={}, metrics={}, tags=tags))
    row = _row(run, np.array([2.3]), 0.9, np.array([2.3]), [])
    assert (row["state"], row["regime"]) == ("RUNNING", "none")


def test_small_ratios_and_epoch_counts_read_as_they_are() -> None:
    """η·λmax of a step far below the edge read '0.00 → 0.00' with two decimals; runs.csv wrote the epoch a run
    reached 90 % of its decrease as 18.0, where its other counts are whole numbers."""
    from gdexp.report._read import with_counts
    from gdexp.report._tables import fmt_ratios

    assert fmt_ratios(0.00043, 0.00051) == "0.00043 → 0.00051" and fmt_ratios(0.51, 2.0) == "0.51 → 2.00"
    frame = with_counts(pd.DataFrame({"epochs_to_90pct": [18.0, math.nan], "lr": [0.1, 0.2]}))
    assert frame["epochs_to_90pct"].tolist() == [18, pd.NA] and frame["lr"].tolist() == [0.1, 0.2]
    assert frame.to_csv(index=False).splitlines()[1] == "18,0.1"
