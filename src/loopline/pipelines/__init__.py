"""Layer L3: the pipeline engine: tasks and DAGs with retries, caching and durable resume.

Imports only ``loopline.core``, ``loopline.store``, ``loopline.artifacts`` (and ``data``).

    definitions.py  @task, @pipeline: inert, validated definitions; the retry policy
    graph.py        calling tasks inside a pipeline function builds the DAG from futures
    parameters.py   parameters bound to the signature and checked by annotation
    plan.py         the validated execution plan: parameters, cycles, order
    outputs.py      output records (inline JSON or artifact digests) and cache keys
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
    faults.py       fault injection: named tasks fail with probability p
"""

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
from loopline.pipelines.plan import ExecutionPlan, build_plan
from loopline.pipelines.remote import AttemptTimeoutError, RemoteTaskFailure, WorkerLostError
from loopline.pipelines.runner import Runner, RunResult

__all__ = [
    "AttemptTimeoutError",
    "ExecutionPlan",
    "FaultInjector",
    "InjectedFault",
    "PipelineDefinition",
    "RetryPolicy",
    "RunResult",
    "Runner",
    "RunnerOptions",
    "TaskDefinition",
    "TaskFuture",
    "TaskUpdate",
    "ThreadExecutor",
    "RemoteTaskFailure",
    "WorkerLostError",
    "build_plan",
    "parse_faults",
    "pipeline",
    "task",
]
