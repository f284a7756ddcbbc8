"""One epoch on MNIST-shaped data (60,000 x 784 -> 128 ReLU -> 10, softmax, SGD lr 0.1): gdexp against
PyTorch on the CPU and against the blog-style NumPy loop, at batch sizes 32, 128, 1000 and the full batch;
the machine's float32 GEMM rate and the share of it gdexp's full-batch epoch reaches; and the cost of
MLflow tracking (on vs off) on a 3-epoch run at batch 32.

    python benchmarks/engine.py            # PyTorch rows need `pip install -e ".[bench]"`

The data are random (MNIST itself needs a download); an epoch costs the same on any data of that shape.
Every figure is the best of `--repeat` timings taken in this run, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from gdexp import train
from gdexp.config import CONFIG_DIR
from gdexp.tracking import MlflowTracker

M, D, H, K = 60_000, 784, 128, 10
BATCHES = (32, 128, 1000, None)


def timed(fn: Callable[[], float | None]) -> float:
    """One run's seconds: fn returns its own time, or None to be timed whole."""
    began = time.perf_counter()
    inner = fn()
    return inner if inner is not None else time.perf_counter() - began


def best(fn: Callable[[], float | None], repeat: int) -> float:
    return min(timed(fn) for _ in range(repeat))


def gemm_rate(n: int = 2048, repeat: int = 5) -> float:
    """float32 GFLOP/s of one large square matrix product (all cores, this NumPy's BLAS)."""
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    return 2 * n**3 / best(lambda: (np.matmul(a, b, out=out), None)[1], repeat) / 1e9


def epoch_flops(m: int) -> float:
    """Forward, weight gradients and the hidden layer's input gradient (the data need none)."""
    return 2 * m * (2 * D * H + 3 * H * K)


def gdexp_epoch(path: Path, batch: int | None) -> Callable[[], float | None]:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=[
            "data=file", f"data.path={path}", "data.test_fraction=0", "data.val_fraction=0", "model.hidden_size=128",
            f"gd.batch_size={'null' if batch is None else batch}", "train.epochs=1", "tracking.enabled=false",
            "train.progress=false"])
    return lambda: train.run(cfg, []).final["train_time_s"]


def torch_epoch(X: np.ndarray, y: np.ndarray, batch: int | None) -> Callable[[], float | None] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, K))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    size = batch or M

    def epoch() -> None:
        perm = torch.randperm(M) if size < M else None
        Xs, ys = (Xt[perm], yt[perm]) if perm is not None else (Xt, yt)
        for start in range(0, M, size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xs[start : start + size]), ys[start : start + size])
            loss.backward()
            opt.step()
            loss.item()  # gdexp reads every update's loss too

    return epoch


def blog_epoch(X: np.ndarray, y: np.ndarray, batch: int | None) -> Callable[[], float | None]:
    """The loop of the popular from-scratch tutorials: float64, (features, samples), fresh arrays each step."""
    rng = np.random.default_rng(0)
    XT = X.T.astype(np.float64)
    Y = np.eye(K)[y].T
    W1, b1 = rng.standard_normal((H, D)) * np.sqrt(2 / D), np.zeros((H, 1))
    W2, b2 = rng.standard_normal((K, H)) * np.sqrt(2 / H), np.zeros((K, 1))
    size = batch or M

    def epoch() -> None:
        nonlocal W1, b1, W2, b2
        perm = rng.permutation(M)
        Xs, Ys = XT[:, perm], Y[:, perm]
        for start in range(0, M, size):
            x, t = Xs[:, start : start + size], Ys[:, start : start + size]
            m = x.shape[1]
            Z1 = W1 @ x + b1
            A1 = np.maximum(Z1, 0)
            Z2 = W2 @ A1 + b2
            E = np.exp(Z2 - Z2.max(axis=0))
            A2 = E / E.sum(axis=0)
            float(-np.sum(t * np.log(A2 + 1e-12)) / m)
            dZ2 = A2 - t
            dW2, db2 = dZ2 @ A1.T / m, dZ2.sum(axis=1, keepdims=True) / m
            dZ1 = (W2.T @ dZ2) * (Z1 > 0)
            dW1, db1 = dZ1 @ x.T / m, dZ1.sum(axis=1, keepdims=True) / m
            W1, b1, W2, b2 = W1 - 0.1 * dW1, b1 - 0.1 * db1, W2 - 0.1 * dW2, b2 - 0.1 * db2

    return epoch


