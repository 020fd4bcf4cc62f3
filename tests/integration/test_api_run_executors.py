"""A run submitted through the API executes on the server workspace's executor: its tasks run
in the process executor's worker processes, or on Ray, never on the caller's side and not on a
thread of the server when the workspace says otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import ApiServer, serve_api

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.core.runs import RunState, TaskState


@task
def where() -> dict[str, Any]:
    """Say which process ran this task, and whether it was a Ray worker."""
    try:
        import ray
    except ImportError:  # pragma: no cover - the dev extras install ray
        on_ray = False
    else:
        # A Ray worker has an actor or task id; the process executor's workers never join Ray.
        on_ray = ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None
    return {"pid": os.getpid(), "on_ray": on_ray}


@pipeline
def locating() -> Any:
    return where()


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiServer]:
    """The API over a SQLite workspace whose executor is the test's parameter."""
    executor = request.param
    if executor == "ray":
        request.getfixturevalue("ray_runtime")
    with Workspace.init(tmp_path / "ws", overrides={"executor": executor}) as workspace, \
            serve_api(workspace, pipelines=[locating]) as api:
        yield api


@pytest.mark.parametrize("served", ["process", pytest.param("ray", marks=pytest.mark.ray)],
                         indirect=True)
def test_a_run_submitted_through_the_api_runs_on_the_workspace_executor(
        served: ApiServer) -> None:
    client = served.client("developer")
    started = client.pipelines.submit("locating", {})

    finished = client.pipelines.wait(started.id, timeout=120)

    assert finished.state is RunState.SUCCEEDED, finished.error
    [ran] = client.pipelines.runs.tasks(started.id)
    assert ran.state is TaskState.SUCCEEDED and ran.outputs is not None
    located = ran.outputs["value"]
    assert located["pid"] != os.getpid()  # not in this process, where the server's threads are
    assert located["on_ray"] is (served.workspace.settings.executor == "ray")
