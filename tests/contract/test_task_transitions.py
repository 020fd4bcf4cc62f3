"""The batched task-transition writer on every backend: what it writes, fencing, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopline.core.errors import ConflictError, LeaseLostError
from loopline.core.runs import TaskState
from loopline.store import MetadataStore
from loopline.store.run_control import RunControl
from loopline.store.runs import RunQueries, TaskFinish, TaskStart, claim_run, create_run
from loopline.store.task_transitions import TransitionWriter

NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def _run(store: MetadataStore, keys: list[str]) -> tuple[str, dict[str, str]]:
    with store.write("tester") as uow:
        run = create_run(uow, "p", {}, keys, NOW)
    with store.write("tester") as uow:
        claim_run(uow, run.id, "me", datetime.now(UTC) + timedelta(hours=1), lambda _: False)
    return run.id, RunControl(store.engine).task_ids(run.id)


def _start(run_id: str, ids: dict[str, str], key: str, attempt: int = 1) -> TaskStart:
    return TaskStart(run_id, key, attempt, "me", NOW + timedelta(seconds=30), NOW, ids[key])


def test_a_batch_records_starts_finishes_and_settlements_as_the_orm_reads_them(
        store: MetadataStore) -> None:
    run_id, ids = _run(store, ["a", "b", "c"])
    writer = TransitionWriter(store.engine)
    writer.write((run_id, "me"), [_start(run_id, ids, "a")], [], [])
    later = NOW + timedelta(seconds=2)
    writer.write((run_id, "me"), [_start(run_id, ids, "b")], [
        TaskFinish(run_id, "a", 1, TaskState.SUCCEEDED, later, {"kind": "json", "value": [1]},
                   "k" * 64, task_id=ids["a"], logs={"stdout": {"tail": "hi"}})],
        [TaskFinish(run_id, "c", 0, TaskState.CACHED, later, {"kind": "json", "value": 2},
                    "c" * 64, task_id=ids["c"])])
    queries = RunQueries(store.engine)
    tasks = {t.task_key: t for t in queries.tasks(run_id)}
    assert tasks["a"].state is TaskState.SUCCEEDED and tasks["a"].outputs == {
        "kind": "json", "value": [1]}
    assert tasks["a"].finished_at == later and tasks["a"].lease_owner is None
    assert tasks["b"].state is TaskState.RUNNING and tasks["b"].started_at == later - \
        timedelta(seconds=2)
    assert tasks["b"].lease_expires_at == NOW + timedelta(seconds=30)
    assert tasks["c"].state is TaskState.CACHED and tasks["c"].cache_key == "c" * 64
    [attempt] = queries.attempts(run_id, "a")
    assert attempt.state is TaskState.SUCCEEDED and attempt.logs == {"stdout": {"tail": "hi"}}
    assert attempt.started_at == NOW and attempt.finished_at == later
    assert queries.attempts(run_id, "c") == []
    # the cache lookup the runner makes sees what the writer wrote
    assert RunControl(store.engine).cached_outputs(["k" * 64, "c" * 64]) == {
        "k" * 64: {"kind": "json", "value": [1]}, "c" * 64: {"kind": "json", "value": 2}}


def test_a_stale_transition_refuses_the_whole_batch(store: MetadataStore) -> None:
    run_id, ids = _run(store, ["a", "b"])
    writer = TransitionWriter(store.engine)
    writer.write((run_id, "me"), [_start(run_id, ids, "a")], [], [])
    stale = TaskFinish(run_id, "a", 7, TaskState.SUCCEEDED, NOW, {"kind": "json", "value": 1},
                       task_id=ids["a"])
    with pytest.raises(ConflictError, match="no longer current"):
        writer.write((run_id, "me"), [_start(run_id, ids, "b")], [stale], [])
    tasks = {t.task_key: t for t in RunQueries(store.engine).tasks(run_id)}
    assert tasks["b"].state is TaskState.PENDING  # the good start in that batch was not kept
    assert tasks["a"].state is TaskState.RUNNING
    with pytest.raises(ConflictError, match="cannot start"):
        writer.write((run_id, "me"), [_start(run_id, ids, "a")], [], [])  # attempt 1 again: fenced
    with pytest.raises(ConflictError, match="not pending"):
        writer.write((run_id, "me"), [], [], [TaskFinish(run_id, "a", 1, TaskState.CACHED, NOW,
                                         task_id=ids["a"])])


def test_a_retrying_finish_is_not_for_the_batch_writer(store: MetadataStore) -> None:
    run_id, ids = _run(store, ["a"])
    writer = TransitionWriter(store.engine)
    writer.write((run_id, "me"), [_start(run_id, ids, "a")], [], [])
    with pytest.raises(ValueError, match="retrying"):
        writer.write((run_id, "me"), [], [TaskFinish(run_id, "a", 1, TaskState.RETRYING, NOW,
                                     task_id=ids["a"])], [])


def test_a_runner_that_lost_the_run_writes_nothing(store: MetadataStore) -> None:
    run_id, ids = _run(store, ["a"])
    writer = TransitionWriter(store.engine)
    with pytest.raises(LeaseLostError):
        writer.write((run_id, "someone-else"), [_start(run_id, ids, "a")], [], [])
    [task] = RunQueries(store.engine).tasks(run_id)
    assert task.state is TaskState.PENDING
