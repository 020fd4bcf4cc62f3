"""The Ray invoker runs task calls on Ray workers: data through the artifact store, errors named.

Tests marked ``ray`` run on the session's local Ray (``ray_runtime``); the others fake the
``ray`` module, the invoker's one seam, to check how Ray is started, joined and shut down.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loopline import task
from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import ConfigurationError, InvalidArgumentError
from loopline.pipelines.context import current_task
from loopline.pipelines.outputs import INLINE_LIMIT, decode_output, encode_output
from loopline.pipelines.ray_invoker import RayInvoker
from loopline.pipelines.remote import (
    AttemptTimeoutError,
    InputRef,
    RemoteTaskFailure,
    TaskCall,
    WorkerLostError,
    error_matches,
)

LOCK = threading.Lock()  # cannot be pickled: a task reading it travels by its location


@task
def shout(data: bytes, times: int) -> bytes:
    return data.upper() * times


def total(numbers: list[int], offset: int = 0) -> int:
    return sum(numbers) + offset


def refuse(row: int) -> None:
    raise ValueError(f"bad row {row}")


def hang() -> None:
    time.sleep(60)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def crash() -> None:
    os._exit(3)


def whoami() -> dict[str, Any]:
    context = current_task()
    return {"task_key": context.task_key, "attempt": context.attempt, "pid": os.getpid()}


def locked() -> str:
    with LOCK:
        return "locked"


def make_call(fn: Callable[..., Any], spec: StoreAddress, *args: Any, key: str = "step",
              attempt: int = 1, **kwargs: Any) -> TaskCall:
    return TaskCall("run-1", key, key, attempt, args, kwargs, spec, INLINE_LIMIT, fn=fn)


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "blobs")


@pytest.fixture
def spec(blobs: ContentAddressedStore) -> StoreAddress:
    return StoreAddress.of(blobs)


@pytest.fixture
def invoker(ray_runtime: None) -> Iterator[RayInvoker]:
    opened = RayInvoker()
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.ray
def test_bytes_output_lands_in_the_artifact_store_and_inputs_are_read_from_it(
        invoker: RayInvoker, blobs: ContentAddressedStore, spec: StoreAddress) -> None:
    upstream = encode_output("load", b"hello", blobs)
    result = invoker.invoke(make_call(shout.fn, spec, InputRef(upstream), 2, key="shout"), None)
    assert result.error is None
    assert result.record is not None and result.record["kind"] == "bytes"
    assert decode_output(result.record, blobs) == b"HELLOHELLO"


@pytest.mark.ray
def test_json_inputs_in_keyword_arguments_are_resolved_on_the_worker(
        invoker: RayInvoker, blobs: ContentAddressedStore, spec: StoreAddress) -> None:
    upstream = encode_output("numbers", list(range(10)), blobs)
    result = invoker.invoke(make_call(total, spec, numbers=InputRef(upstream), offset=5), None)
    assert result.error is None and result.record == {"kind": "json", "value": 50}


@pytest.mark.ray
def test_task_exception_comes_back_as_a_remote_failure_matching_its_class(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    result = invoker.invoke(make_call(refuse, spec, 3), None)
    error = result.error
    assert isinstance(error, RemoteTaskFailure)
    assert error_matches(error, (ValueError,)) and not error_matches(error, (KeyError,))
    assert error.message == "bad row 3" and "refuse" in error.traceback_text


@pytest.mark.ray
def test_hanging_task_times_out_and_the_next_call_still_runs(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    started = time.monotonic()
    result = invoker.invoke(make_call(hang, spec, key="hang"), 1.0)
    assert isinstance(result.error, AttemptTimeoutError)
    assert "'hang'" in str(result.error) and time.monotonic() - started < 10
    after = invoker.invoke(make_call(total, spec, [1, 2]), 30.0)
    assert after.error is None and after.record == {"kind": "json", "value": 3}


@pytest.mark.ray
def test_time_queued_for_a_free_cpu_does_not_count_toward_the_timeout(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    # Three 1 s naps on two CPUs: the third starts about 1 s after it was submitted, so a
    # timeout counted from submission (1.6 s) would end it; counted from its start it does not.
    calls = [make_call(nap, spec, 1.0, key=f"nap-{n}") for n in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda call: invoker.invoke(call, 1.6), calls))
    assert [result.error for result in results] == [None, None, None]


@pytest.mark.ray
def test_task_sees_its_key_and_attempt_through_current_task(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    result = invoker.invoke(make_call(whoami, spec, key="who", attempt=2), None)
    assert result.error is None and result.record is not None
    value = result.record["value"]
    assert (value["task_key"], value["attempt"]) == ("who", 2)
    assert value["pid"] != os.getpid()


@pytest.mark.ray
def test_task_defined_inside_a_test_function_travels_by_value(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    factor = 7

    def scale(x: int) -> int:
        return x * factor

    result = invoker.invoke(make_call(scale, spec, 6), None)
    assert result.error is None and result.record == {"kind": "json", "value": 42}


@pytest.mark.ray
def test_unpicklable_module_level_task_is_imported_from_its_file_by_the_worker(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    result = invoker.invoke(make_call(locked, spec), None)
    assert result.error is None and result.record == {"kind": "json", "value": "locked"}


@pytest.mark.ray
def test_local_task_that_cannot_be_pickled_is_refused_naming_it(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    lock = threading.Lock()

    def guarded() -> int:
        with lock:
            return 1

    with pytest.raises(InvalidArgumentError, match="'guarded'.*cannot be sent to Ray"):
        invoker.invoke(make_call(guarded, spec, key="guarded"), None)


@pytest.mark.ray
def test_crashed_worker_ends_the_attempt_as_worker_lost(
        invoker: RayInvoker, spec: StoreAddress) -> None:
    result = invoker.invoke(make_call(crash, spec, key="crash"), 30.0)
    assert isinstance(result.error, WorkerLostError)
    assert "'crash'" in str(result.error)


@pytest.mark.ray
def test_memory_artifact_store_is_refused(invoker: RayInvoker) -> None:
    call = make_call(total, StoreAddress("memory://loopline-test"), [1])
    with pytest.raises(InvalidArgumentError, match="memory:// lives inside one process"):
        invoker.invoke(call, None)


@pytest.mark.ray
def test_close_leaves_a_ray_it_did_not_start_running(ray_runtime: None, spec: StoreAddress) -> None:
    import ray

    joined = RayInvoker(num_cpus=1)
    assert joined.invoke(make_call(total, spec, [2]), None).record == {"kind": "json",
                                                                       "value": 2}
    joined.close()
    assert ray.is_initialized()


def test_missing_ray_is_a_configuration_error_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'loopline\[ray\]'"):
        RayInvoker()


class FakeRay:
    """A ``ray`` module that runs the remote generator in this process and records calls."""

    class RayError(Exception):
        pass

    class RayTaskError(RayError):
        pass

    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized
        self.inits: list[dict[str, Any]] = []
        self.shutdowns = 0
        self.exceptions = SimpleNamespace(RayError=self.RayError, RayTaskError=self.RayTaskError)
        self.cloudpickle = SimpleNamespace(dumps=pickle.dumps,
                                           register_pickle_by_value=lambda module: None)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **options: Any) -> None:
        self.inits.append(options)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialized = False

    def remote(self, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        if options.get("num_returns") == "streaming":
            return lambda fn: SimpleNamespace(remote=lambda *args: iter(fn(*args)))
        return lambda fn: SimpleNamespace(remote=fn)

    def get(self, value: Any) -> Any:
        return value

    def wait(self, refs: list[Any], timeout: float | None) -> tuple[list[Any], list[Any]]:
        return refs, []


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay(initialized=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


def test_local_ray_is_started_with_num_cpus_and_shut_down_by_close(
        fake_ray: FakeRay, spec: StoreAddress) -> None:
    invoker = RayInvoker(num_cpus=3)
    assert fake_ray.inits == []  # nothing starts before the first call
    assert invoker.invoke(make_call(total, spec, [4]), None).record == {"kind": "json",
                                                                        "value": 4}
    assert fake_ray.inits == [{"address": None, "include_dashboard": False,
                               "log_to_driver": False, "num_cpus": 3}]
    invoker.close()
    invoker.close()
    assert fake_ray.shutdowns == 1


def test_address_from_the_environment_joins_a_cluster_without_num_cpus(
        fake_ray: FakeRay, spec: StoreAddress, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_RAY_ADDRESS", "ray://head:10001")
    invoker = RayInvoker(num_cpus=3)
    invoker.invoke(make_call(total, spec, [1]), None)
    assert fake_ray.inits == [{"address": "ray://head:10001", "include_dashboard": False,
                               "log_to_driver": False}]


def test_a_running_ray_is_used_and_left_running(
        monkeypatch: pytest.MonkeyPatch, spec: StoreAddress) -> None:
    fake = FakeRay(initialized=True)
    monkeypatch.setitem(sys.modules, "ray", fake)
    invoker = RayInvoker(address="ray://elsewhere:10001")
    invoker.invoke(make_call(total, spec, [1]), None)
    invoker.close()
    assert fake.inits == [] and fake.shutdowns == 0


@pytest.mark.parametrize("options", [{"num_cpus": 0}, {"num_cpus": True}, {"task_cpus": 0}])
def test_non_positive_cpu_counts_are_refused(fake_ray: FakeRay, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="cpus"):
        RayInvoker(**options)
