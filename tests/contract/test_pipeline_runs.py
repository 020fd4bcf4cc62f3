"""Durable pipeline runs on every backend: states, retries, isolation, caching, resume."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from loopline import pipeline, task
from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    UserCodeError,
)
from loopline.core.events import EventType
from loopline.core.runs import RunState, TaskState
from loopline.pipelines import AttemptTimeoutError, Runner, RunnerOptions
from loopline.store import MetadataStore

CALLS: Counter[str] = Counter()
FLAKY_FAILURES = {"left": 0}
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FLAKY_FAILURES["left"] = 0
    RELEASE.clear()


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "artifacts")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def runner(store: MetadataStore, blobs: ContentAddressedStore, sleeps: list[float]) -> Runner:
    return Runner(store, blobs, RunnerOptions(max_workers=4, actor="tester",
                                              sleep=sleeps.append, random=lambda: 0.5))


@task
def numbers(n: int) -> list[int]:
    CALLS["numbers"] += 1
    return list(range(n))


@task
def double(values: list[int], factor: int = 2) -> list[int]:
    CALLS["double"] += 1
    return [v * factor for v in values]


@task
def add(values: list[int]) -> int:
    CALLS["add"] += 1
    return sum(values)


@task
def summed(parts: list[int]) -> int:
    CALLS["summed"] += 1
    return sum(parts)


@pipeline
def arithmetic(n: int, factor: int = 2) -> Any:
    data = numbers(n)
    return add(double(data, factor=factor))


@task(retries=3, retry_delay=1.0, backoff=2.0, jitter=0.1, max_delay=60)
def flaky(x: int) -> int:
    CALLS["flaky"] += 1
    if FLAKY_FAILURES["left"] > 0:
        FLAKY_FAILURES["left"] -= 1
        raise ConnectionError(f"try again ({FLAKY_FAILURES['left']} left)")
    return x + 1


@pipeline
def retrying(x: int) -> Any:
    return flaky(x)


@task(retries=3, retry_on=(ConnectionError,))
def picky() -> int:
    CALLS["picky"] += 1
    raise ValueError("not a transient error")


@task
def explode(values: list[int]) -> int:
    CALLS["explode"] += 1
    raise ValueError(f"boom on {len(values)} values")


@pipeline
def partly_broken(n: int) -> Any:
    data = numbers(n)
    broken = explode(data)
    return {"bad": add([broken]), "good": add(double(data)), "picky": picky()}


def test_a_run_records_every_task_succeeded_and_returns_the_result(
        runner: Runner, store: MetadataStore) -> None:
    result = runner.run(arithmetic, {"n": 4})
    assert result.succeeded and result.error is None
    assert result.result == 12
    assert result.outputs == {"numbers": [0, 1, 2, 3], "double": [0, 2, 4, 6], "add": 12}
    run = runner.runs.run(result.run.id)
    assert (run.state, run.pipeline, run.parameters) == (RunState.SUCCEEDED, "arithmetic",
                                                         {"n": 4, "factor": 2})
    assert run.started_at is not None and run.finished_at is not None
    tasks = runner.runs.tasks(run.id)
    assert [(t.task_key, t.state, t.attempt) for t in tasks] == [
        ("add", TaskState.SUCCEEDED, 1), ("double", TaskState.SUCCEEDED, 1),
        ("numbers", TaskState.SUCCEEDED, 1)]
    assert all(t.cache_key and t.lease_owner is None for t in tasks)
    states = [e.payload["state"] for e in store.events.read_after(0)
              if e.type == EventType.PIPELINE_RUN_CHANGED and e.subject.endswith(run.id)]
    assert states == ["pending", "running", "succeeded"]


def test_bad_parameters_are_refused_before_a_run_is_recorded(runner: Runner) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        runner.run(arithmetic, {"n": "four"})
    assert caught.value.field == "parameters.n"
    assert runner.runs.runs() == [] and not CALLS


def test_retries_record_each_attempt_and_sleep_the_computed_backoff(
        runner: Runner, sleeps: list[float]) -> None:
    FLAKY_FAILURES["left"] = 2
    result = runner.run(retrying, {"x": 1})
    assert result.succeeded and result.result == 2
    assert CALLS["flaky"] == 3
    assert sleeps == [1.0, 2.0]  # random 0.5 puts the jitter at zero
    attempts = runner.runs.attempts(result.run.id, "flaky")
    assert [(a.attempt, a.state, a.retry_delay) for a in attempts] == [
        (1, TaskState.FAILED, 1.0), (2, TaskState.FAILED, 2.0), (3, TaskState.SUCCEEDED, None)]
    assert attempts[0].error == "ConnectionError: try again (1 left)"
    assert attempts[1].error == "ConnectionError: try again (0 left)"


def test_a_task_out_of_retries_fails_with_its_last_error(runner: Runner,
                                                         sleeps: list[float]) -> None:
    FLAKY_FAILURES["left"] = 10
    result = runner.run(retrying, {"x": 1})
    assert result.run.state is RunState.FAILED
    assert CALLS["flaky"] == 4 and len(sleeps) == 3
    assert result.run.error is not None
    assert "task 'flaky' failed after 4 attempts: ConnectionError" in result.run.error
    assert [a.state for a in runner.runs.attempts(result.run.id, "flaky")] == [
        TaskState.FAILED] * 4


def test_a_failure_fails_its_dependants_but_not_independent_siblings(
        runner: Runner, sleeps: list[float]) -> None:
    result = runner.run(partly_broken, {"n": 3})
    assert result.run.state is RunState.FAILED
    states = {t.task_key: t.state for t in runner.runs.tasks(result.run.id)}
    assert states == {"numbers": TaskState.SUCCEEDED, "explode": TaskState.FAILED,
                      "add": TaskState.UPSTREAM_FAILED, "double": TaskState.SUCCEEDED,
                      "add-2": TaskState.SUCCEEDED, "picky": TaskState.FAILED}
    assert CALLS["picky"] == 1 and sleeps == []  # ValueError is not in retry_on
    assert result.outputs["add-2"] == 6
    error = result.run.error or ""
    assert "task '" in error and "not run because an upstream task failed: add" in error
    assert "ValueError: boom on 3 values" in error or "ValueError: not a transient" in error
    with pytest.raises(UserCodeError) as caught:
        result.raise_for_failure()
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_second_identical_run_is_served_from_the_cache(runner: Runner) -> None:
    first = runner.run(arithmetic, {"n": 3})
    again = runner.run(arithmetic, {"n": 3})
    assert again.result == first.result == 6
    assert dict(CALLS) == {"numbers": 1, "double": 1, "add": 1}
    assert {t.state for t in runner.runs.tasks(again.run.id)} == {TaskState.CACHED}


def test_a_changed_parameter_misses_the_cache_only_where_it_matters(runner: Runner) -> None:
    runner.run(arithmetic, {"n": 3})
    changed = runner.run(arithmetic, {"n": 3, "factor": 3})
    assert changed.result == 9
    states = {t.task_key: t.state for t in runner.runs.tasks(changed.run.id)}
    assert states == {"numbers": TaskState.CACHED, "double": TaskState.SUCCEEDED,
                      "add": TaskState.SUCCEEDED}
    assert dict(CALLS) == {"numbers": 1, "double": 2, "add": 2}


@task(cache=False)
def uncached(n: int) -> int:
    CALLS["uncached"] += 1
    return n


@pipeline
def no_cache(n: int) -> Any:
    return uncached(n)


def test_a_task_with_cache_off_runs_every_time(runner: Runner) -> None:
    runner.run(no_cache, {"n": 1})
    runner.run(no_cache, {"n": 1})
    assert CALLS["uncached"] == 2


@task
def payload(size: int) -> bytes:
    return b"x" * size


@task
def big_list(size: int) -> list[int]:
    return list(range(size))


@task
def measure(data: bytes, items: list[int]) -> list[int]:
    return [len(data), len(items)]


@pipeline
def large(size: int) -> Any:
    return measure(payload(size), big_list(size))


def test_bytes_and_large_outputs_go_to_the_artifact_store_by_digest(
        runner: Runner, blobs: ContentAddressedStore) -> None:
    result = runner.run(large, {"size": 20_000})
    assert result.result == [20_000, 20_000]
    records = {t.task_key: t.outputs for t in runner.runs.tasks(result.run.id)}
    assert records["payload"] is not None and records["payload"]["kind"] == "bytes"
    assert records["big_list"] is not None and records["big_list"]["kind"] == "json_artifact"
    assert blobs.get_bytes(records["payload"]["digest"]) == b"x" * 20_000
    assert records["measure"] == {"kind": "json", "value": [20_000, 20_000]}


@task
def opaque() -> Any:
    return object()


@pipeline
def unserialisable() -> Any:
    return opaque()


def test_an_output_that_cannot_be_stored_fails_the_task_naming_it(runner: Runner) -> None:
    result = runner.run(unserialisable)
    assert result.run.state is RunState.FAILED
    assert "task 'opaque' output" in (result.run.error or "")
    with pytest.raises(InvalidArgumentError, match="task 'opaque' output"):
        result.raise_for_failure()


@task(timeout=0.05)
def slow() -> int:
    RELEASE.wait(10)
    return 1


@pipeline
def too_slow() -> Any:
    return slow()


def test_an_attempt_over_its_timeout_fails(runner: Runner) -> None:
    try:
        result = runner.run(too_slow)
    finally:
        RELEASE.set()
    assert result.run.state is RunState.FAILED
    with pytest.raises(UserCodeError) as caught:
        result.raise_for_failure()
    assert isinstance(caught.value.__cause__, AttemptTimeoutError)


FLOW = '''
import os
import pathlib
import time

from loopline import pipeline, task

LOG = pathlib.Path(os.environ["FLOW_DIR"]) / "log.txt"
GATE = pathlib.Path(os.environ["FLOW_DIR"]) / "gate"


def note(name):
    with open(LOG, "a") as handle:
        handle.write(name + "\\n")


@task(cache=False)
def first():
    note("first")
    return 1


@task(cache=False)
def second(x):
    note("second")
    while not GATE.exists():
        time.sleep(0.02)
    return x + 1


@task(cache=False)
def third(y):
    note("third")
    return y * 10


@pipeline
def flow():
    return third(second(first()))
'''

DRIVER = '''
import sys
sys.path.insert(0, sys.argv[3])
import flow_module
from loopline.artifacts import ContentAddressedStore
from loopline.pipelines import Runner
from loopline.store import MetadataStore

store = MetadataStore.open(sys.argv[1])
Runner(store, ContentAddressedStore.from_url(sys.argv[2])).run(flow_module.flow)
'''


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"flow_{os.getpid()}_{id(path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_for_first(runner: Runner, child: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        runs = runner.runs.runs()
        if runs:
            states = {t.task_key: t.state for t in runner.runs.tasks(runs[0].id)}
            if states.get("first") is TaskState.SUCCEEDED and \
                    states.get("second") is TaskState.RUNNING:
                return runs[0].id
        time.sleep(0.05)
    raise AssertionError("the child runner never recorded 'first' as succeeded")


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_without_rerunning_finished_tasks(
        runner: Runner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    (flow_dir / "flow_module.py").write_text(textwrap.dedent(FLOW))
    monkeypatch.setenv("FLOW_DIR", str(flow_dir))
    child = subprocess.Popen(
        [sys.executable, "-c", DRIVER, db_url, str(tmp_path / "artifacts"), str(flow_dir)],
        env={**os.environ}, stderr=subprocess.PIPE)
    try:
        run_id = _wait_for_first(runner, child)
        flow = _load(flow_dir / "flow_module.py")
        with pytest.raises(ConflictError, match="being executed by"):
            runner.resume(run_id, flow.flow)  # the child is alive and holds the run
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()
    assert runner.runs.run(run_id).state is RunState.RUNNING
    (flow_dir / "gate").touch()
    result = runner.resume(run_id, flow.flow)
    assert result.succeeded and result.result == 20
    assert (flow_dir / "log.txt").read_text().split() == ["first", "second", "second", "third"]
    tasks = {t.task_key: t for t in runner.runs.tasks(run_id)}
    assert (tasks["first"].attempt, tasks["second"].attempt, tasks["third"].attempt) == (1, 2, 1)
    second = runner.runs.attempts(run_id, "second")
    assert [a.state for a in second] == [TaskState.FAILED, TaskState.SUCCEEDED]
    assert "interrupted" in (second[0].error or "")


def test_resume_of_a_failed_run_reruns_only_what_did_not_finish(runner: Runner) -> None:
    FLAKY_FAILURES["left"] = 10
    failed = runner.run(retrying, {"x": 5})
    assert failed.run.state is RunState.FAILED
    FLAKY_FAILURES["left"] = 0
    CALLS.clear()
    resumed = runner.resume(failed.run.id, retrying)
    assert resumed.succeeded and resumed.result == 6 and CALLS["flaky"] == 1
    assert runner.runs.tasks(failed.run.id)[0].attempt == 5


def test_a_requested_resume_is_audited_as_its_actor_and_a_plain_one_is_not(
        runner: Runner, store: MetadataStore) -> None:
    from loopline.store import AuditFilter

    def resumed_entries() -> list[tuple[str, str, Any]]:
        return [(e.actor, e.subject, e.before) for e in
                store.audit.entries(AuditFilter(action="pipeline_run.resumed"))]

    FLAKY_FAILURES["left"] = 10
    failed = runner.run(retrying, {"x": 5})
    assert failed.run.state is RunState.FAILED
    FLAKY_FAILURES["left"] = 10
    runner.resume(failed.run.id, retrying)  # how the scheduler and the pool execute runs
    assert resumed_entries() == []
    FLAKY_FAILURES["left"] = 0
    assert runner.resume(failed.run.id, retrying, requested=True).succeeded
    assert resumed_entries() == [("tester", f"pipeline_run:{failed.run.id}",
                                  {"state": "failed"})]
    with pytest.raises(InvalidTransitionError, match="succeeded"):  # nothing more audited
        runner.resume(failed.run.id, retrying, requested=True)
    assert len(resumed_entries()) == 1


def test_resume_refuses_another_pipeline(runner: Runner) -> None:
    done = runner.run(arithmetic, {"n": 1})
    with pytest.raises(InvalidArgumentError, match="pipeline"):
        runner.resume(done.run.id, retrying)


def test_resume_of_a_finished_run_is_refused_and_records_nothing(
        runner: Runner, store: MetadataStore) -> None:
    from loopline.core.errors import InvalidTransitionError

    done = runner.run(arithmetic, {"n": 2})
    CALLS.clear()
    events = store.events.count()
    with pytest.raises(InvalidTransitionError, match="succeeded"):
        runner.resume(done.run.id, arithmetic)
    assert not CALLS and store.events.count() == events
    assert runner.runs.run(done.run.id).finished_at == done.run.finished_at


@task
def quits() -> int:
    CALLS["quits"] += 1
    raise SystemExit(3)


@pipeline
def exits() -> Any:
    return quits()


def test_a_task_calling_sys_exit_fails_the_run_instead_of_leaving_it_running(
        runner: Runner) -> None:
    result = runner.run(exits)
    assert result.run.state is RunState.FAILED
    assert "SystemExit" in (result.run.error or "")
    assert [t.state for t in runner.runs.tasks(result.run.id)] == [TaskState.FAILED]


def test_a_cache_hit_whose_artifact_is_gone_runs_the_task_again(
        runner: Runner, blobs: ContentAddressedStore) -> None:
    first = runner.run(large, {"size": 20_000})
    digest = {t.task_key: t.outputs for t in runner.runs.tasks(first.run.id)}["payload"]
    assert digest is not None
    blobs.delete(digest["digest"])
    again = runner.run(large, {"size": 20_000})
    states = {t.task_key: t.state for t in runner.runs.tasks(again.run.id)}
    assert again.succeeded and states["payload"] is TaskState.SUCCEEDED
    assert again.result == [20_000, 20_000]


SCALE = 2


@task
def scaled(n: int) -> int:
    CALLS["scaled"] += 1
    return n * SCALE


@pipeline
def scaling(n: int) -> Any:
    return scaled(n)


def test_a_changed_constant_the_task_reads_misses_the_cache(
        runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.run(scaling, {"n": 3}).result == 6
    assert runner.run(scaling, {"n": 3}).result == 6
    assert CALLS["scaled"] == 1
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 10)
    assert runner.run(scaling, {"n": 3}).result == 30
    assert CALLS["scaled"] == 2


@task(timeout=0.05, retries=3, retry_on=(TimeoutError,))
def slow_even_with_retries() -> int:
    CALLS["slow"] += 1
    RELEASE.wait(10)
    return 1


@pipeline
def timing_out() -> Any:
    return slow_even_with_retries()


def test_a_timed_out_attempt_is_never_retried_beside_itself(runner: Runner) -> None:
    try:
        result = runner.run(timing_out)
    finally:
        RELEASE.set()
    assert result.run.state is RunState.FAILED
    assert CALLS["slow"] == 1


@task
def lingering() -> int:
    CALLS["lingering"] += 1
    RELEASE.wait(10)
    return 7


@pipeline
def long_running() -> Any:
    return lingering()


def test_a_running_task_s_lease_is_renewed_every_heartbeat(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    runner = Runner(store, blobs, RunnerOptions(actor="tester", heartbeat_seconds=0.05,
                                                lease_seconds=0.3))
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.run(long_running)))
    worker.start()
    try:
        seen: list[Any] = []
        deadline = time.monotonic() + 10
        while len(set(seen)) < 3 and time.monotonic() < deadline:
            running = [t for r in runner.runs.runs() for t in runner.runs.tasks(r.id)
                       if t.state is TaskState.RUNNING and t.lease_expires_at is not None]
            seen.extend(t.lease_expires_at for t in running)
            time.sleep(0.05)
        assert len(set(seen)) >= 3, "the lease must move forward while the task runs"
        assert max(seen) > min(seen)
    finally:
        RELEASE.set()
        worker.join(10)
    assert outcome and outcome[0].result == 7


def test_a_heartbeat_longer_than_the_lease_is_refused(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError, match="heartbeat_seconds"):
        Runner(store, blobs, RunnerOptions(heartbeat_seconds=30, lease_seconds=10))


@task(retries=3, retry_delay=0.1)
def leaf(index: int) -> int:
    CALLS["leaf"] += 1
    return index * index


@pipeline
def fanned(n: int) -> Any:
    return summed([leaf(i) for i in range(n)])


def test_injected_faults_fail_attempts_and_retries_recover_them(
        store: MetadataStore, blobs: ContentAddressedStore, sleeps: list[float]) -> None:
    from loopline.pipelines import FaultInjector

    # One worker: the seeded fault sequence then meets the tasks in one order, every run.
    runner = Runner(store, blobs, RunnerOptions(
        max_workers=1, actor="tester", sleep=sleeps.append, random=lambda: 0.5,
        faults=FaultInjector({"leaf": 0.3}, seed=7)))
    result = runner.run(fanned, {"n": 20})
    tasks = runner.runs.tasks(result.run.id)
    leaves = [t for t in tasks if t.task_key.startswith("leaf")]
    attempts = [a for t in leaves for a in runner.runs.attempts(result.run.id, t.task_key)]
    injected = [a for a in attempts if "injected fault" in (a.error or "")]
    assert injected, "with p=0.3 over 20 tasks some attempts must fail"
    assert len(attempts) == 20 + len(injected)
    assert result.succeeded and result.result == sum(i * i for i in range(20))
    assert CALLS["leaf"] == 20, "a faulted attempt never reaches the task's code"


def _owned_runs(store: MetadataStore) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.execute(sa.text(
            "SELECT id FROM pipeline_runs WHERE owner IS NOT NULL")).scalars())


def test_a_second_runner_cannot_resume_a_run_another_runner_is_executing(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    runner = Runner(store, blobs, RunnerOptions(actor="tester", heartbeat_seconds=0.05,
                                                lease_seconds=5))
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.run(long_running)))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not _owned_runs(store) and time.monotonic() < deadline:
            time.sleep(0.02)  # created is not enough: the first runner must hold it
        [run_id] = _owned_runs(store)
        rival = Runner(store, blobs, RunnerOptions(actor="rival"))
        with pytest.raises(ConflictError, match="being executed by"):
            rival.resume(run_id, long_running)
    finally:
        RELEASE.set()
        worker.join(10)
    assert outcome and outcome[0].succeeded
    assert runner.runs.run(run_id).state is RunState.SUCCEEDED
    with store.engine.connect() as connection:  # released at the end: nobody holds it
        owner = connection.execute(sa.text("SELECT owner FROM pipeline_runs WHERE id = :id"),
                                   {"id": run_id}).scalar()
    assert owner is None
