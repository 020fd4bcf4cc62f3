"""The lineage a finished (or resumed) pipeline run writes: its tasks, code, data and outputs.

Nodes: ``pipeline_run:<run_id>``, ``task_run:<run_id>/<task_key>``, ``code_version:<ref>``,
``environment:<digest>`` and ``artifact:<digest>``. Edges point from what was used to what
it made (the graph's rule, see ``loopline.core.lineage``)::

    code_version, environment ──USED──► pipeline_run and each task run that started
    task_run ──PART_OF──► pipeline_run
    upstream task_run ──CONSUMED──► downstream task_run
    consumed node (a dataset snapshot) ──CONSUMED──► task_run ──PRODUCED──► artifact

Recording is idempotent: the store skips nodes and edges it already holds, so recording a
run again after a resume only adds what the resume added. Node attributes hold only facts
that never change (the store never overwrites an attribute); a task's state lives in the
run store, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopline.core.canonical import is_digest
from loopline.core.errors import InvalidArgumentError
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef
from loopline.core.runs import TaskState
from loopline.data.provenance import CodeVersion
from loopline.store import UnitOfWork
from loopline.store.lineage import record

# A task in one of these states never ran: it used no code and read no input, so it gets a
# node (it is part of the run) but no USED or CONSUMED edges. A resume that runs it later
# adds them.
NOT_STARTED = frozenset({TaskState.PENDING.value, TaskState.UPSTREAM_FAILED.value})


@dataclass(frozen=True, slots=True)
class TaskLineage:
    """One task of a run: its upstream task keys, what it read and the artifact it wrote.

    Raises:
        InvalidArgumentError: when ``output_digest`` is not a lowercase SHA-256 hex digest.
    """

    task_key: str
    state: str
    inputs: Sequence[str] = ()
    output_digest: str | None = None
    consumed: Sequence[NodeRef] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "consumed", tuple(self.consumed))
        if self.output_digest is not None and not is_digest(self.output_digest):
            raise InvalidArgumentError(
                "task.output_digest",
                f"{self.output_digest!r} must be a lowercase hexadecimal SHA-256 digest")


@dataclass(frozen=True, slots=True)
class RunLineage:
    """A pipeline run's lineage: its code version, environment digest and tasks.

    Raises:
        InvalidArgumentError: when a task key repeats, or a task names as input a task that
            is not in ``tasks`` (or itself).
    """

    run_id: str
    pipeline: str
    code: CodeVersion | None
    environment_digest: str | None
    tasks: Sequence[TaskLineage]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        keys = [task.task_key for task in self.tasks]
        if len(set(keys)) != len(keys):
            repeated = sorted({key for key in keys if keys.count(key) > 1})
            raise InvalidArgumentError("run.tasks", f"task keys repeat: {repeated}")
        known = set(keys)
        for task in self.tasks:
            unknown = sorted((set(task.inputs) - known) | ({task.task_key} & set(task.inputs)))
            if unknown:
                raise InvalidArgumentError(
                    "task.inputs", f"task {task.task_key!r} names inputs {unknown} that are not "
                                   f"other tasks of run {self.run_id!r}")


def pipeline_run_node(run_id: str) -> NodeRef:
    """Return a run's node, ``pipeline_run:<run_id>``."""
    return NodeRef(NodeKind.PIPELINE_RUN, run_id)


def task_run_node(run_id: str, task_key: str) -> NodeRef:
    """Return a task run's node, ``task_run:<run_id>/<task_key>``."""
    return NodeRef(NodeKind.TASK_RUN, f"{run_id}/{task_key}")


def artifact_node(digest: str) -> NodeRef:
    """Return an artifact's node, ``artifact:<digest>``."""
    return NodeRef(NodeKind.ARTIFACT, digest)


def environment_node(digest: str) -> NodeRef:
    """Return an environment's node, ``environment:<digest>``."""
    return NodeRef(NodeKind.ENVIRONMENT, digest)


