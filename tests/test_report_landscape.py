"""Seeing the steps in the report: loss_landscape.png and cost.png from hand-made runs (milliseconds), from real
runs in a real store (one run's own report), and from a real, shortened `+sweep=landscape` (slow)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from gdexp import plots, report, train
from gdexp.callbacks import callbacks_for
from gdexp.regimes import REGIMES
from gdexp.report import Report
from gdexp.report._figures import CAP
from gdexp.report._landscape import cost_runs, examples_at, landscape_runs
from gdexp.report._read import Cost
from gdexp.tracking import MlflowTracker
from tests.conftest import all_runs, gdexp, mlflow_client
from tests.test_report_tables import row


def kept_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The figures `plots.save` is given from now on, by file name (they are still written)."""
    figures: dict[str, Any] = {}
    save = plots.save

    def keep(fig: Any, path: Path) -> Path:
        figures[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")


def toy_trajectory(lr: float) -> dict[str, np.ndarray]:
    """A path spiralling to the origin on a plane whose loss is a bowl, as trajectory.npz holds it."""
    t = np.linspace(0, 1, 12)
    path = np.c_[-(1 - t) * 3 * np.cos(4 * t * lr), -(1 - t) * np.sin(4 * t * lr)]
    gx, gy = np.linspace(-4, 1, 9), np.linspace(-2, 1, 7)
    return {"path": path, "loss": (path**2).sum(axis=1) + 0.1, "grid_x": gx, "grid_y": gy,
            "grid_loss": gx[None, :] ** 2 + gy[:, None] ** 2 + 0.1, "explained": np.array(0.93),
            "epoch": np.arange(12.0)}


def toy_report() -> Report:
    """Two data sets x three variants x four learning rates, each with a trajectory and a cost."""
    rows, trajectories, costs = [], {}, {}
    lrs = [0.001, 0.03, 0.5, 1.0]
    labels = {"batch": ["too_small", "too_small", "just_right", "too_large"],
              "stochastic": ["too_small", "just_right", "too_large", "too_large"]}
    for d, dataset in enumerate(["digits", "linear"]):
        for v, variant in enumerate(["stochastic", "minibatch", "batch"]):
            for k, (lr, regime) in enumerate(zip(lrs, labels.get(variant, labels["batch"]), strict=True)):
                r = row(100 * d + 10 * v + k, lr, regime, variant=variant, val=0.5 - k / 10)
                r.update(dataset=dataset, n_params=2.0 if dataset == "linear" else 1210.0,
                         batch_size={"batch": "None", "minibatch": "32", "stochastic": "1"}[variant])
                rows.append(r)
                trajectories[r["run_id"]] = toy_trajectory(lr)
                epochs = np.arange(1.0, 11.0)
                costs[r["run_id"]] = Cost(144 * epochs, 0.01 * (v + 1) * epochs, 2.3 / (1 + epochs * lr),
                                          np.arange(1.0, 21.0), np.linspace(2.0, 0.1, 20))
    runs = pd.DataFrame(rows)
    curves = {r["run_id"]: np.geomspace(2.3, r["final_val_loss"], 11) for r in rows}
    return Report("toy", "parent0", "gdexp", "sqlite:///none.db", runs, curves, curves, None, 0.9,
                  trajectories=trajectories, costs=costs)


def test_examples_at_counts_as_the_loop_counts(make_cfg) -> None:
    """The examples after the update that ends each epoch, by `examples_at`, are the loop's own epoch rows; every
    batch is full but an epoch's last (144 rows in batches of 32: 4 x 32 + 16)."""
    for variant, batch in (("gd=minibatch", 32.0), ("gd=stochastic", 1.0)):
        history = train.run(make_cfg("tracking.enabled=false", "data=linear", "model.hidden_layers=0", variant,
                                     "train.epochs=3"))
        rows = history.curve("examples_processed")[0]
        per_epoch = math.ceil(rows / batch)
        ends = examples_at(np.array([per_epoch, 2 * per_epoch, 3 * per_epoch]), rows, batch)
        assert ends.tolist() == history.curve("examples_processed").tolist()
    assert examples_at(np.array([1, 4, 5, 6]), 144.0, 32.0).tolist() == [32.0, 128.0, 144.0, 176.0]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, dict[str, Any], Path]:
    """`toy_report()`, the figures `write` drew of it by file name, and their folder (drawn once)."""
    toy, folder = toy_report(), tmp_path_factory.mktemp("landscape")
    with pytest.MonkeyPatch.context() as patch:
        figures = kept_figures(patch)
        written = report.write(toy, folder, ["png"])
    assert folder / "loss_landscape.png" in written and folder / "cost.png" in written
    return toy, figures, folder


