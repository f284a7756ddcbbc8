"""The trajectory: its plane maths by themselves (exact on constructed paths), then the `Trajectory` callback in
the real loop (the two-parameter case against the closed-form loss, an MLP's PCA plane) and in a real store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gdexp import train
from gdexp.callbacks import callbacks_for
from gdexp.config._resources import TRAJECTORY_INSIDE, estimate
from gdexp.data import load
from gdexp.diagnostics import Sharpness
from gdexp.nn.hessian import flatten
from gdexp.tracking import MlflowTracker
from gdexp.trajectory import (
    EARLY_EPOCHS,
    EARLY_POINTS,
    GRID,
    Trajectory,
    early_updates,
    grid_axes,
    plane,
    project,
    variance_share,
)

QUIET = ("tracking.enabled=false",)
ARRAYS = {"path", "loss", "origin", "axes", "grid_x", "grid_y", "grid_loss", "explained", "epoch"}


def known_plane(size: int = 40, n: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A spiral path in the plane o + span(e1, e2) of R^size that ends at o: (points, o, E (2, size))."""
    rng = np.random.default_rng(seed)
    E = np.linalg.qr(rng.standard_normal((size, 2)))[0].T
    o = rng.standard_normal(size)
    t = np.linspace(0, 1, n)
    coords = np.c_[(1 - t) * 3 * np.cos(6 * t), (1 - t) * np.sin(6 * t)]
    return o + coords @ E, o, E


def test_the_pca_plane_of_a_path_lying_in_a_known_plane_is_recovered() -> None:
    points, o, E = known_plane()
    origin, axes, explained = plane(points)
    assert np.array_equal(origin, points[-1]) and np.allclose(origin, o, atol=1e-12)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(axes.T @ axes, E.T @ E, atol=1e-10), "the same plane: the same projector"
    path = project(points, origin, axes)
    np.testing.assert_allclose(origin + path @ axes, points, atol=1e-10)
    assert explained == pytest.approx(1.0, abs=1e-12)
    assert np.all(path[0] <= 0) and np.array_equal(path[-1], [0.0, 0.0]), "from the lower left to the origin"


def test_explained_is_the_share_of_the_path_variance_the_plane_holds() -> None:
    """Off the plane by noise: `explained` is (s1² + s2²)/Σs² of the centred path, computed here by an SVD, and
    the coordinates' variance over the points' variance; the plane is PCA's (the top two right singular vectors)."""
    points, _, _ = known_plane()
    points = points + 0.1 * np.random.default_rng(2).standard_normal(points.shape)
    origin, axes, explained = plane(points)
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    assert explained == pytest.approx((s[0] ** 2 + s[1] ** 2) / (s**2).sum(), rel=1e-10)
    path = project(points, origin, axes)
    assert explained == pytest.approx(np.var(path, axis=0).sum() / np.var(points, axis=0).sum(), rel=1e-10)
    np.testing.assert_allclose(axes.T @ axes, vt[:2].T @ vt[:2], atol=1e-9)
    assert 0.5 < explained < 0.99


def test_paths_with_no_second_direction_still_get_an_orthonormal_plane() -> None:
    """Two points (one direction), and a path that never moved (none): any orthonormal completion, all variance
    held, and a grid that is a square around the path, not a line."""
    line = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    still = np.ones((3, 4))
    for points in (line, still):
        origin, axes, explained = plane(points)
        np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-12)
        assert explained == pytest.approx(1.0, abs=1e-12)
        gx, gy = grid_axes(project(points, origin, axes))
        assert len(gx) == len(gy) == GRID and gx[-1] > gx[0] and gy[-1] > gy[0]


def test_two_parameters_are_their_own_plane() -> None:
    points = np.array([[0.5, 0.0], [1.0, 1.5], [2.9, 4.1]])
    origin, axes, explained = plane(points)
    assert np.array_equal(origin, [0.0, 0.0]) and np.array_equal(axes, np.eye(2)) and explained == 1.0
    assert np.array_equal(project(points, origin, axes), points)


def test_the_grid_holds_the_path_with_a_margin() -> None:
    path = np.array([[-2.0, -1.0], [0.0, 0.5], [0.0, 0.0]])
    gx, gy = grid_axes(path, size=5, margin=0.25)
    assert gx.tolist() == [-2.5, -1.75, -1.0, -0.25, 0.5] and gy.tolist() == [-1.375, -0.8125, -0.25, 0.3125, 0.875]


