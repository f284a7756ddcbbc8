"""Data sets, splits, bad input, and the MNIST download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from gdexp.data import Batches, DataError, fetch_mnist, load
from gdexp.data._sources import SOURCES


def test_digits_split_is_fixed_and_scaled(make_cfg) -> None:
    data = load(make_cfg().data)
    assert data.task == "multiclass" and data.n_outputs == 10 and data.n_features == 64
    assert len(data.X_train) + len(data.X_val) + len(data.X_test) == 1797
    assert len(data.X_test) == 359 and data.X_train.min() >= 0.0 and data.X_train.max() <= 1.0
    assert data.X_train.dtype == np.float32
    again = load(make_cfg("train.seed=5").data)
    np.testing.assert_array_equal(data.X_test, again.X_test)


def test_digits_are_scikit_learns(make_cfg) -> None:
    """gdexp reads scikit-learn's digits file itself (no scikit-learn import): the same numbers."""
    from sklearn.datasets import load_digits

    X, y = SOURCES["digits"](make_cfg().data)
    bunch = load_digits()
    np.testing.assert_array_equal(X, bunch.data / 16.0)
    np.testing.assert_array_equal(y, bunch.target)


def test_standardize_uses_training_statistics_only(make_cfg) -> None:
    data = load(make_cfg("data=blobs", "data.standardize=true").data, "float64")
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0, atol=1e-12)
    assert not np.allclose(data.X_test.mean(axis=0), 0, atol=1e-6)


@pytest.mark.parametrize("y,task", [(np.array([0.5, 1.5, 2.25, 3.0] * 5), "regression"),
                                    (np.array([3, 7] * 10), "binary"), (np.array([1, 2, 3, 4] * 5), "multiclass")])
def test_task_auto(make_cfg, project: Path, y: np.ndarray, task: str) -> None:
    np.savez(project / "d.npz", X=np.arange(len(y) * 2, dtype=float).reshape(-1, 2), y=y)
    assert load(make_cfg("data=file", "data.path=d.npz").data).task == task


def test_loaded_once_per_config_and_file_version(make_cfg, project: Path) -> None:
    """A sweep's trials share one loaded data set; a changed file or config loads afresh."""
    path = project / "d.npz"
    np.savez(path, X=np.arange(40, dtype=float).reshape(-1, 2), y=np.array([0, 1] * 10))
    cfg = make_cfg("data=file", "data.path=d.npz").data
    first = load(cfg)
    assert load(cfg) is first and not first.X_train.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first.X_train[0, 0] = 1.0
    assert load(make_cfg("data=file", "data.path=d.npz", "data.split_seed=1").data) is not first
    np.savez(path, X=np.arange(60, dtype=float).reshape(-1, 2), y=np.array([0, 1] * 15))
    assert len(load(cfg).X_train) + len(load(cfg).X_val) + len(load(cfg).X_test) == 30


def test_csv_with_target_column(make_cfg, project: Path) -> None:
    (project / "d.csv").write_text("a,label,b\n" + "".join(f"{i},{i % 2},{i * 2}\n" for i in range(30)))
    data = load(make_cfg("data=file", "data.path=d.csv", "data.target=label").data)
    assert data.task == "binary" and data.n_features == 2


@pytest.mark.parametrize("X,y,message", [
    (np.array([[1.0, np.nan], [2.0, 3.0], [1, 1]]), np.array([0, 1, 0]), "NaN or infinite"),
    (np.ones((5, 2)), np.array([0, 1, 0]), "5 rows but y has 3"),
    (np.random.default_rng(0).random((10, 2)), np.zeros(10, dtype=int), "has only [0]"),
])
def test_bad_files_name_the_key(make_cfg, project: Path, X, y, message: str) -> None:
    np.savez(project / "bad.npz", X=X, y=y)
    cfg = make_cfg("data=file", "data.path=bad.npz", *(["data.task=multiclass"] if "only" in message else []))
    with pytest.raises(DataError, match=r"data\.path") as err:
        load(cfg.data)
    assert message in str(err.value)


def test_unreadable_file(make_cfg, project: Path) -> None:
    (project / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"data.path='junk.npz' cannot be read"):
        load(make_cfg("data=file", "data.path=junk.npz").data)


# ----------------------------------------------------------------------------------- MNIST over HTTP
def idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def mnist_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], list[str], list[str]]]:
    """A real HTTP server on 127.0.0.1 serving four small IDX files; yields (url, md5s, request log, the
    Authorization header of each request)."""
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (50, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx(np.arange(50) % 10),
        "t10k-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (20, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx(np.arange(20) % 10),
    }
    served = tmp_path / "served"
    served.mkdir()
    for name, blob in files.items():
        (served / name).write_bytes(blob)
    requests: list[str] = []
    auth: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, fmt: str, *args: object) -> None:
            requests.append(self.path)
            auth.append(self.headers.get("Authorization", ""))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # shutdown() waits a poll
    thread.start()
    try:
        md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in files.items()}
        yield f"http://127.0.0.1:{server.server_address[1]}/", md5, requests, auth
    finally:
        server.shutdown()
        server.server_close()


