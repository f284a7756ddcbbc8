"""How much memory a config asks for, estimated before anything is allocated.

A typo (`train.epochs=1000000000000`, `model.hidden_size=65536 model.hidden_layers=3`, `data.n=...`) would
otherwise be found out by the kernel's OOM killer, with no message, or by a MemoryError deep in NumPy. The
estimate counts the large arrays a run holds: the data set (read as float64, then cast), the weights with
their gradients and optimizer state, the activations of a batch and of an evaluation chunk, the loss and
learning rate of every update, and the weights along a recorded trajectory; times the worker processes of a
local sweep. It is an estimate: it refuses
only what cannot fit in the memory the machine has free.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["available_memory", "estimate", "memory_problem"]

KNOWN = {"digits": (1797, 64, 10), "mnist": (70_000, 784, 10)}  # rows, features, outputs
EVAL_ROWS = 8192  # rows per evaluation pass (`gdexp.nn.mlp.EVAL_CHUNK`)
TRAJECTORY_INSIDE = 100  # points the trajectory records inside its first epochs, at most (EARLY_EPOCHS x EARLY_POINTS)
PROCESS = 150 * 2**20  # a worker's own interpreter, libraries and buffers


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (`MemAvailable`), or None where it cannot tell."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _shape(data: Any) -> tuple[float, float, float]:
    """(rows, features, outputs) of the data set a config names, without loading it."""
    name = str(data.name)
    if name in KNOWN:
        return KNOWN[name]
    if name in ("linear", "blobs"):
        return float(data.n), float(data.d), float(data.centers) if name == "blobs" else 1.0
    path = Path(str(data.path))
    if path.suffix.lower() == ".npz" and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive, archive.open("X.npy") as member:
                major, _ = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape = read(member)[0]
            return float(shape[0]), float(math.prod(shape[1:]) or 1), 10.0
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return 0.0, 0.0, 0.0  # unreadable: loading it says why
    size = path.stat().st_size if path.is_file() else 0
    return size / 8, 1.0, 10.0  # a CSV: at least a float64 per 8 bytes of text, as rows of one feature


def estimate(cfg: Any) -> dict[str, float]:
    """Bytes by part for one run of `cfg` (data, weights, activations, history), and `total`."""
    rows, features, outputs = _shape(cfg.data)
    item = 4 if cfg.train.dtype == "float32" else 8
    m = cfg.model
    sizes = [features, *[float(m.hidden_size)] * int(m.hidden_layers), outputs]
    params = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    held = (1 - float(cfg.data.get("test_fraction", 0.0))) * (1 - float(cfg.data.val_fraction))
    train = max(1.0, rows * held)
    batch = train if cfg.gd.batch_size is None else min(train, float(cfg.gd.batch_size))
    updates = float(cfg.train.epochs) * math.ceil(train / batch)
    width = sum(sizes[1:])
    parts = {
        "the data set": rows * features * (8 + item),
        "the weights, gradients and optimizer state": params * item * 4
        + (params * 8 * 4 if cfg.diagnostics.sharpness_every else 0),
        "the activations": (batch + min(rows, EVAL_ROWS)) * width * item * 2,
        "the loss and learning rate of every update": updates * 16,
        # the weights at every recorded point, in the model's dtype, then as float64 and centred for the plane
        "the recorded trajectory": (float(cfg.train.epochs) + 1 + TRAJECTORY_INSIDE) * params * (item + 16)
        if cfg.diagnostics.trajectory else 0.0,
    }
    parts["total"] = sum(parts.values())
    return parts


def _size(n: float) -> str:
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} kB"


def memory_problem(cfg: Any) -> str | None:
    """Why `cfg` cannot fit in this machine's free memory, with the estimate; None when it can (or when the free
    memory is unknown)."""
    free = available_memory()
    if free is None:
        return None
    parts = estimate(cfg)
    sweep = cfg.get("sweep")
    workers = 1
    if sweep is not None and sweep.launcher == "local":
        workers = max(1, min(int(sweep.n_workers), int(sweep.n_trials)))
    need = workers * (parts["total"] + PROCESS)
    if need <= free:
        return None
    largest = max((k for k in parts if k != "total"), key=lambda k: parts[k])
    each = f" x {workers} workers (sweep.n_workers)" if workers > 1 else ""
    return (f"this run needs about {_size(need)} of memory{each}, most of it for {largest} "
            f"({_size(parts[largest])}), and this machine has {_size(free)} free: make it smaller "
            "(train.epochs, model.hidden_size, model.hidden_layers, data.n, data.d, gd.batch_size"
            + (", or diagnostics.trajectory=false)" if cfg.diagnostics.trajectory else ")"))
