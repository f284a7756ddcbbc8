"""gdexp.server: bad flags in one line (exit code 2) before anything starts, and nothing left behind; in well under
three seconds. Serving is tested where it is used (tests/test_scale.py, tests/test_outages.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gdexp import server
from tests.conftest import gdexp

UNASSIGNED = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this machine

REFUSED = [  # (flags after --backend-store-uri, words of the one line)
    (["--port", "99999"], "99999 is not a port"),
    (["--host", UNASSIGNED], f"'{UNASSIGNED}' is not an address of this machine"),
    (["--workers", "0"], "'0' is not allowed: give a whole number >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("flags,words", REFUSED)
def test_bad_flags_are_one_line_and_leave_nothing(flags: list[str], words: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert server.main(["--backend-store-uri", "sqlite:///m.db", *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp.server: ") and words in lines[0], lines
    assert list(tmp_path.iterdir()) == [], "nothing left behind"


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--port", "99999"], ["--host", UNASSIGNED]])
def test_a_refusal_takes_under_three_seconds(args: list[str], tmp_path: Path) -> None:
    """As a user runs it: a fresh interpreter, its imports and the refusal. On a machine busier than its cores
    the bound grows with the load (the interpreter's start-up is most of the time)."""
    began = time.monotonic()
    result = gdexp("-m", "gdexp.server", "--backend-store-uri", "sqlite:///m.db", *args, cwd=tmp_path)
    took = time.monotonic() - began
    print(f"python -m gdexp.server {' '.join(args)}: refused in {took:.2f} s")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert took < 3 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), f"{took:.2f} s"
    assert list(tmp_path.iterdir()) == []
