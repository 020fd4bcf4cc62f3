"""Benchmark the pipeline engine's overhead per task against bare executors in the same run.

Prints one JSON document on stdout (progress goes to stderr). Each engine figure sits next to
a bare executor running the same plain callables in the same process, and the overhead per
task is ``(engine seconds - bare seconds) / tasks``. Nothing here asserts a timing; the
``targets`` section only compares the measurements with the 1 ms-per-task goal.

    local      a chain of ``--tasks`` trivial tasks (each consumes the previous output) and a
               fan-out of ``--tasks`` independent ones plus one gather, on a fresh SQLite
               workspace (WAL, synchronous=FULL), with and without run provenance, against a
               bare ``ThreadPoolExecutor``; PostgreSQL too when a URL is given
    process    the fan-out on ``executor="process"`` against a bare ``ProcessPoolExecutor``
    ray        both shapes on ``executor="ray"`` against bare Ray tasks (``ray.get``)
    faults     ``--fault-tasks`` independent tasks failing with probability 0.3, 3 retries
               without delay: success rate and attempts, read back from the store, beside
               their theoretical values

Run ``make bench`` or ``.venv/bin/python benchmarks/pipelines.py --help``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from bench_common import (
    POSTGRES_ENV,
    add_common_arguments,
    check,
    elapsed,
    machine,
    max_rss_mib,
    measure,
    postgres_schema,
    progress,
    public_settings,
    ratio,
    scratch,
)
from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import LooplineError
from loopline.core.runs import TaskState
from loopline.pipelines import FaultInjector, Runner, RunnerOptions, RunResult, pipeline, task
from loopline.store import MetadataStore

TARGET_MS = 1.0
FAULT_PROBABILITY = 0.3
RETRIES = 3
WARMUP_TASKS = 20
DEFAULTS: dict[str, Any] = {"tasks": 1000, "repeat": 5, "process_tasks": 200,
                            "ray_tasks": 1000, "fault_tasks": 1000, "workers": 4}
QUICK: dict[str, Any] = {"tasks": 50, "repeat": 1, "process_tasks": 20, "ray_tasks": 50,
                         "fault_tasks": 50, "workers": 4}
SLOWDOWN_NOTE = ("slowdown_vs_bare is engine seconds / bare seconds from the same run "
                 "(1.0 = as fast); overhead_ms_per_task is their difference per task")


@dataclass(frozen=True, slots=True)
class Settings:
    """What to measure and how much of it."""

    tasks: int
    repeat: int
    process_tasks: int
    ray_tasks: int
    fault_tasks: int
    workers: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool
    ray: bool
    process: bool


# -- the work: plain callables, the same ones as tasks ---------------------------------------
# Module-level, so the process and Ray executors can ship them.


def increment(value: int) -> int:
    """Return ``value + 1``: the trivial task body."""
    return value + 1


def total(values: list[int]) -> int:
    """Return the sum of ``values``: the gather after a fan-out."""
    return sum(values)


inc = task(cache=False, name="inc")(increment)
gather = task(cache=False, name="gather")(total)
flaky = task(retries=RETRIES, retry_delay=0, jitter=0, cache=False, name="flaky")(increment)


@pipeline(name="bench-chain")
def chain(n: int) -> Any:
    """``n`` tasks in a row, each consuming the previous output; the result is ``n``."""
    value: Any = 0
    for _ in range(n):
        value = inc(value)
    return value


@pipeline(name="bench-fan-out")
def fan_out(n: int) -> Any:
    """``n`` independent tasks and one gather; the result is ``n * (n + 1) / 2``."""
    return gather([inc(i) for i in range(n)])


@pipeline(name="bench-flaky")
def flaky_fan_out(n: int) -> Any:
    """``n`` independent tasks that fail on purpose (see ``--fault-tasks``)."""
    return [flaky(i) for i in range(n)]


SHAPES = {"sequential": chain, "fan_out": fan_out}


def expected_result(shape: str, n: int) -> int:
    """Return what the pipeline (or its bare twin) must return for ``n`` tasks."""
    return n if shape == "sequential" else n * (n + 1) // 2


def task_count(shape: str, n: int) -> int:
    """Return the tasks one run executes: the fan-out's gather counts as one."""
    return n if shape == "sequential" else n + 1


