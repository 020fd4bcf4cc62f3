"""Layer L3: the pipeline engine: tasks and DAGs with retries, caching and durable resume.

Imports only ``loopline.core``, ``loopline.store``, ``loopline.artifacts`` (and ``data``).

    definitions.py  @task, @pipeline: inert, validated definitions; the retry policy
    graph.py        calling tasks inside a pipeline function builds the DAG from futures
    parameters.py   parameters bound to the signature and checked by annotation
    plan.py         the validated execution plan: parameters, cycles, order
    outputs.py      output records (inline JSON or artifact digests) and cache keys
    codecs.py       data outputs: DataFrames, Arrow tables, NumPy arrays, files (no pickle)
    options.py      RunnerOptions: executor, workers, leases, caching; TaskUpdate
    remote.py       one attempt as a self-contained call any worker runs; remote errors
    context.py      current_task(): the running attempt's run, key and artifact store
    executors.py    the local thread pool, and the thread invoker with stoppable timeouts
    process_pool.py the process invoker: worker processes, killed on timeout
    ray_invoker.py  the Ray invoker: attempts as Ray tasks
    attempts.py     one task on a worker: attempts, retries through the invoker
    execution.py    the loop: ready tasks started, outcomes recorded, one commit per pass
    heartbeat.py    lease renewal and cancel requests, every heartbeat
    runner.py       Runner: create, run, resume and cancel runs, durably
    run_records.py  what a run records: code version, environment, lineage
    run_lineage.py  lineage of a run: code, environment → task runs → artifacts
    shell.py        shell_task: wrap an existing command (no shell), its files and logs
    pipeline_file.py  a pipeline of command tasks from a .toml or .yaml file
    schedules.py    cron schedules (time zones, catch-up policy) and event triggers
    faults.py       fault injection: named tasks fail with probability p

Names load on first use, so a worker process importing one module pays only for that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopline._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from loopline.pipelines.context import TaskContext, current_task
    from loopline.pipelines.definitions import (
        PipelineDefinition,
        RetryPolicy,
        TaskDefinition,
        pipeline,
        task,
    )
    from loopline.pipelines.executors import ThreadExecutor
    from loopline.pipelines.faults import FaultInjector, InjectedFault, parse_faults
    from loopline.pipelines.graph import TaskFuture
    from loopline.pipelines.options import RunnerOptions, TaskUpdate
    from loopline.pipelines.pipeline_file import load_pipeline_file
    from loopline.pipelines.plan import ExecutionPlan, build_plan
    from loopline.pipelines.remote import AttemptTimeoutError, RemoteTaskFailure, WorkerLostError
    from loopline.pipelines.runner import Runner, RunResult
    from loopline.pipelines.schedules import Schedule, Trigger
    from loopline.pipelines.shell import (
        CommandFailedError,
        MissingOutputError,
        read_output_file,
        shell_task,
    )

_LAZY = {
    "AttemptTimeoutError": "loopline.pipelines.remote",
    "CommandFailedError": "loopline.pipelines.shell",
    "ExecutionPlan": "loopline.pipelines.plan",
    "FaultInjector": "loopline.pipelines.faults",
    "InjectedFault": "loopline.pipelines.faults",
    "MissingOutputError": "loopline.pipelines.shell",
    "PipelineDefinition": "loopline.pipelines.definitions",
    "RemoteTaskFailure": "loopline.pipelines.remote",
    "RetryPolicy": "loopline.pipelines.definitions",
    "RunResult": "loopline.pipelines.runner",
    "Runner": "loopline.pipelines.runner",
    "RunnerOptions": "loopline.pipelines.options",
    "Schedule": "loopline.pipelines.schedules",
    "TaskContext": "loopline.pipelines.context",
    "TaskDefinition": "loopline.pipelines.definitions",
    "TaskFuture": "loopline.pipelines.graph",
    "TaskUpdate": "loopline.pipelines.options",
    "ThreadExecutor": "loopline.pipelines.executors",
    "Trigger": "loopline.pipelines.schedules",
    "WorkerLostError": "loopline.pipelines.remote",
    "build_plan": "loopline.pipelines.plan",
    "current_task": "loopline.pipelines.context",
    "load_pipeline_file": "loopline.pipelines.pipeline_file",
    "parse_faults": "loopline.pipelines.faults",
    "pipeline": "loopline.pipelines.definitions",
    "read_output_file": "loopline.pipelines.shell",
    "shell_task": "loopline.pipelines.shell",
    "task": "loopline.pipelines.definitions",
}

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "AttemptTimeoutError",
    "CommandFailedError",
    "ExecutionPlan",
    "FaultInjector",
    "InjectedFault",
    "MissingOutputError",
    "PipelineDefinition",
    "RemoteTaskFailure",
    "RetryPolicy",
    "RunResult",
    "Runner",
    "RunnerOptions",
    "Schedule",
    "TaskContext",
    "TaskDefinition",
    "TaskFuture",
    "TaskUpdate",
    "ThreadExecutor",
    "Trigger",
    "WorkerLostError",
    "build_plan",
    "current_task",
    "load_pipeline_file",
    "parse_faults",
    "pipeline",
    "read_output_file",
    "shell_task",
    "task",
]
