"""The task graph a pipeline function builds when its tasks are called with futures.

Calling a task while a pipeline is being planned returns a ``TaskFuture`` instead of running
it; a future passed to another task (alone, or inside lists, tuples and dicts) becomes an
edge. Fan-out is a loop over a parameter list, gather is passing the list of futures on.
Keys are deterministic (``name``, ``name-2``, ``name-3`` ... in call order), so planning the
same pipeline with the same parameters names the same tasks, which is what resume relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.core.errors import InvalidArgumentError, UserCodeError
from loopline.pipelines.definitions import RECORDER, PipelineDefinition, TaskDefinition


@dataclass(frozen=True, slots=True)
class TaskFuture:
    """The output of a task call that has not run yet; pass it to other tasks."""

    key: str

    def __bool__(self) -> bool:
        raise InvalidArgumentError(
            "pipeline", f"the output of task {self.key!r} is not known while the pipeline is "
                        "planned; branch inside a task instead")

    def __iter__(self) -> Any:
        raise InvalidArgumentError(
            "pipeline", f"the output of task {self.key!r} cannot be iterated while the "
                        "pipeline is planned; fan out over a parameter list instead")


def map_structure(value: Any, leaf: Callable[[TaskFuture], Any]) -> Any:
    """Return ``value`` with every ``TaskFuture`` in lists, tuples and dicts replaced."""
    if isinstance(value, TaskFuture):
        return leaf(value)
    if isinstance(value, list | tuple):
        return type(value)(map_structure(item, leaf) for item in value)
    if isinstance(value, dict):
        return {key: map_structure(item, leaf) for key, item in value.items()}
    return value


def futures_in(value: Any) -> list[str]:
    """Return the keys of the futures inside ``value``, in order, without repeats."""
    found: list[str] = []

    def collect(future: TaskFuture) -> None:
        if future.key not in found:
            found.append(future.key)

    map_structure(value, collect)
    return found


@dataclass(frozen=True, slots=True)
class Node:
    """One task call: the task, its arguments (futures inside) and the keys it waits for."""

    key: str
    task: TaskDefinition
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    upstream: tuple[str, ...]


@dataclass(slots=True)
class Graph:
    """Task calls by key, in the order they were made, and what the pipeline returned."""

    nodes: dict[str, Node] = field(default_factory=dict)
    result: Any = None

    def add(self, node: Node) -> None:
        """Add ``node``.

        Raises:
            InvalidArgumentError: when its key is already taken.
        """
        if node.key in self.nodes:
            raise InvalidArgumentError("pipeline", f"two tasks share the key {node.key!r}")
        self.nodes[node.key] = node


class _Builder:
    """Records task calls into a graph while a pipeline function runs."""

    def __init__(self) -> None:
        self.graph = Graph()
        self._counts: dict[str, int] = {}

    def record(self, task: TaskDefinition, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> TaskFuture:
        count = self._counts.get(task.name, 0) + 1
        self._counts[task.name] = count
        key = task.name if count == 1 else f"{task.name}-{count}"
        upstream = futures_in((args, kwargs))
        for name in upstream:
            if name not in self.graph.nodes:
                raise InvalidArgumentError(
                    f"task {key!r}", f"is given a future of {name!r} from another pipeline")
        self.graph.add(Node(key, task, args, dict(kwargs), tuple(upstream)))
        return TaskFuture(key)


def build_graph(pipeline: PipelineDefinition, parameters: Mapping[str, Any]) -> Graph:
    """Run the pipeline function with ``parameters``, recording its task calls.

    Raises:
        InvalidArgumentError: when the function uses a future in a way only a task can.
        UserCodeError: when the pipeline function itself raises (the original is the cause).
    """
    builder = _Builder()
    token = RECORDER.set(builder)
    try:
        result = pipeline.fn(**parameters)
    except InvalidArgumentError:
        raise
    except Exception as exc:
        raise UserCodeError(f"pipeline {pipeline.name!r} raised while building its graph: "
                            f"{type(exc).__name__}: {exc}") from exc
    finally:
        RECORDER.reset(token)
    builder.graph.result = result
    return builder.graph
