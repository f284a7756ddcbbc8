"""gdexp.ui: bad flags in one line (exit code 2) and nothing left behind; a UI for this machine only. The UI
serving a real sweep is tested with that sweep (`tests/test_report.py`), on a tracking server with users in
`tests/test_server.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdexp import ui
from tests.conftest import UNASSIGNED

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