def test_updates_recorded_inside_the_first_epochs() -> None:
    assert early_updates(1) == frozenset(), "full batch: an epoch is one update, recorded at the epoch's end"
    assert early_updates(5) == {1, 2, 3, 4, 6, 7, 8, 9}
    inside = early_updates(144)  # linear regression's training set, one sample per update: every 3rd
    assert min(inside) == 3 and max(inside) == 285 and len(inside) == 2 * 47 and 144 not in inside
    assert max(len(early_updates(n)) for n in range(1, 3000, 7)) <= EARLY_EPOCHS * EARLY_POINTS


def recorded(make_cfg, *overrides: str) -> tuple[train.History, Trajectory]:
    cfg = make_cfg("diagnostics.trajectory=true", *QUIET, *overrides)
    callbacks = callbacks_for(cfg)
    (trajectory,) = [c for c in callbacks if isinstance(c, Trajectory)]
    return train.run(cfg, callbacks), trajectory


def test_two_parameters_the_loss_at_every_path_point_is_the_exact_loss(make_cfg) -> None:
    """The seeds' y = 3x + 4 + noise, depth 0: the plane is (w, b) itself, and `loss` is (1/2m)Σ(w x + b − y)²
    at each recorded point, in float64 (the run trains in float32: its weights and rows are exact float64
    numbers), as is the grid; the path starts at the initial weights and ends at the run's final weights."""
    history, trajectory = recorded(make_cfg, "data=linear", "model.hidden_layers=0", "gd=stochastic", "optim.lr=0.1",
                                   "train.epochs=5")
    t = history.artifacts["trajectory"]
    assert set(t) == ARRAYS
    assert np.array_equal(t["origin"], [0.0, 0.0]) and np.array_equal(t["axes"], np.eye(2)) and t["explained"] == 1.0
    data = load(make_cfg("data=linear").data, "float32")  # the rows the run trained on, exactly as float64
    x, y = data.X_train[:, 0].astype(np.float64), data.y_train.astype(np.float64).ravel()

    def exact(w: float, b: float) -> float:
        return float(np.mean((w * x + b - y) ** 2) / 2)

    np.testing.assert_allclose(t["loss"], [exact(w, b) for w, b in t["path"]], rtol=1e-12)
    np.testing.assert_allclose(t["grid_loss"], [[exact(w, b) for w in t["grid_x"]] for b in t["grid_y"]], rtol=1e-12)
    final = trajectory.model.params
    assert np.array_equal(t["path"][-1], [final["W0"][0, 0], final["b0"][0]])
    assert np.array_equal(t["path"][0], trajectory.points[0])
    assert t["loss"][0] == pytest.approx(history.initial["train_loss"], rel=1e-6)
    assert t["loss"][-1] == pytest.approx(history.curve("train_loss")[-1], rel=1e-6)
    assert len(t["path"]) == 1 + 5 + len(early_updates(len(x))) == len(t["epoch"])
    assert t["epoch"][0] == 0.0 and t["epoch"][-4:].tolist() == [2.0, 3.0, 4.0, 5.0] and 1.0 in t["epoch"]
    assert np.all(np.diff(t["epoch"]) > 0)
    assert t["grid_x"][0] < t["path"][:, 0].min() and t["grid_y"][-1] > t["path"][:, 1].max()


def test_an_mlp_is_drawn_on_its_pca_plane_through_the_final_weights(make_cfg) -> None:
    history, trajectory = recorded(make_cfg, "model.hidden_size=8", "train.epochs=3", "optim.lr=0.2")
    t = history.artifacts["trajectory"]
    final = flatten(trajectory.model.params)
    assert np.array_equal(t["origin"], final) and np.array_equal(t["path"][-1], [0.0, 0.0])
    np.testing.assert_allclose(t["axes"] @ t["axes"].T, np.eye(2), atol=1e-12)
    points = np.asarray(trajectory.points, dtype=np.float64)
    assert t["explained"] == pytest.approx(variance_share(points, t["axes"]), rel=1e-12)
    np.testing.assert_allclose(t["path"], (points - final) @ t["axes"].T, rtol=1e-12, atol=1e-12)
    # the loss of each recorded point itself (float64 here, float32 in the run's rows)
    assert t["loss"][0] == pytest.approx(history.initial["train_loss"], rel=1e-5)
    np.testing.assert_allclose(t["loss"][np.isin(t["epoch"], [1, 2, 3])], history.curve("train_loss"), rtol=1e-5)
    assert t["grid_loss"].shape == (GRID, GRID) and np.all(np.isfinite(t["grid_loss"]))
    assert history.final["trajectory_time_s"] > 0