def code_version_ref(code: CodeVersion) -> str | None:
    """Return the node ref of a code version, or None when it names no code.

    A clean tree is its commit. A dirty one is ``<commit>+<diff_sha256>`` (``none+...``
    before the first commit): the diff hash alone could match at two commits (the same
    untracked files), and the commit alone would claim the changes were committed.
    """
    if code.repo is None or (code.dirty and code.diff_sha256 is None):
        return None  # outside git, or changes that could not be read: nothing to name
    if not code.dirty:
        return code.commit
    return f"{code.commit or 'none'}+{code.diff_sha256}"


def code_version_node(code: CodeVersion) -> LineageNode | None:
    """Return the lineage node of ``code`` with its commit and change hash, or None."""
    ref = code_version_ref(code)
    if ref is None:
        return None
    label = f"{(code.commit or 'no commit')[:12]}{' (dirty)' if code.dirty else ''}"
    # Repo path and branch are left out: they belong to one checkout, and the node is shared
    # by every run of this code from any checkout (the run store keeps them per run).
    return LineageNode(NodeRef(NodeKind.CODE_VERSION, ref), label,
                       {"commit": code.commit, "dirty": code.dirty,
                        "diff_sha256": code.diff_sha256})


def run_lineage_graph(run: RunLineage) -> tuple[list[LineageNode], list[LineageEdge]]:
    """Return the nodes and edges recording ``run`` (pure: nothing is written)."""
    run_ref = pipeline_run_node(run.run_id)
    nodes = [LineageNode(run_ref, f"{run.pipeline} run",
                         {"pipeline": run.pipeline, "job": run.pipeline})]
    context: list[NodeRef] = []  # what the run and every started task used
    code = code_version_node(run.code) if run.code is not None else None
    if code is not None:
        nodes.append(code)
        context.append(code.ref)
    if run.environment_digest is not None:
        env_ref = environment_node(run.environment_digest)
        nodes.append(LineageNode(env_ref, f"environment {run.environment_digest[:12]}"))
        context.append(env_ref)
    edges = [LineageEdge(used, run_ref, EdgeKind.USED) for used in context]
    for task in run.tasks:
        task_nodes, task_edges = _task_graph(run, task, context)
        nodes.extend(task_nodes)
        edges.extend(task_edges)
    return nodes, edges


def _task_graph(run: RunLineage, task: TaskLineage, context: Sequence[NodeRef],
                ) -> tuple[list[LineageNode], list[LineageEdge]]:
    ref = task_run_node(run.run_id, task.task_key)
    nodes = [LineageNode(ref, task.task_key, {"run_id": run.run_id, "task_key": task.task_key,
                                              "job": f"{run.pipeline}.{task.task_key}"})]
    # PART_OF points from the part to the whole, as a partition's edge points to its dataset:
    # upstream of the run reaches every task's inputs, downstream of a task reaches the run.
    edges = [LineageEdge(ref, pipeline_run_node(run.run_id), EdgeKind.PART_OF)]
    if task.output_digest is not None:
        artifact = artifact_node(task.output_digest)
        nodes.append(LineageNode(artifact, f"artifact {task.output_digest[:12]}",
                                 {"digest": task.output_digest}))
        edges.append(LineageEdge(ref, artifact, EdgeKind.PRODUCED))
    if task.state in NOT_STARTED:
        return nodes, edges
    # Code and environment also point at each task, not only at the run: PART_OF leads from
    # a task to its run, so without these, upstream of an artifact would not reach the code.
    edges.extend(LineageEdge(used, ref, EdgeKind.USED) for used in context)
    edges.extend(LineageEdge(task_run_node(run.run_id, key), ref, EdgeKind.CONSUMED)
                 for key in task.inputs)
    edges.extend(LineageEdge(read, ref, EdgeKind.CONSUMED) for read in task.consumed)
    return nodes, edges


def record_run_lineage(uow: UnitOfWork, run: RunLineage) -> None:
    """Record ``run``'s lineage inside ``uow``; recording it again adds no duplicates.

    Raises:
        InvalidArgumentError: when a node ref is invalid (for example a run id or task key
            with control characters or over 512 characters).
    """
    nodes, edges = run_lineage_graph(run)
    record(uow.session, nodes, edges, uow.now())
