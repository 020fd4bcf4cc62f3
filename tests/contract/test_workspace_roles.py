"""Once roles are enforced, every service of a workspace that changes something asks the one
authorisation function: a viewer is refused before anything is written, a developer is let
through, and reads stay open to a viewer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError
from loopline.core.governance import Role
from loopline.data.validation import Suite

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
MODEL = LogisticRegression().fit(FRAME[["x"]], FRAME["y"])


@task
def one() -> int:
    return 1


@pipeline
def tiny() -> None:
    one()


def _as(ws: Workspace, user: str) -> Workspace:
    return Workspace.open(ws.root, overrides={"db_url": ws.settings.db_url, "user": user})


@pytest.fixture
def roles(ws: Workspace) -> Iterator[tuple[Workspace, Workspace]]:
    """(a viewer's workspace, a developer's workspace) with a snapshot already taken."""
    ws.datasets.snapshot(FRAME, "orders")
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    ws.access.grant(ws.actor, "vic", Role.VIEWER)
    ws.access.grant(ws.actor, "dev", Role.DEVELOPER)
    viewer, developer = _as(ws, "vic"), _as(ws, "dev")
    try:
        yield viewer, developer
    finally:
        viewer.close()
        developer.close()


def test_a_viewer_cannot_change_data_runs_artifacts_or_models(
        roles: tuple[Workspace, Workspace], tmp_path: Path) -> None:
    viewer, _ = roles
    before = viewer.store.audit.head()
    suite = Suite.model_validate({"name": "s", "expectations": [
        {"type": "column_exists", "column": "x"}]})
    refused = [
        lambda: viewer.datasets.snapshot(FRAME, "orders2"),
        lambda: viewer.partitions.append("events", FRAME),
        lambda: viewer.validate_dataset("orders", suite),
        lambda: viewer.artifacts.put_bytes(b"payload"),
        lambda: viewer.pipelines.run(tiny),
        lambda: viewer.models.register(MODEL, "fraud", input_example=FRAME[["x"]]),
    ]
    for action in refused:
        with pytest.raises(AccessDeniedError) as caught:
            action()
        assert "'vic' may not write" in str(caught.value)
    assert viewer.store.audit.head() == before  # nothing was written by any of them
    assert viewer.datasets.read("orders").num_rows == 3  # reading is allowed


def test_a_developer_can_change_data_runs_and_models(
        roles: tuple[Workspace, Workspace]) -> None:
    _, developer = roles
    assert developer.datasets.snapshot(FRAME.assign(x=[4.0, 5.0, 6.0]), "orders").created
    assert developer.pipelines.run(tiny).succeeded
    version = developer.models.register(MODEL, "fraud", input_example=FRAME[["x"]])
    assert version.created_by == "dev"
    with pytest.raises(AccessDeniedError):
        developer.artifacts.rotate_key()  # an admin's job
