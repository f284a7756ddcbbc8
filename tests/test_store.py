"""The one door to MLflow, on MLflow's real SQLite store: experiments, runs, chunked writes, bulk reads."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from gdexp import stopping, store
from tests.conftest import mlflow_client

URI = "sqlite:///mlruns/mlflow.db"


def test_experiment_is_created_once_marked_for_model_training_with_artifacts_beside_the_store(project: Path) -> None:
    first = store.ensure_experiment(URI, "gdexp")
    assert store.ensure_experiment(URI, "gdexp") == first == store.find_experiment(URI, "gdexp")
    experiment = mlflow_client(URI).get_experiment(first)
    assert experiment.tags[store.EXPERIMENT_KIND[0]] == store.EXPERIMENT_KIND[1]
    assert experiment.artifact_location == (project / "mlruns" / "artifacts" / "gdexp").as_uri()


def test_writes_are_chunked_to_mlflows_limits_and_read_back_in_bulk(project: Path) -> None:
    experiment = store.ensure_experiment(URI, "gdexp")
    ids = [store.create_run(URI, experiment, f"r{i}", {"k": str(i)}) for i in range(2)]
    points = [store.metric("loss", 1.0 / (step + 1), step, 0) for step in range(2500)]  # 3 batches of <= 1000
    store.log_metrics(URI, ids[0], points)
    store.log_params(URI, ids[0], {f"p{i}": i for i in range(250)})  # 3 batches of <= 100
    store.end_run(URI, ids[0], "FINISHED")
    histories = store.metric_histories(URI, ids, "loss")
    assert histories[ids[0]] == [1.0 / (step + 1) for step in range(2500)] and histories[ids[1]] == []
    run = mlflow_client(URI).get_run(ids[0])
    assert len(run.data.params) == 250 and run.info.status == "FINISHED"
    assert [r.info.run_id for r in store.search_runs(URI, experiment, "tags.k = '1'")] == [ids[1]]


def test_the_bulk_reader_is_there_on_this_mlflow(project: Path) -> None:
    """The one private attribute gdexp reads (MlflowClient._tracking_client.store.get_metric_history_bulk),
    pinned to the MLflow version range in pyproject.toml: if MLflow moves it, this fails, not the report."""
    import mlflow

    store.ensure_experiment(URI, "gdexp")
    assert store._bulk_reader(URI) is not None, f"MLflow {mlflow.__version__} moved get_metric_history_bulk"


def test_a_signal_during_a_write_is_raised_after_it(project: Path, installed: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = store.ensure_experiment(URI, "gdexp")
    run_id = store.create_run(URI, experiment, "r", {})
    real = store._client(URI)

    class Interrupting:
        def __getattr__(self, name: str):
            return getattr(real, name)

        def log_batch(self, *args, **kwargs):
            signal.raise_signal(signal.SIGTERM)  # arrives in the middle of the write
            return real.log_batch(*args, **kwargs)

    monkeypatch.setattr(store, "_client", lambda uri: Interrupting())
    with pytest.raises(stopping.Terminated):
        store.set_tags(URI, run_id, {"written": "whole"})
    assert mlflow_client(URI).get_run(run_id).data.tags["written"] == "whole"


def test_a_missing_local_store_is_told_apart(project: Path) -> None:
    assert store.local_store_missing("sqlite:///nowhere/mlflow.db")
    store.ensure_experiment(URI, "gdexp")
    assert not store.local_store_missing(URI)


def test_an_experiment_made_before_the_mark_gets_it_when_used_again(project: Path) -> None:
    """MLflow 3's UI opens a GenAI overview unless the experiment says it holds model training."""
    client = mlflow_client(URI)
    older = client.create_experiment("older")
    assert store.EXPERIMENT_KIND[0] not in client.get_experiment(older).tags
    assert store.ensure_experiment(URI, "older") == older
    assert client.get_experiment(older).tags[store.EXPERIMENT_KIND[0]] == "custom_model_development"


@pytest.mark.parametrize("name", ["../../x", "/tmp/gdexp-outside", "..", "a/b\\c"])
def test_an_experiment_name_never_puts_artifacts_outside_the_store(project: Path, name: str) -> None:
    experiment = store.ensure_experiment(URI, name)
    location = Path(mlflow_client(URI).get_experiment(experiment).artifact_location.removeprefix("file://"))
    assert location.parent == (project / "mlruns" / "artifacts").resolve()


def test_a_batch_too_large_for_one_write_writes_its_tags_last(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,500 points and 150 params need several writes: the tags (a run's end tags: optuna.state, regime) are in
    the last, after every metric, so a write cut between two never leaves a run that says COMPLETE without its
    curve; every point, param and tag arrives."""
    experiment = store.ensure_experiment(URI, "gdexp")
    run_id = store.create_run(URI, experiment, "r", {})
    real, calls = store._client(URI), []

    class Recording:
        def __getattr__(self, name: str):
            return getattr(real, name)

        def log_batch(self, run_id, *, metrics, params, tags, synchronous):
            calls.append((len(metrics), len(params), len(tags)))
            return real.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    monkeypatch.setattr(store, "_client", lambda uri: Recording())
    points = [store.metric("m", float(i), i, 1_000 + i) for i in range(2500)]
    store.log_batch(URI, run_id, metrics=points, params={f"p{i}": i for i in range(150)},
                    tags={"optuna.state": "COMPLETE", "regime": "just_right"})
    assert len(calls) >= 3 and all(t == 0 for _, _, t in calls[:-1]) and calls[-1][2] == 2, calls
    run = mlflow_client(URI).get_run(run_id)
    assert len(run.data.params) == 150 and run.data.tags["regime"] == "just_right"
    assert len(mlflow_client(URI).get_metric_history(run_id, "m")) == 2500


def test_an_experiment_tag_another_process_set_first_is_set_again(project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two commands of one sweep, ending together, save the same new experiment tag (the UI's view): MLflow reads
    then inserts, so the later insert fails on the key's uniqueness (PostgreSQL's words below, seen through a
    server under a CPU hog). Here the other writer is a second client of the real store, writing between; the
    write is made again, as an update, and ends with this process's value. Any other failure is raised."""
    from mlflow.exceptions import MlflowException

    uri = store.DEFAULT_URI
    experiment_id = store.ensure_experiment(uri, "gdexp")
    client = store._client(uri)
    real, calls = client.set_experiment_tag, []

    def raced(eid: str, key: str, value: str) -> None:
        calls.append(value)
        if len(calls) == 1:
            mlflow_client(uri).set_experiment_tag(eid, key, "the other command's")
            raise MlflowException('BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates '
                                  'unique constraint "experiment_tag_pk"')
        real(eid, key, value)

    monkeypatch.setattr(client, "set_experiment_tag", raced)
    store.set_experiment_tag(uri, experiment_id, "view", "mine")
    assert calls == ["mine", "mine"] and mlflow_client(uri).get_experiment(experiment_id).tags["view"] == "mine"

    def refused(eid: str, key: str, value: str) -> None:
        raise MlflowException("INVALID_PARAMETER_VALUE: the tag's value is too long")

    monkeypatch.setattr(client, "set_experiment_tag", refused)
    with pytest.raises(MlflowException, match="too long"):
        store.set_experiment_tag(uri, experiment_id, "view", "x")