# -- bare baselines --------------------------------------------------------------------------


def bare_pool(pool: Executor, shape: str, n: int) -> int:
    """Run the shape's callables on ``pool``: the chain one at a time, the fan-out all at once."""
    if shape == "sequential":
        value = 0
        for _ in range(n):
            value = pool.submit(increment, value).result()
        return value
    futures = [pool.submit(increment, i) for i in range(n)]
    return pool.submit(total, [future.result() for future in futures]).result()


def bare_threads(shape: str, n: int, workers: int) -> int:
    """Run the shape on a fresh ``ThreadPoolExecutor`` (the engine starts a pool per run)."""
    with ThreadPoolExecutor(workers) as pool:
        return bare_pool(pool, shape, n)


def bare_ray(ray: Any, remotes: tuple[Any, Any], shape: str, n: int) -> int:
    """Run the shape as bare Ray tasks: chained ``ray.get``, or one ``ray.get`` of all."""
    remote_increment, remote_total = remotes
    if shape == "sequential":
        value = 0
        for _ in range(n):
            value = ray.get(remote_increment.remote(value))
        return value
    values = ray.get([remote_increment.remote(i) for i in range(n)])
    return int(ray.get(remote_total.remote(values)))


# -- engine runs -----------------------------------------------------------------------------


@contextmanager
def workspace(folder: Path, url: str | None = None) -> Iterator[tuple[MetadataStore,
                                                                      ContentAddressedStore]]:
    """Yield a freshly migrated metadata store (SQLite in ``folder`` by default) and blobs."""
    store = MetadataStore.open(url or f"sqlite:///{folder / 'loopline.db'}", check_schema=False)
    try:
        store.upgrade()
        yield store, ContentAddressedStore.from_url(folder / "artifacts")
    finally:
        store.close()


def engine_run(runner: Runner, shape: str, n: int) -> RunResult:
    """Run the shape's pipeline with ``n`` and check that it succeeded with the right result."""
    result = runner.run(SHAPES[shape], {"n": n})
    check(result.succeeded, f"{shape} run {result.run.id} ended {result.run.state}: "
                            f"{result.run.error}")
    check(result.result == expected_result(shape, n), f"{shape} returned {result.result!r}")
    check(len(result.outputs) == task_count(shape, n), f"{shape} recorded "
                                                       f"{len(result.outputs)} outputs")
    return result


def timed_engine_run(work: Path, options: RunnerOptions, shape: str, n: int,
                     url: str | None = None) -> float:
    """Time one run of the shape on fresh stores (PostgreSQL: the one schema); return seconds."""
    with scratch(work, "engine") as folder, workspace(folder, url) as (store, blobs):
        runner = Runner(store, blobs, options)
        try:
            _, seconds = measure(lambda: engine_run(runner, shape, n))
        finally:
            runner.close()
    return seconds


def figures(tasks: int, seconds: float, bare_seconds: float) -> dict[str, float]:
    """Return one engine measurement as per-task milliseconds beside its bare baseline."""
    return {"seconds": round(seconds, 4), "ms_per_task": round(seconds * 1000 / tasks, 4),
            "overhead_ms_per_task": round((seconds - bare_seconds) * 1000 / tasks, 4),
            "slowdown_vs_bare": ratio(seconds, bare_seconds)}


def bare_figures(tasks: int, seconds: float) -> dict[str, float]:
    """Return one bare measurement as seconds and per-task milliseconds."""
    return {"seconds": round(seconds, 4), "ms_per_task": round(seconds * 1000 / tasks, 4)}


# -- local: thread executor on SQLite (and PostgreSQL) --------------------------------------


def warm_up(work: Path, options: RunnerOptions, url: str | None = None) -> None:
    """Run each shape once, small, so imports and first-call caches are not timed."""
    for shape in SHAPES:
        for provenance in (True, False):
            timed_engine_run(work, replace(options, record_provenance=provenance), shape,
                             WARMUP_TASKS, url)
        check(bare_threads(shape, WARMUP_TASKS, options.max_workers)
              == expected_result(shape, WARMUP_TASKS), f"bare {shape} result")


