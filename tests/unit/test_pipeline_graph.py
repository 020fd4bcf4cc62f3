"""Authoring and planning: DAGs from futures, fan-out and gather, refusals before running."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from loopline import pipeline, task
from loopline.core.errors import InvalidArgumentError, UserCodeError
from loopline.pipelines import RetryPolicy, TaskFuture, build_plan
from loopline.pipelines.graph import Graph, Node
from loopline.pipelines.outputs import encode_output
from loopline.pipelines.plan import plan_graph, result_keys, topological_order

CALLS: list[str] = []


@task
def load(n: int) -> list[int]:
    CALLS.append("load")
    return list(range(n))


@task(retries=2, name="square")
def square(x: int) -> int:
    CALLS.append("square")
    return x * x


@task
def total(values: list[int], offset: int = 0) -> int:
    CALLS.append("total")
    return sum(values) + offset


@pipeline
def fan(items: list[int], offset: int = 0, mode: Literal["a", "b"] = "a",
        label: str | None = None) -> Any:
    squares = [square(x) for x in items]
    return total(squares, offset=offset)


def test_calling_tasks_in_a_pipeline_builds_a_dag_and_runs_nothing() -> None:
    CALLS.clear()
    plan = build_plan(fan, {"items": [1, 2, 3], "offset": 5})
    assert CALLS == []
    assert plan.order == ("square", "square-2", "square-3", "total")
    assert plan.nodes["total"].upstream == ("square", "square-2", "square-3")
    assert plan.nodes["square-2"].args == (2,)
    assert plan.parameters == {"items": [1, 2, 3], "offset": 5, "mode": "a", "label": None}
    assert result_keys(plan) == ["total"]
    assert plan.downstream("square-3") == {"total"}


def test_gather_waits_for_every_fanned_out_task_and_order_respects_dependencies() -> None:
    @pipeline
    def diamond(n: int) -> Any:
        data = load(n)
        left, right = square(data), square(data)
        return total([left, right, data])

    plan = build_plan(diamond, {"n": 3})
    position = {key: i for i, key in enumerate(plan.order)}
    for node in plan.nodes.values():
        assert all(position[up] < position[node.key] for up in node.upstream)
    assert set(plan.nodes["total"].upstream) == {"square", "square-2", "load"}


def test_a_task_called_outside_a_pipeline_is_its_plain_function() -> None:
    assert square(4) == 16
    assert isinstance(square.options.retry, RetryPolicy)


@pytest.mark.parametrize(("params", "field"), [
    ({"items": [1], "colour": "red"}, "parameters.colour"),
    ({}, "parameters.items"),
    ({"items": "1,2"}, "parameters.items"),
    ({"items": [1, "2"]}, "parameters.items"),
    ({"items": [1], "offset": 1.5}, "parameters.offset"),
    ({"items": [1], "offset": True}, "parameters.offset"),
    ({"items": [1], "mode": "c"}, "parameters.mode"),
    ({"items": [1], "label": 3}, "parameters.label"),
])
def test_bad_parameters_are_refused_naming_the_parameter_before_anything_runs(
        params: dict[str, Any], field: str) -> None:
    CALLS.clear()
    with pytest.raises(InvalidArgumentError) as caught:
        build_plan(fan, params)
    assert caught.value.field == field
    assert CALLS == []


def test_a_parameter_that_is_not_json_is_refused() -> None:
    @pipeline
    def anything(x: Any) -> Any:
        return square(x)

    with pytest.raises(InvalidArgumentError, match=r"parameters\.x.*JSON"):
        build_plan(anything, {"x": object()})


def test_a_cycle_is_refused_naming_its_tasks() -> None:
    graph = Graph()
    graph.add(Node("a", square, (TaskFuture("b"),), {}, ("b",)))
    graph.add(Node("b", square, (TaskFuture("a"),), {}, ("a",)))
    graph.add(Node("c", square, (1,), {}, ()))
    with pytest.raises(InvalidArgumentError, match="a, b form a cycle"):
        plan_graph(fan, {}, graph)


def test_a_dependency_on_an_unknown_task_is_refused() -> None:
    graph = Graph()
    graph.add(Node("a", square, (TaskFuture("ghost"),), {}, ("ghost",)))
    with pytest.raises(InvalidArgumentError, match="unknown task"):
        topological_order(graph)


def test_branching_on_a_future_is_refused_with_a_hint() -> None:
    @pipeline
    def branchy(n: int) -> Any:
        if square(n):
            return None
        return None

    with pytest.raises(InvalidArgumentError, match="branch inside a task"):
        build_plan(branchy, {"n": 1})


def test_a_literal_argument_that_is_not_json_is_refused_naming_the_task() -> None:
    @pipeline
    def odd() -> Any:
        return square(object())

    with pytest.raises(InvalidArgumentError, match="task 'square' arguments"):
        build_plan(odd)


def test_a_pipeline_function_that_raises_is_user_code_error_keeping_the_cause() -> None:
    @pipeline
    def broken() -> Any:
        raise KeyError("nope")

    with pytest.raises(UserCodeError) as caught:
        build_plan(broken)
    assert isinstance(caught.value.__cause__, KeyError)


class _NoBlobs:
    def put_bytes(self, data: bytes) -> Any:
        raise AssertionError("small values stay inline")


def test_a_non_serialisable_output_is_refused_naming_the_task() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        encode_output("train", object(), _NoBlobs())  # type: ignore[arg-type]
    assert caught.value.field == "task 'train' output"
    assert encode_output("t", (1, "a"), _NoBlobs()) == {  # type: ignore[arg-type]
        "kind": "json", "value": [1, "a"]}


@pytest.mark.parametrize(("options", "field"), [
    ({"retries": -1}, "retries"), ({"retries": 1.5}, "retries"), ({"backoff": 0.5}, "backoff"),
    ({"jitter": 2}, "jitter"), ({"retry_on": (ValueError, "x")}, "retry_on"),
    ({"timeout": 0}, "timeout"), ({"name": "bad name"}, "name"), ({"cache": "yes"}, "cache"),
])
def test_bad_task_options_are_refused_naming_the_option(options: dict[str, Any],
                                                        field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        task(**options)(lambda: None)
    assert caught.value.field == field


def test_retry_delays_grow_exponentially_with_bounded_jitter_and_a_cap() -> None:
    policy = RetryPolicy(retries=5, retry_delay=1.0, backoff=2.0, jitter=0.1, max_delay=5.0)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(2, 0.0) == pytest.approx(1.8)
    assert policy.delay(2, 0.999999) == pytest.approx(2.2, abs=1e-5)
    assert policy.delay(5, 0.999999) == 5.0
    assert policy.retries_after(ConnectionError(), 5)
    assert not policy.retries_after(ConnectionError(), 6)
    assert not policy.retries_after(ValueError(), 1), "a bug is not retried by default"
    narrow = RetryPolicy(retries=3, retry_on=(KeyError,))
    assert not narrow.retries_after(ValueError(), 1)
    huge = RetryPolicy(retries=10_000, retry_delay=1.0, backoff=1e6, max_delay=30.0)
    assert huge.delay(5_000, 0.5) == 30.0, "no overflow, just the cap"


def test_a_zero_retry_delay_retries_at_once_and_a_zero_cap_never_waits() -> None:
    assert RetryPolicy(retries=3, retry_delay=0.0).delay(1, 0.9) == 0.0
    assert RetryPolicy(retries=3, retry_delay=0.0, backoff=3.0).delay(3, 0.0) == 0.0
    assert RetryPolicy(retries=3, retry_delay=2.0, max_delay=0.0).delay(2, 0.5) == 0.0
