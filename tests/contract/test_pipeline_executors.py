"""The same pipelines on every executor (thread, process, Ray), timeouts that stop tasks,
cancel requests, the live observer, and what a run records about itself."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopline import current_task, pipeline, task
from loopline.artifacts import ContentAddressedStore
from loopline.core.runs import RunState, TaskState
from loopline.pipelines import AttemptTimeoutError, Runner, RunnerOptions, TaskUpdate
from loopline.store import MetadataStore

GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset_gate() -> None:
    GATE.clear()


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "artifacts")


def make_runner(store: MetadataStore, blobs: ContentAddressedStore, **options: Any) -> Runner:
    defaults: dict[str, Any] = {"actor": "tester", "max_workers": 2}
    return Runner(store, blobs, RunnerOptions(**{**defaults, **options}))


@task
def square(x: int) -> int:
    return x * x


@task
def blob_of(values: list[int]) -> bytes:
    return bytes(v % 256 for v in values)


@task
def total(values: list[int], blob: bytes) -> dict[str, Any]:
    return {"sum": sum(values), "blob_len": len(blob), "key": current_task().task_key}


@task
def gather(*values: int) -> list[int]:
    return list(values)


@pipeline
def fan_out(n: int = 5) -> dict[str, Any]:
    squares = [square(i) for i in range(n)]
    values = gather(*squares)
    return total(values, blob_of(values))


@pytest.mark.parametrize("executor", [
    "thread", "process", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_pipeline_gives_the_same_outputs_on_every_executor(
        executor: str, store: MetadataStore, blobs: ContentAddressedStore,
        request: pytest.FixtureRequest) -> None:
    if executor == "ray":
        request.getfixturevalue("ray_runtime")
    runner = make_runner(store, blobs, executor=executor, cache=False)
    try:
        result = runner.run(fan_out, {"n": 5})
    finally:
        runner.close()
    assert result.succeeded, result.run.error
    assert result.result == {"sum": 30, "blob_len": 5, "key": "total"}
    tasks = {t.task_key: t for t in runner.runs.tasks(result.run.id)}
    assert tasks["blob_of"].outputs is not None
    # the bytes output went to the artifact store by its content hash, on every executor
    assert tasks["blob_of"].outputs["kind"] == "bytes"
    assert blobs.get_bytes(tasks["blob_of"].outputs["digest"]) == bytes([0, 1, 4, 9, 16])


@task(timeout=0.3, retries=0)
def spins_forever() -> None:
    while True:
        time.sleep(0.01)


@pipeline
def hangs() -> None:
    spins_forever()


def _attempt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "loopline-attempt" and t.is_alive()]


def test_a_thread_attempt_past_its_timeout_is_stopped(store: MetadataStore,
                                                      blobs: ContentAddressedStore) -> None:
    before = len(_attempt_threads())
    result = make_runner(store, blobs).run(hangs)
    assert result.run.state is RunState.FAILED
    assert isinstance(result.error.__cause__ if result.error else None, AttemptTimeoutError)
    assert "was stopped" in (result.run.error or "")
    assert len(_attempt_threads()) == before  # the spinning thread really ended


@task(timeout=1.0)
def sleeps_in_a_process(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(3600)


@pipeline
def hangs_in_a_process(pid_file: str) -> None:
    sleeps_in_a_process(pid_file)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_process_attempt_past_its_timeout_is_killed(store: MetadataStore,
                                                      blobs: ContentAddressedStore,
                                                      tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    runner = make_runner(store, blobs, executor="process")
    try:
        result = runner.run(hangs_in_a_process, {"pid_file": str(pid_file)})
    finally:
        runner.close()
    assert result.run.state is RunState.FAILED
    assert "killed" in (result.run.error or "")
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


ATTEMPTS: list[int] = []


@task(timeout=0.3, retries=1, retry_delay=0, retry_on=TimeoutError)
def hangs_once() -> str:
    ATTEMPTS.append(current_task().attempt)
    if len(ATTEMPTS) == 1:
        while True:
            time.sleep(0.01)
    return "second time lucky"


@pipeline
def recovers() -> str:
    return hangs_once()


def test_a_stopped_thread_attempt_may_be_retried(store: MetadataStore,
                                                 blobs: ContentAddressedStore) -> None:
    ATTEMPTS.clear()
    result = make_runner(store, blobs).run(recovers)
    assert result.succeeded and result.result == "second time lucky"
    assert ATTEMPTS == [1, 2]
    attempts = make_runner(store, blobs).runs.attempts(result.run.id, "hangs_once")
    assert [a.state for a in attempts] == [TaskState.FAILED, TaskState.SUCCEEDED]
    assert "timeout" in (attempts[0].error or "")


@task(cache=False)
def waits_for_gate(x: int) -> int:
    GATE.wait(10)
    return x + 1


@pipeline
def gated_chain() -> int:
    return waits_for_gate(waits_for_gate(waits_for_gate(0)))


def test_a_cancelled_run_starts_no_more_tasks(store: MetadataStore,
                                              blobs: ContentAddressedStore) -> None:
    updates: list[TaskUpdate] = []
    runner = make_runner(store, blobs, heartbeat_seconds=0.05, lease_seconds=5,
                         observer=updates.append)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(r=runner.run(gated_chain)))
    worker.start()
    deadline = time.monotonic() + 10
    while not any(u.state is TaskState.RUNNING for u in updates):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run_id = updates[0].run_id
    assert runner.cancel(run_id) is True
    assert runner.cancel(run_id) is False  # asked once is enough
    time.sleep(0.3)  # a few heartbeats: the runner notices
    GATE.set()
    worker.join(10)
    result = outcome["r"]
    assert result.run.state is RunState.CANCELLED
    states = {t.task_key: t.state for t in runner.runs.tasks(run_id)}
    assert states == {"waits_for_gate": TaskState.SUCCEEDED,
                      "waits_for_gate-2": TaskState.CANCELLED,
                      "waits_for_gate-3": TaskState.CANCELLED}
    entries = [e for e in store.audit.entries() if e.action == "pipeline_run.cancel_requested"]
    assert len(entries) == 1 and entries[0].actor == "tester"


def test_a_finished_run_cannot_be_cancelled(store: MetadataStore,
                                            blobs: ContentAddressedStore) -> None:
    from loopline.core.errors import InvalidTransitionError
    runner = make_runner(store, blobs)
    result = runner.run(fan_out, {"n": 2})
    with pytest.raises(InvalidTransitionError):
        runner.cancel(result.run.id)


def test_the_observer_sees_every_transition_after_it_is_committed(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    seen: list[tuple[str, TaskState]] = []
    runner = make_runner(store, blobs)

    def observe(update: TaskUpdate) -> None:
        recorded = {t.task_key: t.state for t in runner.runs.tasks(update.run_id)}
        assert recorded[update.task_key] is update.state  # durable before it is shown
        seen.append((update.task_key, update.state))

    runner = make_runner(store, blobs, observer=observe, cache=False)
    result = runner.run(fan_out, {"n": 2})
    assert result.succeeded
    assert seen.count(("total", TaskState.RUNNING)) == 1
    assert seen[-1] == ("total", TaskState.SUCCEEDED)
    assert len(seen) == 2 * 5


@task
def explodes() -> None:
    raise ValueError("the model diverged")


@pipeline
def broken() -> None:
    explodes()


def test_a_failed_attempt_keeps_its_traceback(store: MetadataStore,
                                              blobs: ContentAddressedStore) -> None:
    runner = make_runner(store, blobs)
    result = runner.run(broken)
    attempt = runner.runs.attempts(result.run.id, "explodes")[0]
    assert attempt.error == "ValueError: the model diverged"
    assert attempt.traceback is not None and "in explodes" in attempt.traceback


def test_a_run_records_its_code_environment_and_lineage(store: MetadataStore,
                                                        blobs: ContentAddressedStore) -> None:
    from loopline.core.lineage import NodeKind, NodeRef
    from loopline.data.lineage import LineageService

    runner = make_runner(store, blobs)
    result = runner.run(fan_out, {"n": 2})
    run = result.run
    assert run.environment is not None and blobs.exists(run.environment["artifact"])
    assert run.code_version is not None and "dirty" in run.code_version
    outputs = {t.task_key: t for t in runner.runs.tasks(run.id)}["blob_of"].outputs
    assert outputs is not None
    graph = LineageService(store).upstream(NodeRef(NodeKind.ARTIFACT, outputs["digest"]))
    kinds = {node.ref.kind for node in graph.nodes}
    assert NodeKind.TASK_RUN in kinds and NodeKind.ENVIRONMENT in kinds


WORKSPACE: dict[str, Any] = {}


@task
def count_rows(ref: str) -> int:
    current_task().used("custom.report:weekly")  # an input loopline cannot see by itself
    return int(WORKSPACE["ws"].datasets.read(ref).num_rows)


@pipeline
def reads_a_snapshot(ref: str) -> int:
    return count_rows(ref)


def test_a_dataset_read_inside_a_task_becomes_lineage_of_the_run(ws: Any) -> None:
    import pandas as pd

    from loopline.core.lineage import NodeKind, NodeRef
    version = ws.datasets.snapshot(pd.DataFrame({"x": [1, 2, 3]}), "orders").version
    WORKSPACE["ws"] = ws
    try:
        result = ws.pipelines.run(reads_a_snapshot, {"ref": version.ref})
        again = ws.pipelines.run(reads_a_snapshot, {"ref": version.ref})  # a cache hit
    finally:
        WORKSPACE.clear()
    assert result.result == 3 and again.result == 3
    assert {t.state for t in ws.pipelines.runs.tasks(again.run.id)} == {TaskState.CACHED}
    for run in (result.run, again.run):
        task_node = NodeRef(NodeKind.TASK_RUN, f"{run.id}/count_rows")
        upstream = {node.ref.id for node in ws.lineage.upstream(task_node, depth=1).nodes}
        assert f"dataset_snapshot:{version.ref}" in upstream
        assert "custom.report:weekly" in upstream
    downstream = ws.lineage.downstream(f"dataset_snapshot:{version.ref}")
    assert f"task_run:{result.run.id}/count_rows" in downstream.ids()


@task(timeout=0.3, retries=0)
def swallows_everything() -> None:
    while True:
        with contextlib.suppress(Exception):  # a task that hides its errors, on purpose
            time.sleep(0.01)


@pipeline
def stubborn() -> None:
    swallows_everything()


def test_a_timeout_is_not_swallowed_by_a_task_catching_exception(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    before = len(_attempt_threads())
    result = make_runner(store, blobs).run(stubborn)
    assert result.run.state is RunState.FAILED and "was stopped" in (result.run.error or "")
    assert len(_attempt_threads()) == before


@task(retries=50, retry_delay=0.05, jitter=0, backoff=1)
def always_flaky() -> None:
    raise ConnectionError("upstream down")


@pipeline
def hopeless() -> None:
    always_flaky()


def test_a_cancelled_run_starts_no_more_retries(store: MetadataStore,
                                                blobs: ContentAddressedStore) -> None:
    runner = make_runner(store, blobs, heartbeat_seconds=0.05, lease_seconds=5)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(r=runner.run(hopeless)))
    worker.start()
    deadline = time.monotonic() + 10
    while not runner.runs.runs() or len(runner.runs.attempts(
            runner.runs.runs()[0].id, "always_flaky")) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.cancel(runner.runs.runs()[0].id)
    worker.join(10)
    result = outcome["r"]
    assert result.run.state is RunState.CANCELLED
    [task_run] = runner.runs.tasks(result.run.id)
    assert task_run.state is TaskState.CANCELLED
    assert task_run.attempt < 40  # stopped within a few heartbeats, not after 50 retries


def test_a_pending_run_is_cancelled_at_once_and_cannot_then_run(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    from loopline.core.errors import InvalidTransitionError
    runner = make_runner(store, blobs)
    run = runner.create(fan_out, {"n": 2})
    assert runner.cancel(run.id) is True
    assert runner.runs.run(run.id).state is RunState.CANCELLED
    assert {t.state for t in runner.runs.tasks(run.id)} == {TaskState.CANCELLED}
    with pytest.raises(InvalidTransitionError, match="cancelled"):
        runner.resume(run.id, fan_out)


def test_a_failed_run_cannot_be_cancelled(store: MetadataStore,
                                          blobs: ContentAddressedStore) -> None:
    from loopline.core.errors import InvalidTransitionError
    runner = make_runner(store, blobs)
    failed = runner.run(broken)
    with pytest.raises(InvalidTransitionError, match="failed"):
        runner.cancel(failed.run.id)


STALL = threading.Event()
STALLED_CALLS: list[str] = []


@task(cache=False)
def stalls_first_time() -> int:
    STALLED_CALLS.append("call")
    if len(STALLED_CALLS) == 1:
        STALL.wait(10)  # the first runner hangs here while its lease lapses
    return len(STALLED_CALLS)


@task(cache=False)
def after_stall(n: int) -> int:
    return n * 10


@pipeline
def stalling() -> int:
    return after_stall(stalls_first_time())


def test_a_runner_that_lost_its_run_stops_and_records_nothing(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    import sqlalchemy as sa

    from loopline.core.errors import LeaseLostError
    STALL.clear()
    STALLED_CALLS.clear()
    first = make_runner(store, blobs, heartbeat_seconds=30, lease_seconds=60)
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run(stalling)
        except BaseException as exc:  # noqa: BLE001 - what the stalled runner raised
            errors.append(exc)

    worker = threading.Thread(target=run_first)
    worker.start()
    deadline = time.monotonic() + 10
    while not STALLED_CALLS:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run_id = first.runs.runs()[0].id
    past = datetime.now(UTC) - timedelta(minutes=5)
    with store.engine.begin() as connection:  # the first runner's leases lapse
        connection.execute(sa.text("UPDATE pipeline_runs SET lease_expires_at = :t, owner = "
                                   "'stalled-host:1:x' WHERE id = :id"), {"t": past, "id": run_id})
        connection.execute(sa.text("UPDATE task_runs SET lease_expires_at = :t, lease_owner = "
                                   "'stalled-host:1:x' WHERE run_id = :id AND state = 'running'"),
                           {"t": past, "id": run_id})
    second = make_runner(store, blobs)
    taken = second.resume(run_id, stalling)
    assert taken.succeeded and taken.result == 20
    events = store.events.count()
    STALL.set()
    worker.join(10)
    assert len(errors) == 1 and isinstance(errors[0], LeaseLostError)
    final = second.runs.run(run_id)
    assert final.state is RunState.SUCCEEDED and final.finished_at == taken.run.finished_at
    assert store.events.count() == events  # the stalled runner wrote no second verdict


def test_a_lease_holder_in_another_pid_namespace_is_never_taken_for_gone() -> None:
    import socket

    from loopline.pipelines.runner import _lease_owner, _owner_is_gone, _pid_namespace
    host = socket.gethostname()
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process here
    assert _owner_is_gone(f"{host}:{dead}:{_pid_namespace()}:abcd1234")
    assert not _owner_is_gone(f"{host}:{dead}:other-namespace:abcd1234")
    assert not _owner_is_gone(f"elsewhere:{dead}:{_pid_namespace()}:abcd1234")
    assert not _owner_is_gone(_lease_owner())  # this very process is alive