def local_rounds(settings: Settings, work: Path, url: str | None,
                 label: str) -> dict[str, dict[str, list[float]]]:
    """Time bare, engine and engine without provenance, interleaved, ``repeat`` times."""
    base = RunnerOptions(max_workers=settings.workers, cache=False)
    warm_up(work, base, url)
    rounds: dict[str, dict[str, list[float]]] = {s: {} for s in SHAPES}
    n = settings.tasks
    for number in range(1, settings.repeat + 1):
        for shape in SHAPES:
            progress(f"{label}: {shape} round {number}/{settings.repeat} ({n} tasks)")
            times = rounds[shape]
            value, seconds = measure(partial(bare_threads, shape, n, settings.workers))
            check(value == expected_result(shape, n), f"bare {shape} returned {value}")
            times.setdefault("bare", []).append(seconds)
            times.setdefault("engine", []).append(
                timed_engine_run(work, base, shape, n, url))
            times.setdefault("engine_no_provenance", []).append(
                timed_engine_run(work, replace(base, record_provenance=False), shape, n, url))
    return rounds


def local_report(settings: Settings, rounds: dict[str, dict[str, list[float]]]
                 ) -> dict[str, Any]:
    """Turn the fastest round of each measurement into per-task figures."""
    report: dict[str, Any] = {"executor": "thread", "workers": settings.workers,
                              "statistic": "best of the rounds", "note": SLOWDOWN_NOTE}
    for shape, times in rounds.items():
        tasks = task_count(shape, settings.tasks)
        best = {name: min(values) for name, values in times.items()}
        engine = figures(tasks, best["engine"], best["bare"])
        plain = figures(tasks, best["engine_no_provenance"], best["bare"])
        report[shape] = {
            "tasks": tasks, "bare_thread_pool": bare_figures(tasks, best["bare"]),
            "engine": engine, "engine_no_provenance": plain,
            "provenance_ms_per_task": round(engine["ms_per_task"] - plain["ms_per_task"], 4),
            "rounds_s": {name: [round(v, 4) for v in values] for name, values in times.items()},
        }
    return report