def mnist_cfg(make_cfg, url: str, md5: dict[str, str], cache: Path):
    cfg = make_cfg("data=mnist", f"data.cache_dir={cache}", "data.timeout_s=5")
    cfg.data.urls = [url]
    cfg.data.files = md5
    return cfg


@pytest.mark.slow  # starts an HTTP server
def test_mnist_download_checksum_and_cache(make_cfg, mnist_server, tmp_path: Path) -> None:
    url, md5, requests, _ = mnist_server
    cfg = mnist_cfg(make_cfg, url, md5, tmp_path / "cache")
    data = load(cfg.data)
    assert (len(data.X_train) + len(data.X_val), len(data.X_test), data.n_features) == (50, 20, 784)
    assert len(requests) == 4
    load(cfg.data)
    assert len(requests) == 4, "a second load is served from the cache"


@pytest.mark.slow  # starts an HTTP server
def test_a_mirror_with_a_user_and_password_gets_them_as_basic_auth(make_cfg, mnist_server, tmp_path: Path) -> None:
    """`https://user:pw@mirror/`: the credentials go as HTTP basic auth, not in the host name (once urllib looked up
    `alice:pw@127.0.0.1` as a host: the password in a DNS query, and no download)."""
    url, md5, requests, auth = mnist_server
    cfg = mnist_cfg(make_cfg, url.replace("http://", "http://alice:p%40ss@"), md5, tmp_path / "cache")
    fetch_mnist(cfg.data)
    assert len(requests) == 4 and set(auth) == {"Basic " + base64.b64encode(b"alice:p@ss").decode()}


@pytest.mark.slow  # starts an HTTP server
def test_mnist_corrupt_cache_is_fetched_again(make_cfg, mnist_server, tmp_path: Path) -> None:
    url, md5, requests, _ = mnist_server
    cfg = mnist_cfg(make_cfg, url, md5, tmp_path / "cache")
    paths = fetch_mnist(cfg.data)
    paths["t10k-labels-idx1-ubyte.gz"].write_bytes(b"corrupt")
    fetch_mnist(cfg.data)
    assert requests.count("/t10k-labels-idx1-ubyte.gz") == 2 and len(requests) == 5
    assert hashlib.md5(paths["t10k-labels-idx1-ubyte.gz"].read_bytes()).hexdigest() == md5["t10k-labels-idx1-ubyte.gz"]


@pytest.mark.slow  # starts an HTTP server
def test_mnist_wrong_checksum_from_server_is_refused(make_cfg, mnist_server, tmp_path: Path) -> None:
    url, md5, _, _ = mnist_server
    cfg = mnist_cfg(make_cfg, url, {**md5, "train-images-idx3-ubyte.gz": "0" * 32}, tmp_path / "cache")
    with pytest.raises(DataError, match="does not match"):
        fetch_mnist(cfg.data)
    assert not list((tmp_path / "cache").glob("train-images*")), "nothing half-written is left in the cache"


def test_mnist_unreachable_names_the_files_and_where_to_put_them(make_cfg, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    files = dict(OmegaConf.to_container(make_cfg("data=mnist").data.files))
    cfg = mnist_cfg(make_cfg, f"http://127.0.0.1:{port}/", files, tmp_path / "cache")
    with pytest.raises(DataError) as err:
        fetch_mnist(cfg.data)
    text = str(err.value)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", str(tmp_path / "cache")):
        assert name in text


@pytest.mark.parametrize("size", [1, 32, 37, 100, None])
def test_batches_are_the_epochs_permutation_cut_in_order(size: int | None) -> None:
    """Each epoch: rows perm[0:size], perm[size:2*size], ... of one permutation per epoch (the last batch
    shorter); a full batch is the set itself, unshuffled."""
    X = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    y = np.arange(100)
    batches = Batches(X, y, size, True, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    for _ in range(2):
        perm = rng.permutation(100) if size not in (None, 100) else np.arange(100)
        seen = [(xb.copy(), yb.copy()) for xb, yb in batches]
        step = size or 100
        assert len(seen) == len(batches) == -(-100 // step)
        for i, (xb, yb) in enumerate(seen):
            rows = perm[i * step : (i + 1) * step]
            assert np.array_equal(xb, X[rows]) and np.array_equal(yb, y[rows])
