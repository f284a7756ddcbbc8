"""Signals are raised at once in training and waits, and only after a store write has finished."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gdexp import stopping, train
from gdexp.tracking import MlflowTracker
from tests.conftest import mlflow_client


def _signal(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs before the next line does


def test_a_signal_inside_a_shielded_block_is_raised_as_it_ends(installed: None) -> None:
    done = []
    with pytest.raises(stopping.Terminated), stopping.shielded():
        _signal(signal.SIGTERM)
        done.append("rest of the write")
    assert done == ["rest of the write"] and isinstance(stopping.requested(), stopping.Terminated)


def test_interruptible_raises_at_once_also_inside_a_shield(installed: None) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), stopping.shielded(), stopping.interruptible():
        _signal(signal.SIGINT)
        done.append("never")
    assert done == [] and stopping._shield == 0


def test_a_signal_pending_from_a_shield_stops_the_next_interruptible_stretch(installed: None) -> None:
    with stopping.shielded():
        with stopping.shielded():
            _signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), stopping.interruptible():
            pytest.fail("the pending Ctrl-C should stop this stretch before it starts")


def _dropped(signum: int) -> None:
    """A signal whose handler runs inside a weakref callback, as the collector runs them at any instant
    (SQLAlchemy's sessions have them): Python drops what is raised there."""
    import weakref

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: _signal(signum))
    del thing
    assert ref() is None


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_dropped_in_a_weakref_callback_still_stops_the_command(installed: None, capsys, signum: int,
                                                                         code: int) -> None:
    """Python printed 'Exception ignored ... KeyboardInterrupt' and dropped it, and a sweep Ctrl-C'd as it ended
    exited 0 (a helper's fault-injection run hit it 8 times). The interruption stays pending: the command ends
    interrupted, with the shell's code."""
    from gdexp import errors

    assert errors.command("gdexp", lambda: _dropped(signum)) == code
    assert capsys.readouterr().err == "gdexp: interrupted\n"


def test_a_signal_dropped_in_a_weakref_callback_is_raised_at_the_next_shield(installed: None) -> None:
    stopping.install(once=True)  # a sweep worker's, which takes the first signal only
    _dropped(signal.SIGTERM)
    with pytest.raises(stopping.Terminated), stopping.shielded():
        pass


def test_a_worker_takes_the_first_signal_only(installed: None) -> None:
    stopping.install(once=True)
    with pytest.raises(stopping.Terminated):
        _signal(signal.SIGTERM)
    _signal(signal.SIGINT)  # ignored: the close-out goes on
    assert isinstance(stopping.requested(), stopping.Terminated)


def test_sigterm_while_the_run_is_being_closed_lets_it_close_first(installed: None, make_cfg, project: Path) -> None:
    """The tracker's close-out (final flush, tags, artifacts, end) runs whole; the signal comes after it."""
    def signal_then_tag(history: train.History, status: str) -> dict[str, str]:
        _signal(signal.SIGTERM)
        return {"closed": "whole"}

    cfg = make_cfg("train.epochs=3")
    tracker = MlflowTracker(cfg, end_tags=signal_then_tag)
    with pytest.raises(stopping.Terminated):
        train.run(cfg, [tracker])
    client = mlflow_client(cfg.tracking.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["closed"] == "whole"
    assert len(client.get_metric_history(tracker.run_id, "val_loss")) == 3 and "test_loss" in run.data.metrics
    assert {a.path for a in client.list_artifacts(tracker.run_id)} >= {"loss_curve.png", "weights.npz"}
