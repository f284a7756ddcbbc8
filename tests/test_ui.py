"""gdexp.ui: bad flags in one line (exit code 2) and nothing left behind; a UI for this machine only. The UI
serving a real sweep is tested with that sweep (`tests/test_report.py`), on a tracking server with users in
`tests/test_server.py`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gdexp import ui
from tests.conftest import gdexp

UNASSIGNED = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this machine

REFUSED = [
    (["--port", "99999"], "99999 is not a port"),
    (["--port", "http"], "'http' is not a port"),
    (["--host", UNASSIGNED], f"'{UNASSIGNED}' is not an address of this machine"),
    (["--host", "0.0.0.0"], "this UI has no login"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--uri", "sqlite:///none/mlflow.db"], "no MLflow store at sqlite:///none/mlflow.db yet"),
    (["--uri", "http://u:s3cr3t@127.0.0.1:1"], "--uri=http://u:***@127.0.0.1:1 cannot be used: nothing answers"),
]


@pytest.mark.parametrize("args,words", REFUSED)
def test_bad_flags_are_one_line_and_leave_nothing(args: list[str], words: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp.ui: ") and words in lines[0], lines
    assert "s3cr3t" not in lines[0] and list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--port", "99999"], ["--host", UNASSIGNED]])
def test_a_refusal_takes_under_three_seconds(args: list[str], tmp_path: Path) -> None:
    """As a user runs it: a fresh interpreter, its imports and the refusal. On a machine busier than its cores
    the bound grows with the load (the interpreter's start-up is most of the time)."""
    began = time.monotonic()
    result = gdexp("-m", "gdexp.ui", *args, cwd=tmp_path)
    took = time.monotonic() - began
    print(f"python -m gdexp.ui {' '.join(args)}: refused in {took:.2f} s")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert took < 3 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), f"{took:.2f} s"
    assert list(tmp_path.iterdir()) == []