def tracking_overhead(path: Path, repeat: int) -> tuple[float, float, float, float]:
    """(train time off, train time on, seconds inside the tracker during training, whole run on), best of
    `repeat`, for 3 epochs at batch 32 into a fresh SQLite store."""
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONFIG_DIR), version_base=None):
        base = ["data=file", f"data.path={path}", "data.test_fraction=0.1", "data.val_fraction=0.1",
                "model.hidden_size=128", "train.epochs=3", "train.progress=false",
                f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
        cfg = compose("config", overrides=base)
        # MLflow's first call in a process starts its telemetry check, a thread that waits up to 1 s for
        # an HTTP answer (none comes offline) and costs the run it overlaps ~5 %: once per process, so one
        # untimed tracked run takes it before the timed ones.
        train.run(cfg, [MlflowTracker(cfg)])
        off_train, on_train, inside, on_whole = [], [], [], []
        for _ in range(repeat):  # interleaved, so that a slower spell of the machine hits both alike
            off_train.append(train.run(cfg, []).final["train_time_s"])
            began = time.perf_counter()
            history = train.run(cfg, [MlflowTracker(cfg)])
            on_whole.append(time.perf_counter() - began)
            on_train.append(history.final["train_time_s"])  # the updates alone: what the tracker may slow down
            inside.append(history.final["callback_time_s"])  # its per-epoch callback, the only part inside the loop
        return min(off_train), min(on_train), min(inside), min(on_whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.random((M, D), dtype=np.float32)
    y = rng.integers(0, K, M)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mnist_shaped.npz"
        np.savez(path, X=X, y=y)
        rows, rates = [], [gemm_rate()]
        for batch in BATCHES:  # the GEMM rate is taken between the rows too: the best is the machine's rate
            runners = [gdexp_epoch(path, batch), torch_epoch(X, y, batch), blog_epoch(X, y, batch)]
            times: list[list[float]] = [[], [], []]
            for r in range(args.repeat):  # interleaved: a slower spell of a shared machine hits all three alike
                for runner, kept in zip(runners, times, strict=True):
                    if runner is not None and not (runner is runners[2] and batch == 32 and r > 0):  # blog@32: slow
                        kept.append(timed(runner))
            ours, theirs, blog = (min(t) if t else None for t in times)
            assert ours is not None and blog is not None
            rows.append((batch, ours, theirs, blog))
            rates.append(gemm_rate())
        rate = max(rates)
        print(f"float32 GEMM (2048^3, {os.cpu_count()} cores): {rate:.0f} GFLOP/s "
              f"(best of {len(rates)} taken between the rows; worst {min(rates):.0f})")
        print(f"{'batch':>6} {'gdexp s':>9} {'torch s':>9} {'blog s':>9} {'torch/gdexp':>12} {'blog/gdexp':>11}"
              f" {'GEMM share':>11}")
        for batch, ours, theirs, blog in rows:
            share = epoch_flops(M) / ours / 1e9 / rate
            print(f"{batch or 'full':>6} {ours:9.3f} {theirs if theirs else float('nan'):9.3f} {blog:9.3f} "
                  f"{(theirs / ours) if theirs else float('nan'):12.2f} {blog / ours:11.2f} {share:11.0%}")
        off, on, inside, whole = tracking_overhead(path, args.repeat)
        print(f"tracking, 3 epochs at batch 32: training {off:.3f} s off, {on:.3f} s on "
              f"({on / off - 1:+.1%}); inside the tracker during training {inside * 1000:.1f} ms "
              f"({inside / on:.2%}); whole run with tracking {whole:.3f} s ({whole / off - 1:+.1%} over training)")


if __name__ == "__main__":
    main()
