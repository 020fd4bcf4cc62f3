"""The process invoker runs attempts in spawned workers, kills them on timeout, survives deaths."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import process_tasks
import pytest

from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import InvalidArgumentError
from loopline.pipelines.outputs import INLINE_LIMIT, encode_output
from loopline.pipelines.process_pool import ProcessInvoker
from loopline.pipelines.remote import (
    AttemptTimeoutError,
    CallResult,
    InputRef,
    Invoker,
    RemoteTaskFailure,
    TaskCall,
    WorkerLostError,
    error_matches,
)

LONG = 60.0  # a timeout no healthy call reaches; it only bounds a broken test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path_factory.mktemp("process") / "blobs")


@pytest.fixture(scope="module")
def invoker() -> Iterator[ProcessInvoker]:
    """One worker, shared by the tests of this module: a worker costs a fresh interpreter."""
    pool = ProcessInvoker(max_workers=1)
    yield pool
    pool.close()


def make_call(fn: Callable[..., Any], store: ContentAddressedStore, *args: Any,
              key: str = "task", **kwargs: Any) -> TaskCall:
    return TaskCall("run-1", key, fn.__name__, 1, args, kwargs, StoreAddress.of(store),
                    INLINE_LIMIT, fn)


def run(invoker: Invoker, store: ContentAddressedStore, fn: Callable[..., Any], *args: Any,
        timeout: float | None = LONG) -> CallResult:
    return invoker.invoke(make_call(fn, store, *args), timeout)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_task_reads_its_input_from_the_store_and_returns_its_output_record(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    upstream = encode_output("upstream", 40, store)

    result = run(invoker, store, process_tasks.add, InputRef(upstream), 2)

    assert result.error is None
    assert result.record == {"kind": "json", "value": 42}


def test_a_bytes_output_is_written_to_the_artifact_store_by_the_worker(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    upstream = encode_output("upstream", b"ab", store)

    result = run(invoker, store, process_tasks.repeat_bytes, InputRef(upstream), 3)

    assert result.error is None and result.record is not None
    assert result.record["kind"] == "bytes"
    assert store.get_bytes(result.record["digest"]) == b"ababab"


def test_the_task_sees_its_own_context_in_the_worker(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    call = make_call(process_tasks.task_identity, store, key="train.fit")

    result = invoker.invoke(call, LONG)

    assert result.record == {"kind": "json", "value": ["run-1", "train.fit", 1]}


def test_captured_logs_come_back_from_the_worker(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    result = run(invoker, store, process_tasks.record_stdout, "hello from the worker\n")

    assert result.error is None
    assert result.logs["stdout"]["tail"] == "hello from the worker\n"
    assert store.get_bytes(result.logs["stdout"]["digest"]) == b"hello from the worker\n"


def test_a_task_exception_comes_back_as_a_remote_failure_and_keeps_the_worker(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    before = run(invoker, store, process_tasks.worker_pid).record

    result = run(invoker, store, process_tasks.fail_with_value_error)

    error = result.error
    assert isinstance(error, RemoteTaskFailure)
    assert error.type_name == "ValueError" and error.message == "bad"
    assert "builtins.ValueError" in error.mro
    assert "fail_with_value_error" in error.traceback_text
    assert error_matches(error, (ValueError,))
    assert not error_matches(error, (KeyError,))
    assert run(invoker, store, process_tasks.worker_pid).record == before


@pytest.mark.parametrize("hang", [process_tasks.spin_forever, process_tasks.sleep_forever],
                         ids=["busy-loop", "sleep"])
def test_a_timeout_kills_the_worker_process_and_the_next_call_gets_a_fresh_one(
        invoker: ProcessInvoker, store: ContentAddressedStore,
        hang: Callable[[], None]) -> None:
    first = run(invoker, store, process_tasks.worker_pid).record
    assert first is not None
    pid = first["value"]  # max_workers=1: the hanging call runs on this very worker

    started = time.monotonic()
    result = run(invoker, store, hang, timeout=0.5)
    elapsed = time.monotonic() - started

    assert isinstance(result.error, AttemptTimeoutError)
    assert "timeout of 0.5 s and its process was killed" in str(result.error)
    assert elapsed < 10  # not 3600 s, nor forever; loose: the machine is shared
    assert not is_running(pid)
    after = run(invoker, store, process_tasks.add, 1, 2)
    assert after.record == {"kind": "json", "value": 3}


def test_importing_the_task_module_does_not_count_against_the_timeout(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    import slow_import_tasks  # the worker imports it again, as slowly, before the task starts

    result = run(invoker, store, slow_import_tasks.quick,
                 timeout=slow_import_tasks.IMPORT_SECONDS / 2)

    assert result.error is None
    assert result.record == {"kind": "json", "value": "done"}


def test_a_worker_that_exits_during_the_call_is_reported_lost_with_its_exit_code(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    result = run(invoker, store, process_tasks.exit_hard, 3)

    assert isinstance(result.error, WorkerLostError)
    assert "exit code 3" in str(result.error)
    assert run(invoker, store, process_tasks.add, 2, 2).record == {"kind": "json", "value": 4}


def test_a_worker_killed_by_a_signal_is_reported_lost_naming_the_signal(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    result = run(invoker, store, process_tasks.kill_own_process)

    assert isinstance(result.error, WorkerLostError)
    assert "SIGKILL" in str(result.error)


def test_concurrent_calls_run_at_once_on_distinct_workers_which_are_then_reused(
        store: ContentAddressedStore, tmp_path: Path) -> None:
    invoker = ProcessInvoker(max_workers=4)
    try:
        with ThreadPoolExecutor(8) as threads:
            # Each call waits until all four run at once: a pool that ran fewer at a time
            # would fail them with TimeoutError.
            met = list(threads.map(lambda _: run(invoker, store, process_tasks.meet_at_barrier,
                                                 str(tmp_path), 4, 45.0), range(4)))
            # More callers than workers: they wait for a free worker, none is started.
            later = list(threads.map(lambda _: run(invoker, store, process_tasks.pid_after,
                                                   0.05), range(8)))
    finally:
        invoker.close()

    assert [result.error for result in met + later] == [None] * 12
    pids = {result.record["value"] for result in met if result.record is not None}
    assert len(pids) == 4
    assert {result.record["value"] for result in later if result.record is not None} <= pids


def test_close_stops_the_workers_is_idempotent_and_refuses_later_calls(
        store: ContentAddressedStore) -> None:
    invoker = ProcessInvoker(max_workers=1)
    first = run(invoker, store, process_tasks.worker_pid).record
    assert first is not None

    invoker.close()
    invoker.close()

    assert not is_running(first["value"])
    with pytest.raises(InvalidArgumentError, match="closed"):
        run(invoker, store, process_tasks.worker_pid)


def test_a_task_defined_inside_a_function_is_refused_naming_the_task(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    def local_task() -> int:
        return 1

    with pytest.raises(InvalidArgumentError, match="'prepare.local'"):
        invoker.invoke(make_call(local_task, store, key="prepare.local"), LONG)


def test_arguments_that_cannot_be_pickled_are_refused_naming_the_task(
        invoker: ProcessInvoker, store: ContentAddressedStore) -> None:
    call = make_call(process_tasks.add, store, lambda: 1, 2, key="sum")

    with pytest.raises(InvalidArgumentError, match="'sum' arguments"):
        invoker.invoke(call, LONG)


def test_a_memory_artifact_store_is_refused(invoker: ProcessInvoker) -> None:
    call = TaskCall("run-1", "task", "add", 1, (1, 2), {}, StoreAddress("memory://blobs"),
                    INLINE_LIMIT, process_tasks.add)

    with pytest.raises(InvalidArgumentError, match="memory:// lives inside one process") as info:
        invoker.invoke(call, LONG)
    assert info.value.field == "executor"


@pytest.mark.parametrize("max_workers", [0, 257, -1, True, 2.5, "4"])
def test_max_workers_outside_1_to_256_is_refused(max_workers: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ProcessInvoker(max_workers)
    assert info.value.field == "max_workers"


def test_the_invoker_is_named_process() -> None:
    invoker: Invoker = ProcessInvoker()
    assert invoker.name == "process"
    invoker.close()