def test_the_landscape_shows_each_regime_nearest_the_band(drawn: tuple[Report, dict[str, Any], Path]) -> None:
    """Per data set and variant: the too-small run with the largest step, the just-right one, the too-large one
    with the smallest step; each path in its regime's colour, the plane's share in its title; data sets side by
    side, the two-parameter one first."""
    toy, figures, folder = drawn
    picked = landscape_runs(toy)
    batch = picked[(picked["dataset"] == "linear") & (picked["gd_variant"] == "batch")].set_index("regime")["lr"]
    assert batch.to_dict() == {"too_small": 0.03, "just_right": 0.5, "too_large": 1.0}
    fig = figures["loss_landscape.png"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 * 3 * 3
    first = [ax.get_title().split("\n") for ax in panels[:3]]
    assert [t[0] for t in first] == ["batch, lr 0.03: too_small", "batch, lr 0.5: just_right", "batch, lr 1: too_large"]
    assert all(t[1] == "the plane is (w, b) itself" for t in first), "linear regression (2 parameters) comes first"
    assert panels[3].get_title().endswith("plane: 93.0% of the path's variance")
    for ax in panels:
        regime = next(r for r in REGIMES if r in ax.get_title())
        assert matplotlib.colors.to_hex(ax.lines[0].get_color()) == plots.REGIME_COLORS[regime].lower()
        lr = float(ax.get_title().split("lr ")[1].split(":")[0])
        np.testing.assert_array_equal(ax.lines[0].get_xydata(), toy_trajectory(lr)["path"])
    texts = [t.get_text() for t in fig.texts]
    assert "linear (2 parameters)" in texts and "digits (1,210 parameters)" in texts
    assert "not filter-normalised" in fig._suptitle.get_text()
    assert png_width(folder / "loss_landscape.png") >= 1200 and fig.dpi == 150


def test_the_linear_block_plays_step_by_step(drawn: tuple[Report, dict[str, Any], Path]) -> None:
    """loss_landscape.gif: linear regression's panels, a frame per place in the runs (in epochs), the last held."""
    from PIL import Image

    toy, _, folder = drawn
    with Image.open(folder / "loss_landscape.gif") as gif:
        assert gif.n_frames == len(np.unique(np.concatenate([t["epoch"] for t in toy.trajectories.values()])))
        assert gif.info["loop"] == 0 and gif.size[0] > 600


def test_the_cost_figure_draws_one_line_per_variant_from_the_runs_numbers(
        drawn: tuple[Report, dict[str, Any], Path]) -> None:
    toy, figures, _ = drawn
    fig = figures["cost.png"]
    shown = cost_runs(toy).set_index(["dataset", "gd_variant"])
    axes = [ax for ax in fig.axes if ax.get_ylabel().endswith("training loss")]
    assert [ax.get_ylabel() for ax in axes] == ["linear: training loss"] * 2 + ["digits: training loss"] * 2
    for ax, (dataset, key) in zip(axes, [("linear", "examples"), ("linear", "seconds"), ("digits", "examples"),
                                         ("digits", "seconds")], strict=True):
        assert [line.get_label().split(",")[0] for line in ax.lines[:3]] == ["batch", "minibatch", "stochastic"]
        for line in ax.lines[:3]:
            variant = line.get_label().split(",")[0]
            cost = toy.costs[shown.loc[(dataset, variant), "run_id"]]
            assert np.array_equal(line.get_xdata(), getattr(cost, key)) and np.array_equal(line.get_ydata(), cost.loss)
            assert matplotlib.colors.to_hex(line.get_color()) == plots.VARIANT_COLORS[variant].lower()
    assert "examples processed" in axes[0].get_xlabel() and "update_time_s" in axes[1].get_xlabel()
    assert shown.loc[("linear", "stochastic"), "regime"] == "just_right"


def test_one_runs_report_is_its_own_path_and_cost_from_the_store(make_cfg, project: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`report.build(<run id>)` of a run outside any sweep: its trajectory.npz drawn on one panel, and cost.png's
    x values are the run's own metrics `examples_processed` and `update_time_s`, as MLflow holds them."""
    cfg = make_cfg("diagnostics.trajectory=true", "data=linear", "model.hidden_layers=0", "gd=stochastic",
                   "optim.lr=0.03", "train.epochs=4")
    tracker = MlflowTracker(cfg)
    train.run(cfg, callbacks_for(cfg, tracker=tracker))
    assert tracker.run_id is not None
    figures = kept_figures(monkeypatch)
    one = report.build(tracker.run_id, uri=cfg.tracking.uri)
    assert one.single and one.folder == Path("sweeps") / "runs" / tracker.run_id / "report"
    written = report.write(one, project / "out")
    assert sorted(p.name for p in written) == ["cost.png", "loss_landscape.gif", "loss_landscape.png", "runs.csv"]
    client = mlflow_client(cfg.tracking.uri)
    local = client.download_artifacts(tracker.run_id, "trajectory.npz", str(project))
    (panel,) = [ax for ax in figures["loss_landscape.png"].axes if ax.get_title()]
    with np.load(local) as saved:
        np.testing.assert_array_equal(panel.lines[0].get_xydata(), saved["path"])
    assert png_width(project / "out" / "loss_landscape.png") >= 1200
    examples, seconds = ([m.value for m in client.get_metric_history(tracker.run_id, key)]
                         for key in ("examples_processed", "update_time_s"))
    by_examples, by_seconds = (ax for ax in figures["cost.png"].axes if ax.get_ylabel() == "linear: training loss")
    assert by_examples.lines[0].get_xdata().tolist() == examples == [144.0, 288.0, 432.0, 576.0]
    assert by_seconds.lines[0].get_xdata().tolist() == seconds and all(s > 0 for s in seconds)


@pytest.mark.parametrize("overrides", [["optim.lr=1e30", "gd=batch"],  # the loss becomes NaN
                                       ["optim.lr=1e20", "data=linear", "model.hidden_layers=0"],  # 1.8e308, inf
                                       ["optim.lr=1", "data=linear", "model.hidden_layers=0", "gd=batch",
                                        "train.epochs=20"]])  # past 2/L: grows 20x in 20 epochs, under CAP
def test_a_run_that_blew_up_has_its_cost_drawn_to_where_it_diverged(make_cfg, project: Path, overrides: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN, inf and float64's largest number in a run's losses: cost.png draws the line up to `CAP` (30) times the
    loss before the first update and a triangle at that level for each value past it, as loss_curves.png does,
    instead of failing on an axis limit or a log of infinity, or running the line flat along a cut-off top."""
    cfg = make_cfg("train.epochs=3", *overrides)
    tracker = MlflowTracker(cfg)
    history = train.run(cfg, callbacks_for(cfg, tracker=tracker))
    assert tracker.run_id is not None and history.diverged == ("train.epochs=20" not in overrides)
    figures = kept_figures(monkeypatch)
    written = report.write(report.build(tracker.run_id, uri=cfg.tracking.uri), project / "out")
    assert "cost.png" in [p.name for p in written]
    ceiling = CAP * history.initial["train_loss"]
    past = int(np.sum(history.curve("train_loss") > ceiling))  # inf included; a NaN only ends the line
    for ax in figures["cost.png"].axes:
        if ax.get_ylabel().endswith("training loss"):
            assert ax.get_ylim()[1] <= 1.5 * ceiling and (ax.get_ylim()[1] >= ceiling or not past)
            drawn = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines])
            drawn = drawn[np.isfinite(drawn)]
            assert (drawn <= ceiling).all()
            if not past:  # the line goes all the way up: no flat top where the axis would have cut it
                highest = np.nanmax(np.r_[history.initial["train_loss"], history.curve("train_loss")])
                assert drawn.max() == pytest.approx(highest, rel=1e-6)
            marks = [c.get_offsets() for c in ax.collections if len(c.get_offsets()) and
                     np.allclose(np.asarray(c.get_offsets())[:, 1], ceiling)]
            assert sum(len(m) for m in marks) == past, "a triangle at the cap for each value past it"
    legend = [t.get_text() for leg in figures["cost.png"].legends for t in leg.get_texts()]
    assert any(f"above {CAP:g}x the initial loss" in t for t in legend) == bool(past)


def test_the_landscape_overlay_searches_two_cases_three_variants_four_rates(make_cfg) -> None:
    from gdexp.sweep._space import TrialConfigs, validate_sweep

    cfg = make_cfg("+sweep=landscape")
    assert cfg.diagnostics.trajectory and cfg.sweep.sampler == "grid" and cfg.sweep.pruner == "none"
    space = validate_sweep(cfg, ["+sweep=landscape"])
    sizes = [len(space[k].choices) for k in ("landscape", "gd", "optim.lr")]  # type: ignore[attr-defined]
    assert sizes == [2, 3, 4] and math.prod(sizes) == cfg.sweep.n_trials
    configs = TrialConfigs(cfg, ["+sweep=landscape"])
    linear, digits = (configs.of({"landscape": case, "gd": "stochastic", "optim.lr": 0.03})
                      for case in ("linear", "digits"))
    assert (linear.data.name, linear.model.hidden_layers, linear.data.d, linear.train.epochs) == ("linear", 0, 1, 20)
    assert (digits.data.name, digits.model.hidden_size, digits.train.epochs) == ("digits", 16, 100)
    assert linear.gd.variant == digits.gd.variant == "stochastic" and linear.diagnostics.trajectory


def test_readme_shows_the_landscape_sweeps_figures_and_labels(make_cfg) -> None:
    """README's section shows the three files docs/make_figures.sh copies, and its label table is the grid the
    overlay searches."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    for figure in ("loss_landscape.png", "loss_landscape.gif", "cost.png"):
        assert f"](docs/{figure})" in readme and (root / "docs" / figure).stat().st_size > 100_000
        assert figure in (root / "docs" / "make_figures.sh").read_text()
    header = next(line for line in readme.splitlines() if line.startswith("| GD variant | lr "))
    lrs = [float(cell.split("lr ")[1]) for cell in header.strip("|").split("|")[1:]]
    searched = make_cfg("+sweep=landscape").sweep.params.optim.lr  # "choice(0.001, 0.03, 0.5, 1.0)"
    assert lrs == [float(x) for x in searched.removeprefix("choice(").removesuffix(")").split(",")]


@pytest.mark.slow
def test_the_landscape_sweep_its_report_and_one_trials_own(project: Path) -> None:
    """`+sweep=landscape`, shortened (3 epochs, two rates): every trial logs trajectory.npz; the report writes
    loss_landscape.png and cost.png and tells the data sets apart in its table; one trial's id gives its own."""
    result = gdexp("+sweep=landscape", "train.epochs=3", "sweep.n_trials=12",
                   "sweep.params.optim.lr='choice(0.03,0.5)'", cwd=project)
    assert result.returncode == 0, result.stderr
    children = [r for r in all_runs(project) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 12 and {r.data.tags["dataset"] for r in children} == {"linear", "digits"}
    client = mlflow_client("sqlite:///mlruns/mlflow.db")
    assert all("trajectory.npz" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in children)
    result = gdexp("-m", "gdexp.report", "landscape", "--no-log", cwd=project)
    assert result.returncode == 0, result.stderr
    out = project / "sweeps" / "landscape" / "report"
    assert (out / "loss_landscape.png").stat().st_size > 50_000 and (out / "cost.png").stat().st_size > 50_000
    assert "| data set " in (out / "regimes.md").read_text()
    assert not (out / "lr_hidden_heatmap.png").exists(), "linear regression has no hidden size to map"
    one = children[0].info.run_id
    result = gdexp("-m", "gdexp.report", one, "--no-log", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"Run {one} (" in result.stdout
    assert (project / "sweeps" / "runs" / one / "report" / "loss_landscape.png").stat().st_size > 10_000
