"""Layer L3: the pipeline engine: tasks and DAGs with retries, caching and durable resume.

Imports only ``loopline.core``, ``loopline.store``, ``loopline.artifacts`` (and ``data``).

    definitions.py  @task, @pipeline: inert, validated definitions; the retry policy
    graph.py        calling tasks inside a pipeline function builds the DAG from futures
    parameters.py   parameters bound to the signature and checked by annotation
    plan.py         the validated execution plan: parameters, cycles, order
    outputs.py      output records (inline JSON or artifact digests) and cache keys
    executors.py    the local thread executor and attempt timeouts
    attempts.py     one task on a worker: cache, attempts, retries, recorded outputs
    runner.py       Runner: run and resume, durably, on the metadata store
    faults.py       fault injection: named tasks fail with probability p
"""

from loopline.pipelines.attempts import RunnerOptions
from loopline.pipelines.definitions import (
    PipelineDefinition,
    RetryPolicy,
    TaskDefinition,
    pipeline,
    task,
)
from loopline.pipelines.executors import AttemptTimeoutError, ThreadExecutor
from loopline.pipelines.faults import FaultInjector, InjectedFault, parse_faults
from loopline.pipelines.graph import TaskFuture
from loopline.pipelines.plan import ExecutionPlan, build_plan
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
    "ThreadExecutor",
    "build_plan",
    "parse_faults",
    "pipeline",
    "task",
]
