"""The training loop: classic results, determinism, divergence, and the records in a real MLflow store."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gdexp import train
from gdexp.callbacks import ProgressBar, callbacks_for
from gdexp.data import load
from gdexp.history import Callback, History
from gdexp.tracking import MlflowTracker
from tests.conftest import ROOT, all_runs, child_env, gdexp, mlflow_client, store


def test_batch_gd_recovers_the_tutorial_line(make_cfg) -> None:
    """y = 4 + 3x + noise, no hidden layer, batch GD: w ≈ 3, b ≈ 4 (the classic first example)."""
    cfg = make_cfg("data=linear", "data.n=2000", "model.hidden_layers=0", "gd=batch", "optim.lr=0.3",
                   "train.epochs=1000", "train.dtype=float64", "tracking.enabled=false")
    weights = {}

    class Keep(Callback):
        def on_end(self, history, model, status, error):
            weights.update({k: v.copy() for k, v in model.params.items()})

    history = train.run(cfg, [Keep()])
    data = load(cfg.data, "float64")
    ols = np.linalg.lstsq(np.c_[data.X_train, np.ones(len(data.X_train))], data.y_train[:, 0], rcond=None)[0]
    assert weights["W0"][0, 0] == pytest.approx(ols[0], abs=1e-6)
    assert weights["b0"][0] == pytest.approx(ols[1], abs=1e-6)
    assert weights["W0"][0, 0] == pytest.approx(3.0, abs=0.15)
    assert weights["b0"][0] == pytest.approx(4.0, abs=0.15)
    assert history.final["test_loss"] < 0.8  # the noise alone gives σ²/2 = 0.5


def test_every_variant_and_optimizer_trains(make_cfg) -> None:
    for overrides in (["gd=batch", "optim.lr=0.5"], ["gd=stochastic", "optim.lr=0.01", "train.epochs=3"],
                      ["optim=adam"], ["optim=rmsprop", "optim.lr=0.001"], ["optim=adagrad"],
                      ["optim.momentum=0.9", "optim.nesterov=true", "optim.lr=0.01"],
                      ["model.activation=tanh", "model.init=xavier", "model.hidden_layers=2"],
                      ["train.dtype=float64"]):
        history = train.run(make_cfg("train.epochs=10", *overrides))
        assert history.final["test_accuracy"] > 0.85, overrides


def test_normal_001_init_trains_worse_than_he(make_cfg) -> None:
    base = ("train.epochs=5", "model.hidden_layers=3", "model.activation=sigmoid")
    he = train.run(make_cfg(*base, "model.init=he")).final["test_accuracy"]
    tiny = train.run(make_cfg(*base, "model.init=normal_0.01")).final["test_accuracy"]
    assert tiny < he


def test_huge_learning_rate_diverges_as_a_result(make_cfg) -> None:
    history = train.run(make_cfg("optim.lr=1000"))
    assert history.diverged and history.stop_reason == "diverged" and len(history.epochs) == 1
    assert "over 1000 times its initial" in history.note


@pytest.mark.parametrize(("lr", "dtype", "reached"), [("100", "float32", "over 1000 times"),
                                                       ("1e200", "float64", "reached inf")])
def test_a_loss_that_blows_up_at_the_last_step_is_divergence(make_cfg, lr: str, dtype: str, reached: str) -> None:
    """A step's loss is checked on the next batch; the run's last step has none, so the whole set's loss after the
    epoch judges it. (Once, one full-batch step to 41,800 times the initial loss, or to inf, ended a run
    `diverged=false` while its regime said the loss diverged.)"""
    cfg = make_cfg("tracking.enabled=false", "data=linear", "model.hidden_layers=0", "gd=batch", "train.epochs=1",
                   f"optim.lr={lr}", f"train.dtype={dtype}")
    history = train.run(cfg, callbacks_for(cfg))
    assert history.updates == 1 and history.diverged and history.stop_reason == "diverged"
    assert "after epoch 1" in history.note and reached in history.note and history.regime == "too_large"


@pytest.mark.parametrize(("batch", "sizes", "threads"), [
    (32, [64, 512, 10], 1),  # digits, wide hidden layer: 1.9x faster on one thread (measured)
    (128, [64, 512, 10], 1),
    (32, [784, 128, 10], 1),  # MNIST at batch 32: no faster on two
    (128, [784, 128, 10], None),  # MNIST at batch 128 and full-batch digits: faster on two
    (1437, [64, 512, 10], None),
    (32, [64, 10], 1),  # no hidden layer
])
def test_small_products_run_on_one_blas_thread(batch: int, sizes: list[int], threads: int | None) -> None:
    assert train.blas_threads(batch, sizes) == threads


def test_same_thread_count_same_bits_other_count_only_rounding(make_cfg) -> None:
    """The promise as stated: the same config, seed and BLAS thread count give the same bits (loss curve and
    weights); another thread count splits the GEMM sums differently, which moves float32 results by rounding
    only: relative 1e-5 on the losses, 1e-5 (absolute) on the weights after 3 full-batch epochs."""
    def run(threads: int) -> tuple[History, dict[str, np.ndarray]]:
        cfg = make_cfg("tracking.enabled=false", "model.hidden_size=512", "gd=batch", "train.epochs=3",
                       f"train.threads={threads}")
        saver = _Keeper()
        return train.run(cfg, [saver]), saver.params

    one, w_one = run(1)
    again, w_again = run(1)
    two, w_two = run(2)
    assert one.blas["threads"] == again.blas["threads"] == "1" and one.blas["library"]
    def measured(history: History) -> list[dict[str, float]]:  # the numbers of the run, not how long it took
        return [{k: v for k, v in row.items() if k != "update_time_s"} for row in history.epochs]

    assert np.array_equal(one.batch_loss, again.batch_loss) and measured(one) == measured(again)
    assert all(np.array_equal(w_one[k], w_again[k]) for k in w_one)
    np.testing.assert_allclose(two.batch_loss, one.batch_loss, rtol=1e-5)
    for key in w_one:
        np.testing.assert_allclose(w_two[key], w_one[key], rtol=0, atol=1e-5)


def test_every_number_of_a_run_is_on_the_thread_count_it_pins(make_cfg, monkeypatch) -> None:
    """The losses before the first update, the sharpness and the loss landscape too: on the process's own thread
    count, they would differ in their last bits between machines with more or fewer cores, whatever
    `train.threads` pins (and OpenBLAS's idle threads spun on the second core through a single-worker sweep)."""
    from threadpoolctl import threadpool_limits

    from gdexp import diagnostics, trajectory

    seen: list[tuple[str, str]] = []

    def watched(name: str, real):
        def call(*args, **kwargs):
            seen.append((name, train.blas_in_use()["threads"]))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(train, "_evaluate", watched("evaluate", train._evaluate))
    monkeypatch.setattr(diagnostics, "Hessian", watched("hessian", diagnostics.Hessian))
    monkeypatch.setattr(trajectory.Trajectory, "_loss", watched("landscape", trajectory.Trajectory._loss))
    cfg = make_cfg("train.epochs=2", "tracking.enabled=false", "train.threads=1", "model.hidden_size=128",
                   "diagnostics.sharpness_every=1", "diagnostics.trajectory=true")
    assert train.blas_threads(len(load(cfg.data, cfg.train.dtype).X_train), [64, 128, 10]) is None, \
        "on auto, the evaluations and the probe would take every thread the process has"
    with threadpool_limits(2, user_api="blas"):  # the process's own count, as on a 2-core machine
        history = train.run(cfg, callbacks_for(cfg))
    assert history.blas["threads"] == "1"
    assert seen[0][0] == "evaluate" and {name for name, _ in seen} == {"evaluate", "hessian", "landscape"}
    assert {threads for _, threads in seen} == {"1"}, seen


def test_auto_threads_and_a_pinned_count_are_recorded(make_cfg, project: Path) -> None:
    cfg = make_cfg("train.epochs=1", "train.threads=1")
    tracker = MlflowTracker(cfg)
    history = train.run(cfg, [tracker])
    tags = store(project).get_run(tracker.run_id).data.tags
    assert tags["blas_threads"] == history.blas["threads"] == "1"
    assert tags["blas"].startswith(history.blas["library"]) and history.blas["library"] in ("openblas", "mkl", "blis")
    small = train.run(make_cfg("train.epochs=1", "tracking.enabled=false"))  # digits at batch 32: one thread
    assert small.blas["threads"] == "1"


def test_an_infinite_loss_is_divergence_whatever_the_initial_loss(make_cfg) -> None:
    """With an initial loss of 0 the divergence limit (factor x initial) is no bound at all; a loss of inf
    must still stop the run as diverged (inf <= inf would let it pass)."""
    class Infinite(Callback):
        def on_begin(self, cfg, data, model, optimizer, history) -> None:
            history.initial["train_loss"] = 0.0
            model.params["W0"][...] = 1e30  # (1e30·x − y)² overflows float32: the loss is +inf, not NaN

    cfg = make_cfg("tracking.enabled=false", "data=linear", "model.hidden_layers=0", "gd=batch", "train.epochs=3")
    history = train.run(cfg, [Infinite(), *callbacks_for(cfg)])
    assert history.diverged and history.stop_reason == "diverged" and history.updates == 1
    assert history.regime == "too_large" and "reached inf" in history.note


def test_every_finished_run_is_labelled_in_its_history(make_cfg) -> None:
    """Tracked or not, a run's callbacks label it: the label belongs to the history, the tracker records it."""
    cfg = make_cfg("tracking.enabled=false", "train.epochs=3")
    history = train.run(cfg, callbacks_for(cfg))
    assert history.regime in ("too_small", "just_right", "too_large") and history.regime_reason
    assert "epochs" in history.regime_reason


def test_callback_time_is_kept_out_of_the_training_time(make_cfg) -> None:
    """Structural, not a stopwatch bound: the callback sleeps 0.05 s per epoch, so at least 0.15 s is callback
    time, and training time plus callback time cannot exceed the wall time of the whole call."""
    class Slow(Callback):
        def on_epoch_end(self, history: History) -> None:
            time.sleep(0.05)

    cfg = make_cfg("tracking.enabled=false", "train.epochs=3")
    began = time.perf_counter()
    slow = train.run(cfg, [Slow()]).final
    wall = time.perf_counter() - began
    assert slow["callback_time_s"] >= 0.15 and slow["train_time_s"] > 0
    assert slow["train_time_s"] + slow["callback_time_s"] <= wall


@pytest.mark.parametrize("variant", ["gd=batch", "gd=minibatch", "gd=stochastic"])
def test_every_epoch_row_counts_the_examples_its_updates_processed(make_cfg, variant: str) -> None:
    """Cumulative rows of the updates' batches: a whole training set per finished epoch, whatever the batch size;
    a run that diverged inside an epoch counts the batches it got to (the one that diverged included)."""
    cfg = make_cfg("tracking.enabled=false", "data=linear", "model.hidden_layers=0", variant, "train.epochs=4",
                   "optim.lr=0.05")
    n = len(load(cfg.data, cfg.train.dtype).X_train)
    history = train.run(cfg)
    assert history.curve("examples_processed").tolist() == [n, 2 * n, 3 * n, 4 * n]
    blown = train.run(make_cfg("tracking.enabled=false", "data=linear", "model.hidden_layers=0", variant,
                               "train.epochs=4", "optim.lr=50"))
    size = n if variant == "gd=batch" else 32 if variant == "gd=minibatch" else 1
    per_epoch = -(-n // size)
    full, inside = divmod(blown.updates, per_epoch)
    assert blown.diverged and blown.curve("examples_processed")[-1] == full * n + min(inside * size, n)


def test_update_time_leaves_out_the_hooks_and_the_evaluation(make_cfg) -> None:
    """Structural, not a stopwatch bound: a hook that sleeps 0.05 s after three updates is callback time; the
    updates' time grows every epoch and is a part of the training time, which leaves the hooks out (had the
    0.15 s of sleep been counted as update time, it would exceed the training time)."""
    class Hook(Callback):
        watched_updates = frozenset({2, 40, 41})

        def on_update(self, update: int, model) -> None:
            time.sleep(0.05)

    cfg = make_cfg("tracking.enabled=false", "train.epochs=3")
    history = train.run(cfg, [Hook()])
    seconds = history.curve("update_time_s")
    assert np.all(np.diff(seconds) > 0) and seconds[0] > 0
    assert history.final["callback_time_s"] >= 0.15
    assert seconds[-1] <= history.final["train_time_s"]


def test_on_update_sees_the_weights_right_after_its_update(make_cfg) -> None:
    """Full-batch GD makes one update an epoch, so the weights after update k are those at the end of epoch k."""
    class Both(Callback):
        watched_updates = frozenset({1, 2, 3})

        def __init__(self) -> None:
            self.model = None
            self.after_update: list[tuple[int, np.ndarray]] = []
            self.after_epoch: list[np.ndarray] = []

        def on_begin(self, cfg, data, model, optimizer, history) -> None:
            self.model = model

        def on_update(self, update: int, model) -> None:
            self.after_update.append((update, model.params["W0"].copy()))

        def on_epoch_end(self, history: History) -> None:
            self.after_epoch.append(self.model.params["W0"].copy())

    both = Both()
    train.run(make_cfg("tracking.enabled=false", "gd=batch", "train.epochs=4"), [both])
    assert [u for u, _ in both.after_update] == [1, 2, 3]
    assert all(np.array_equal(w, both.after_epoch[i]) for i, (_, w) in enumerate(both.after_update))
    assert not np.array_equal(both.after_epoch[0], both.after_epoch[1])


def test_recorded_run_in_a_real_store(make_cfg, project: Path) -> None:
    cfg = make_cfg("train.epochs=3", "tracking.batch_loss_stride=5")
    tracker = MlflowTracker(cfg)
    history = train.run(cfg, callbacks_for(cfg, tracker=tracker))
    client = store(project)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lr0.1-h64-minibatch32-sgd"
    # MLflow's standard tags, as its own start_run sets them: the UI's User column (once "unknown")
    assert run.info.user_id == run.data.tags["mlflow.user"] == getpass.getuser()
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.source.name"]
    params = run.data.params
    assert params["optim.lr"] == "0.1" and params["gd.variant"] == "minibatch" and params["gd.batch_size"] == "32"
    assert params["model.hidden_size"] == "64" and params["train.seed"] == "0" and params["data.name"] == "digits"
    tags = run.data.tags
    assert (tags["dataset"], tags["gd.variant"], tags["optimizer"], tags["diverged"]) == (
        "digits", "minibatch", "sgd", "false")
    assert tags["regime"] in ("too_small", "just_right", "too_large") and tags["regime_reason"]
    m = run.data.metrics
    assert m["test_accuracy"] == pytest.approx(history.final["test_accuracy"])
    assert m["n_params"] == 64 * 64 + 64 + 64 * 10 + 10 and m["train_time_s"] > 0
    train_loss = client.get_metric_history(tracker.run_id, "train_loss")
    assert [p.step for p in train_loss] == [1, 2, 3]
    assert [p.value for p in train_loss] == pytest.approx(list(history.curve("train_loss")))
    batch = client.get_metric_history(tracker.run_id, "batch_loss")
    assert [p.step for p in batch] == list(range(5, history.updates + 1, 5))
    assert batch[0].value == pytest.approx(history.batch_loss[4])
    for key in ("val_loss", "val_accuracy", "train_accuracy"):
        assert len(client.get_metric_history(tracker.run_id, key)) == 3
    for key in ("examples_processed", "update_time_s"):  # what the updates cost, epoch by epoch
        points = client.get_metric_history(tracker.run_id, key)
        assert [(p.step, p.value) for p in points] == [(e, pytest.approx(v)) for e, v in
                                                       enumerate(history.curve(key), start=1)]
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"config.yaml", "loss_curve.png", "weights.npz"} <= artifacts and "trajectory.npz" not in artifacts
    local = Path(client.download_artifacts(tracker.run_id, "weights.npz", str(project)))
    with np.load(local, allow_pickle=False) as weights:
        assert sorted(weights.files) == ["W0", "W1", "b0", "b1"] and weights["W0"].shape == (64, 64)


def test_same_seed_same_bytes_other_seed_other_bytes(make_cfg, project: Path) -> None:
    def weights(seed: int) -> tuple[bytes, list[float]]:
        history = train.run(make_cfg("train.epochs=2", f"train.seed={seed}"), [saver := _Saver(project)])
        return saver.blob, list(history.batch_loss)

    a, b, c = weights(1), weights(1), weights(2)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[0] != c[0] and a[1] != c[1]


class _Keeper(Callback):
    """Keeps a copy of the final weights."""

    def on_end(self, history, model, status, error) -> None:
        self.params = {k: v.copy() for k, v in model.params.items()}


class _Saver(Callback):
    def __init__(self, folder: Path) -> None:
        self.path = folder / "w.npz"

    def on_end(self, history, model, status, error) -> None:
        model.save(self.path)
        self.blob = self.path.read_bytes()


@pytest.mark.parametrize("raised,status", [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")])
def test_interrupted_or_failing_run_is_closed_with_its_metrics(make_cfg, project: Path, raised, status) -> None:
    class Boom(Callback):
        def on_epoch_end(self, history) -> None:
            if len(history.epochs) == 2:
                raise raised("stop here")

    cfg = make_cfg("train.epochs=5", "tracking.flush_every_s=1000")
    tracker = MlflowTracker(cfg)
    with pytest.raises(raised):
        train.run(cfg, [tracker, Boom()])
    client = mlflow_client(cfg.tracking.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == status
    assert len(client.get_metric_history(tracker.run_id, "train_loss")) == 2, "buffered metrics were flushed"
    assert ("error" in run.data.tags) == (status == "FAILED")


def test_a_callback_whose_end_fails_fails_the_run_and_the_later_ones_still_end(make_cfg, project: Path) -> None:
    """A callback before the tracker (the trajectory's, the label's) raises at the end: the tracker still ends its
    run, FAILED with the error, and the error reaches the caller."""
    class Broken(Callback):
        def on_end(self, history, model, status, error) -> None:
            raise RuntimeError("the end went wrong")

    cfg = make_cfg("train.epochs=2")
    tracker = MlflowTracker(cfg)
    with pytest.raises(RuntimeError, match="the end went wrong"):
        train.run(cfg, [Broken(), tracker])
    run = mlflow_client(cfg.tracking.uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and "the end went wrong" in run.data.tags["error"]
    assert len(mlflow_client(cfg.tracking.uri).get_metric_history(tracker.run_id, "train_loss")) == 2


def test_ctrl_c_while_the_run_is_being_written_is_raised_once_it_is_whole(make_cfg, project: Path,
                                                                          installed: None) -> None:
    """The run is created at its first write (here: the end). A Ctrl-C that arrives while it is created waits
    until the run is written whole and ended (it trained to its end: FINISHED, every metric there), then stops
    the command; the progress bar after the tracker is closed too."""
    import os
    import signal as signals

    def interrupt(run_id: str) -> None:
        os.kill(os.getpid(), signals.SIGINT)  # arrives in the middle of the tracker's writes

    cfg = make_cfg("train.epochs=2", "tracking.artifacts=false")
    tracker = MlflowTracker(cfg, on_run=interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, [tracker, ProgressBar()])
    assert tracker.run_id is not None
    client = mlflow_client(cfg.tracking.uri)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(tracker.run_id, "train_loss")) == 2


@pytest.mark.slow  # starts `python -m gdexp`
def test_sigterm_ends_the_run_killed_with_its_metrics(project: Path) -> None:
    env = child_env()
    args = ["gd=stochastic", "train.epochs=2000", "train.progress=false", "tracking.flush_every_s=1"]
    proc = subprocess.Popen([sys.executable, "-m", "gdexp", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not [r for r in all_runs(project) if r.info.status == "RUNNING"]:
        time.sleep(0.2)
    time.sleep(1.5)  # a few epochs
    proc.terminate()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.endswith("gdexp: interrupted; the run is recorded as it was, KILLED\n"), err
    (run,) = all_runs(project)
    assert run.info.status == "KILLED"
    assert len(store(project).get_metric_history(run.info.run_id, "train_loss")) >= 1, "metrics flushed first"


@pytest.mark.slow  # starts `python -m gdexp`
def test_default_command_reaches_95_percent_and_records_everything(project: Path) -> None:
    result = gdexp(cwd=project)
    assert result.returncode == 0, result.stderr
    (run,) = all_runs(project)
    assert f"MLflow run {run.info.run_id}" in result.stdout and ("Open the UI: python -m gdexp.ui, then http://127.0.0.1"
                                                                 f":5000/#/experiments/1/runs/{run.info.run_id}?") \
        in result.stdout
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] >= 0.95
    assert f"Regime: {run.data.tags['regime']} -- {run.data.tags['regime_reason']}" in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("train: ")]
    assert len(progress) == 10 and progress[-1].startswith("train: 30/30 epochs"), "a line per tenth, not a bar"


@pytest.mark.slow  # starts `python -m gdexp`
def test_diverging_command_finishes_marked_diverged(project: Path) -> None:
    result = gdexp("optim.lr=1e4", cwd=project)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    (run,) = all_runs(project)
    assert run.info.status == "FINISHED" and run.data.tags["diverged"] == "true"
    assert run.data.tags["regime"] == "too_large"


@pytest.mark.slow  # starts `python -m gdexp` and `python -m gdexp.report`
def test_mlflows_own_variable_picks_the_store_of_every_command(project: Path) -> None:
    """`MLFLOW_TRACKING_URI`, as every MLflow tool reads it: a run records there, and the report reads it (once
    the run went to mlruns/ whatever the variable said, and only `gdexp.ui` read it)."""
    from mlflow.tracking import MlflowClient

    env = {"MLFLOW_TRACKING_URI": "sqlite:///elsewhere/mlflow.db"}
    assert gdexp("train.epochs=1", "train.progress=false", cwd=project, env=env).returncode == 0
    assert all_runs(project) == [], "none in mlruns/"
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'elsewhere' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gdexp").experiment_id])
    report = gdexp("-m", "gdexp.report", run.info.run_id, "--formats", "csv", "--no-log", cwd=project, env=env)
    assert report.returncode == 0 and (project / "sweeps" / "runs" / run.info.run_id / "report").is_dir(), \
        report.stderr


@pytest.mark.slow  # starts `python -m gdexp` once a case (in-process, the same checks: test_config.py, test_data.py)
@pytest.mark.parametrize("args,key,shown", [
    (["optim.lr=-1"], "optim.lr", "-1"), (["gd.batch_size=0"], "gd.batch_size", "0"),
    (["model.activation=foo"], "model.activation", "relu, sigmoid, tanh"),
    (["data=file"], "data.path", "required"), (["data=file", "data.path=missing.csv"], "data.path", "no such file"),
    (["data=file", "data.path=nan.npz"], "data.path", "NaN"),
    (["data=file", "data.path=short.npz"], "data.path", "rows"),
    (["optim.lrr=1"], "optim.lrr", "did you mean optim.lr?"), (["optim=nadam"], "optim=nadam", "adam"),
    (["optim.lr=abc"], "optim.lr", "a number > 0"), (["foo=1"], "foo", "data, model, gd"),
    (["+trian.epochs=5"], "trian", "did you mean train?"), (["+optim.foo=1"], "optim.foo", "momentum"),
    (["optim=adamw"], "optim=adamw", "did you mean adam?"),
    (["+sweep=bogus"], "sweep=bogus", "eos, landscape, lr, lr_range"),
    (["optim.lr=["], "optim.lr=[", "cannot read"), (["train.epochs=x"], "train.epochs", "an integer >= 1"),
])
def test_bad_input_fails_before_training_with_no_run(project: Path, args, key: str, shown: str) -> None:
    np.savez(project / "nan.npz", X=np.array([[np.nan, 1.0], [1.0, 2.0], [0, 0]]), y=np.array([0, 1, 0]))
    np.savez(project / "short.npz", X=np.ones((4, 2)), y=np.array([0, 1]))
    result = gdexp(*args, cwd=project)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = result.stderr.splitlines()  # one line, in gdexp's voice
    assert line.startswith("gdexp: config error: ") and key in line and shown in line, line
    assert all_runs(project) == []


@pytest.mark.slow  # pip builds and installs a wheel, then `python -m gdexp` runs
def test_installed_package_ships_its_config(tmp_path: Path) -> None:
    """A plain (non-editable) install, run from another folder: --help and --cfg job still work."""
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    for part in ("gdexp", "conf"):  # built from a copy: setuptools writes build/ into the source folder
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("gdexp-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    assert (site / "gdexp" / "conf" / "config.yaml").is_file()
    assert (site / "gdexp" / "conf" / "sweep" / "lr.yaml").is_file()
    env = dict(os.environ, PYTHONPATH=str(site))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args, shown in ((["--help"], "optim: adagrad, adam, rmsprop, sgd"), (["--cfg", "job"], "hidden_size: 64"),
                        (["+sweep=lr", "--cfg", "job"], "n_trials: 30")):
        result = subprocess.run([sys.executable, "-m", "gdexp", *args], cwd=elsewhere, env=env, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0 and shown in result.stdout, result.stderr
    where = subprocess.run([sys.executable, "-c", "import gdexp; print(gdexp.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
