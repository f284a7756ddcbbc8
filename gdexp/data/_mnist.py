"""MNIST: downloaded once from the first mirror that answers, checked against its MD5, cached, read."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from gdexp.config import without_credentials
from gdexp.data._sources import DataError

__all__ = ["fetch_mnist", "mnist", "read_idx"]

log = logging.getLogger("gdexp.data")

MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _request(url: str) -> urllib.request.Request:
    """The request for `url`; a user and password in it (`https://user:pw@mirror/`) are sent as HTTP basic auth,
    the URL without them. urllib itself would take `user:pw@host` for the host name and look it up: the password
    in a DNS query, and no download."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    plain = without_credentials(url)
    secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    basic = base64.b64encode(secret.encode()).decode()
    return urllib.request.Request(plain, headers={"Authorization": f"Basic {basic}"})


def _download(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Fetch `url` into a temporary file beside `dest`, check its MD5, then rename it into place, so
    that an interrupted or corrupt download never replaces what the cache holds."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(_request(url), timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        got = _md5(Path(tmp))
        if got != md5:
            raise ValueError(f"MD5 {got} does not match the expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_mnist(cfg: DictConfig) -> dict[str, Path]:
    """Make sure the four MNIST files are in `data.cache_dir` with the right checksums; return their paths.

    A cached file whose checksum is wrong is fetched again (the bad copy stays until a good one
    replaces it). When no mirror answers, the error names the files and where to put them by hand.
    """
    cache = Path(os.path.expanduser(str(cfg.cache_dir)))
    made = [folder for folder in (cache, *cache.parents) if not folder.exists()]  # removed again if nothing lands
    cache.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, md5 in cfg.files.items():
        path = cache / str(name)
        if path.exists():
            if _md5(path) == md5:
                paths[str(name)] = path
                continue
            log.warning("%s in the cache is corrupt (checksum mismatch): fetching it again", path)
        errors = []
        for base in cfg.urls:
            url = str(base).rstrip("/") + "/" + str(name)
            try:
                _download(url, path, str(md5), float(cfg.timeout_s))
                break
            except (OSError, urllib.error.URLError, ValueError) as exc:
                errors.append(f"  {url}: {exc}")
        else:
            names = ", ".join(str(n) for n in cfg.files)
            for folder in made:  # a failed download leaves no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise DataError(
                f"could not download {name} from any of data.urls ({len(errors)} tried; {errors[0].strip()}); "
                f"without a network, put the four files {names} into {cache} by hand (or point data.cache_dir at a "
                "folder that has them)")
        paths[str(name)] = path
    return paths


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format) into an array of its shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def mnist(cfg: DictConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    paths = fetch_mnist(cfg)

    def part(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
        X = read_idx(paths[images])
        return X.reshape(len(X), -1) / 255.0, read_idx(paths[labels])

    return part(*MNIST_TRAIN), part(*MNIST_TEST)