def bench_local(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure both shapes on the thread executor against a bare thread pool, on SQLite."""
    rounds = local_rounds(settings, work, None, "sqlite")
    return {"sqlite_version": sqlite3.sqlite_version, **local_report(settings, rounds)}


def bench_postgres(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure the local shapes on PostgreSQL in a private schema, or say why not."""
    url = settings.postgres_url
    if not url:
        return {"skipped": f"no PostgreSQL URL (pass --postgres-url or set {POSTGRES_ENV})"}
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg is not installed (pip install 'loopline[postgres]')"}
    try:
        with postgres_schema(url) as (store_url, schema):
            rounds = local_rounds(settings, work, store_url, "postgresql")
            return {"schema": schema, **local_report(settings, rounds)}
    except (psycopg.Error, LooplineError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- process executor ------------------------------------------------------------------------


def bench_process(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure the fan-out on warmed worker processes against a warmed ProcessPoolExecutor."""
    if not settings.process:
        return {"skipped": "--no-process (implied by --quick)" if settings.quick
                else "--no-process"}
    n, workers, shape = settings.process_tasks, settings.workers, "fan_out"
    tasks = task_count(shape, n)
    context = multiprocessing.get_context("spawn")  # as the engine's workers start
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        progress(f"process: starting {workers} bare worker processes")
        list(pool.map(time.sleep, [0.2] * workers))  # every worker up before timing
        bare_value, bare_seconds = measure(lambda: bare_pool(pool, shape, n))
    check(bare_value == expected_result(shape, n), "bare process fan-out result")
    options = RunnerOptions(executor="process", max_workers=workers, cache=False)
    with scratch(work, "process") as folder, workspace(folder) as (store, blobs):
        runner = Runner(store, blobs, options)
        try:
            progress(f"process: starting {workers} engine worker processes")
            engine_run(runner, shape, 4 * workers)  # workers start lazily, all by now
            progress(f"process: fan-out of {n} tasks")
            _, seconds = measure(lambda: engine_run(runner, shape, n))
        finally:
            runner.close()
    return {"executor": "process", "workers": workers, "note": SLOWDOWN_NOTE,
            "fan_out": {"tasks": tasks,
                        "bare_process_pool": bare_figures(tasks, bare_seconds),
                        "engine": figures(tasks, seconds, bare_seconds)}}


# -- Ray -------------------------------------------------------------------------------------


def ray_skip_reason(settings: Settings) -> str | None:
    """Return why Ray is not measured, or None when it is."""
    if not settings.ray:
        return "--no-ray (implied by --quick)" if settings.quick else "--no-ray"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'loopline[ray]')"
    try:
        from loopline.pipelines import ray_invoker  # noqa: F401
    except ImportError as exc:
        return f"the ray invoker is not available: {exc}"
    return None


def ray_shape(ray: Any, remotes: tuple[Any, Any], runner: Runner, shape: str,
              n: int) -> dict[str, Any]:
    """Time one shape on bare Ray and through the engine's Ray executor."""
    tasks = task_count(shape, n)
    progress(f"ray: bare {shape} of {n} tasks")
    value, bare_seconds = measure(lambda: bare_ray(ray, remotes, shape, n))
    check(value == expected_result(shape, n), f"bare ray {shape} returned {value}")
    progress(f"ray: engine {shape} of {n} tasks")
    _, seconds = measure(lambda: engine_run(runner, shape, n))
    return {"tasks": tasks, "bare_ray": bare_figures(tasks, bare_seconds),
            "engine": figures(tasks, seconds, bare_seconds)}


def bench_ray(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure both shapes on a local two-CPU Ray, started once and shut down at the end."""
    reason = ray_skip_reason(settings)
    if reason:
        return {"skipped": reason}
    import ray

    progress("ray: starting a local Ray with 2 CPUs")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remotes = (ray.remote(num_cpus=1)(increment), ray.remote(num_cpus=1)(total))
        options = RunnerOptions(executor="ray", max_workers=settings.workers, cache=False)
        with scratch(work, "ray") as folder, workspace(folder) as (store, blobs):
            runner = Runner(store, blobs, options)
            try:
                progress("ray: warming up workers")
                for shape in SHAPES:
                    bare_ray(ray, remotes, shape, WARMUP_TASKS)
                    engine_run(runner, shape, WARMUP_TASKS)
                shapes = {shape: ray_shape(ray, remotes, runner, shape, settings.ray_tasks)
                          for shape in SHAPES}
            finally:
                runner.close()
        return {"executor": "ray", "ray_version": ray.__version__, "num_cpus": 2,
                "workers": settings.workers, "note": SLOWDOWN_NOTE, **shapes}
    finally:
        ray.shutdown()


# -- faults ----------------------------------------------------------------------------------


def expected_attempts() -> dict[str, float]:
    """Return the share of tasks ending at each attempt when every attempt fails with p."""
    p = FAULT_PROBABILITY
    shares = {str(k): (1 - p) * p ** (k - 1) for k in range(1, RETRIES + 1)}
    shares[str(RETRIES + 1)] = p ** RETRIES  # the last attempt, whatever its outcome
    return {k: round(v, 4) for k, v in shares.items()}


def expected_median() -> int:
    """Return the attempt the median task ends at, from the expected shares."""
    reached = 0.0
    for attempt, share in expected_attempts().items():
        reached += share
        if reached >= 0.5:
            return int(attempt)
    return RETRIES + 1


def fault_figures(runner: Runner, run_id: str, n: int) -> dict[str, Any]:
    """Read the run's tasks back from the store: outcomes and attempts."""
    tasks = runner.runs.tasks(run_id)
    check(len(tasks) == n, f"the faulted run recorded {len(tasks)} tasks, not {n}")
    states = Counter(str(t.state) for t in tasks)
    attempts = [t.attempt for t in tasks]
    succeeded = states.get(str(TaskState.SUCCEEDED), 0)
    check(succeeded + states.get(str(TaskState.FAILED), 0) == n, f"task states {states}")
    check(max(attempts) <= RETRIES + 1, f"a task ran {max(attempts)} attempts")
    spread = Counter(attempts)
    return {
        "tasks": n, "succeeded": succeeded, "states": dict(states),
        "success_rate": round(succeeded / n, 4),
        "expected_success_rate": round(1 - FAULT_PROBABILITY ** (RETRIES + 1), 4),
        "attempts_median": statistics.median(attempts), "attempts_max": max(attempts),
        "attempts_mean": round(statistics.fmean(attempts), 4),
        "expected_attempts_mean": round(sum(FAULT_PROBABILITY ** k
                                            for k in range(RETRIES + 1)), 4),
        "expected_attempts_median": expected_median(),
        "attempts_share": {str(k): round(spread[k] / n, 4) for k in sorted(spread)},
        "expected_attempts_share": expected_attempts(),
    }


def bench_faults(settings: Settings, work: Path) -> dict[str, Any]:
    """Run independent flaky tasks with injected failures; report outcomes and attempts."""
    n = settings.fault_tasks
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # records what the runner sleeps; sleeps it too
        slept.append(seconds)
        time.sleep(seconds)

    options = RunnerOptions(max_workers=settings.workers, cache=False, sleep=sleep,
                            faults=FaultInjector({"flaky": FAULT_PROBABILITY},
                                                 seed=settings.seed))
    progress(f"faults: {n} tasks failing with p={FAULT_PROBABILITY}, {RETRIES} retries")
    with scratch(work, "faults") as folder, workspace(folder) as (store, blobs):
        runner = Runner(store, blobs, options)
        try:
            result, seconds = measure(lambda: runner.run(flaky_fan_out, {"n": n}))
            report = fault_figures(runner, result.run.id, n)
        finally:
            runner.close()
    check(result.succeeded == (report["succeeded"] == n), "run state disagrees with its tasks")
    return {"fault_probability": FAULT_PROBABILITY, "retries": RETRIES, "retry_delay_s": 0,
            "seed": settings.seed, "run_state": str(result.run.state), **report,
            "retry_sleeps": len(slept), "retry_sleep_total_s": round(sum(slept), 6),
            "seconds": round(seconds, 4), "ms_per_task": round(seconds * 1000 / n, 4)}


# -- command line ----------------------------------------------------------------------------


def targets(local: dict[str, Any]) -> dict[str, Any]:
    """Compare the local overhead (provenance on, the default) with the 1 ms goal."""
    sequential = local["sequential"]["engine"]["overhead_ms_per_task"]
    fanned = local["fan_out"]["engine"]["overhead_ms_per_task"]
    return {"overhead_ms_per_task_max": TARGET_MS, "measured_on": "sqlite, thread executor, "
            "provenance recorded", "sequential_overhead_ms_per_task": sequential,
            "fan_out_overhead_ms_per_task": fanned, "sequential_met": sequential <= TARGET_MS,
            "fan_out_met": fanned <= TARGET_MS}


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` shrinks the sizes, implies --no-ray --no-process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, help="tasks per local chain and fan-out (1000)")
    parser.add_argument("--repeat", type=int, help="local rounds, best reported (3)")
    parser.add_argument("--process-tasks", type=int, help="process fan-out tasks (200)")
    parser.add_argument("--ray-tasks", type=int, help="tasks per Ray chain and fan-out (500)")
    parser.add_argument("--fault-tasks", type=int, help="flaky tasks (1000)")
    parser.add_argument("--workers", type=int, help="max_workers and bare pool size (4)")
    add_common_arguments(parser, "folder for temporary files (default: system temp)")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray")
    parser.add_argument("--no-process", action="store_true", help="skip the process executor")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, no Ray, no processes: for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in base.items()}
    if any(value < 1 for value in sizes.values()):
        parser.error("sizes and counts must be at least 1")
    return Settings(**sizes, seed=args.seed, quick=args.quick, tmpdir=args.tmpdir,
                    ray=not (args.no_ray or args.quick),
                    process=not (args.no_process or args.quick),
                    postgres_url=None if args.no_postgres else args.postgres_url)



def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the JSON report; exit 1 when a section errored."""
    settings = parse_settings(argv)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        work = Path(tmp)
        local = bench_local(settings, work)
        sections: dict[str, Callable[[Settings, Path], dict[str, Any]]] = {
            "postgresql": bench_postgres, "process": bench_process, "ray": bench_ray,
            "faults": bench_faults}
        measured = {name: run(settings, work) for name, run in sections.items()}
    report = {"benchmark": "loopline pipeline engine overhead", "machine": machine(),
              "settings": public_settings(settings), "sqlite": local, **measured,
              "targets": targets(local), "process_max_rss_mib": max_rss_mib(),
              "elapsed_s": elapsed()}
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if any("error" in section for section in measured.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