def test_recording_changes_no_number_of_the_run_and_off_adds_no_callback(make_cfg) -> None:
    cfg = make_cfg("train.epochs=2", *QUIET)
    assert not any(isinstance(c, Trajectory) for c in callbacks_for(cfg))
    plain = train.run(cfg, callbacks_for(cfg))
    on, _ = recorded(make_cfg, "train.epochs=2")
    assert np.array_equal(plain.batch_loss, on.batch_loss) and plain.final["test_loss"] == on.final["test_loss"]
    assert "trajectory" not in plain.artifacts and "trajectory_time_s" not in plain.final


def test_the_trajectory_comes_after_the_sharpness_and_before_the_tracker(make_cfg) -> None:
    cfg = make_cfg("diagnostics.trajectory=true", "diagnostics.sharpness_every=1")
    tracker = MlflowTracker(cfg)
    kinds = [type(c) for c in callbacks_for(cfg, tracker=tracker)]
    assert kinds.index(Sharpness) < kinds.index(Trajectory) < kinds.index(MlflowTracker)


def test_a_diverged_run_still_gets_its_plane(make_cfg) -> None:
    history, _ = recorded(make_cfg, "data=linear", "model.hidden_layers=0", "gd=batch", "optim.lr=3",
                          "train.epochs=30")
    t = history.artifacts["trajectory"]
    assert history.diverged and np.all(np.isfinite(t["path"])) and t["loss"][-1] > 1000 * t["loss"].min()
    assert np.isfinite(t["grid_loss"]).all()


def test_an_interrupted_run_computes_no_plane(make_cfg) -> None:
    trajectory = Trajectory()
    cfg = make_cfg("diagnostics.trajectory=true", "train.epochs=1", *QUIET)
    history = train.run(cfg, [trajectory])
    history.artifacts.clear()
    trajectory.on_end(history, trajectory.model, "KILLED", KeyboardInterrupt())
    assert history.artifacts == {}


def test_the_tracker_logs_trajectory_npz_the_same_bytes_for_the_same_run(make_cfg, project) -> None:
    from tests.conftest import mlflow_client

    cfg = make_cfg("diagnostics.trajectory=true", "data=linear", "model.hidden_layers=0", "gd=minibatch",
                   "train.epochs=3", "optim.lr=0.3")
    files = []
    for k in range(2):
        tracker = MlflowTracker(cfg)
        train.run(cfg, callbacks_for(cfg, tracker=tracker))
        client = mlflow_client(cfg.tracking.uri)
        assert "trajectory.npz" in {a.path for a in client.list_artifacts(tracker.run_id)}
        assert client.get_run(tracker.run_id).data.metrics["trajectory_time_s"] > 0
        (project / f"t{k}").mkdir()
        files.append(Path(client.download_artifacts(tracker.run_id, "trajectory.npz", str(project / f"t{k}"))))
    with np.load(files[0], allow_pickle=False) as saved:
        assert set(saved.files) == ARRAYS and saved["path"].shape[1] == 2 and saved["explained"].shape == ()
        assert float(saved["explained"]) == 1.0
    assert files[0].read_bytes() == files[1].read_bytes()


def test_the_memory_estimate_counts_the_recorded_weights(make_cfg) -> None:
    assert TRAJECTORY_INSIDE == EARLY_EPOCHS * EARLY_POINTS
    off = estimate(make_cfg("train.epochs=100"))
    on = estimate(make_cfg("train.epochs=100", "diagnostics.trajectory=true"))
    params = 64 * 64 + 64 + 64 * 10 + 10
    assert on["the recorded trajectory"] == (100 + 1 + TRAJECTORY_INSIDE) * params * (4 + 16)
    assert off["the recorded trajectory"] == 0 and on["total"] - off["total"] == on["the recorded trajectory"]
    assert math.isclose(on["total"], sum(v for k, v in on.items() if k != "total"))
