"""The client and the local workspace give the same answers on one shared scenario.

One scenario function runs twice: on a local ``Workspace`` acting as ``ada``, and through a
``Client`` (an admin token of ``ada``) against a server over a second, identical workspace.
It registers two versions, moves an alias, snapshots and validates data, deploys, starts
a canary, asks for an approval, walks lineage, reads the audit log and everything it
made back, and collects four refusals (unknown version, bad alias, unknown deployment,
self-approval). Every answer must be equal once what differs by nature
between two workspaces is masked: generated ids and timestamps. Names, versions, digests,
metrics, statuses, routes, audit actions and actors, error classes and messages must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic_core import to_jsonable_python
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.api import ApiOptions, create_api
from loopline.app import Workspace
from loopline.client import Client
from loopline.core.deployments import CanaryPlan, Route
from loopline.core.errors import LooplineError
from loopline.data.validation import Suite
from loopline.serving.server import ThreadedServer
from loopline.store import AuditFilter

ID = re.compile(r"\b[0-9a-f]{32}\b")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
Session = Workspace | Client


def _masked(value: Any) -> Any:
    """Return ``value`` as JSON-like data with ids, times and local paths masked."""
    plain = to_jsonable_python(value, fallback=repr)
    if isinstance(plain, dict):
        return {key: _masked(item) for key, item in plain.items()}
    if isinstance(plain, list):
        return [_masked(item) for item in plain]
    if isinstance(plain, str):
        return TIME.sub("<time>", ID.sub("<id>", plain))
    return plain


def _refusal(action: Any) -> tuple[str, str]:
    try:
        action()
    except LooplineError as exc:
        return type(exc).__name__, exc.message
    raise AssertionError("the action was not refused")


def _audited(session: Session) -> list[tuple[str, str, str]]:
    """Return who did what to which subject, oldest first.

    The server's log also holds the token's creation and one ``artifact.put`` per payload
    the client uploaded (a local registration stores them inside its own entry); sequence
    numbers and hashes differ with those, so they are left out of the comparison, as are the
    entries of setting each workspace up (``workspace.init``, ``db.upgrade``).
    """
    entries = session.audit.entries(AuditFilter(limit=1000, newest_first=False))
    return [(e.actor, e.action, e.subject) for e in entries
            if not e.action.startswith(("artifact.", "governance.token_", "workspace.", "db."))]


def _data() -> tuple[LogisticRegression, pd.DataFrame]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    features.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in features.columns]
    return LogisticRegression(max_iter=500).fit(features, target), features


def scenario(session: Session) -> list[Any]:
    """Do the same things through ``session`` and return every answer, in order."""
    model, features = _data()
    answers: list[Any] = []
    keep = answers.append
    keep(session.models.register(model, "iris", input_example=features.head(10),
                                 metrics={"accuracy": 0.97}, tags={"team": "ml"}))
    keep(session.models.register(model, "iris", input_example=features.head(10),
                                 description="second"))
    keep(session.models.set_alias("iris", "champion", 1))
    keep(session.models.set_alias("iris", "champion", 2))
    keep(session.models.get("iris@champion"))
    keep(session.models.versions("iris"))
    keep(session.models.models())
    keep(session.models.aliases("iris"))
    keep(session.models.model_card("iris/1"))
    snapshot = session.datasets.snapshot(features, "iris-features")
    keep(snapshot)
    keep(session.datasets.versions("iris-features"))
    keep(session.validate_dataset("iris-features@1", Suite.from_dict({
        "name": "basic", "expectations": [
            {"type": "null_rate_at_most", "column": "sepal_length", "max": 0.0},
            {"type": "row_count_between", "min": 100}]})))
    keep(session.deployments.create("iris-web", [Route("iris", 1, 100.0)], "replace"))
    keep(session.deployments.start_canary("iris-web", ("iris", 2),
                                          CanaryPlan(steps=(10.0, 50.0, 100.0))))
    keep(session.deployments.get("iris-web"))
    keep(session.deployments.history("iris-web"))
    request = session.approvals.request("iris", 2, "alias", "production", "ready")
    keep(request)
    keep(session.approvals.list())
    keep(session.lineage.upstream("dataset_snapshot:iris-features@1"))
    keep(_audited(session))
    keep(_refusal(lambda: session.models.get("iris/9")))
    keep(_refusal(lambda: session.models.set_alias("iris", "bad alias!", 1)))
    keep(_refusal(lambda: session.deployments.promote("nowhere")))
    keep(_refusal(lambda: session.approvals.approve(request.id, "self-approval")))
    return answers


@pytest.fixture
def remote(db_url: str, tmp_path: Path) -> Iterator[Client]:
    """A client of a server over a workspace on each backend (the local one is on SQLite)."""
    served = Workspace.init(tmp_path / "served", overrides={"db_url": db_url})
    _, secret = served.tokens.create("ada", "admin")
    server = ThreadedServer(create_api(served, ApiOptions(auth_failures_per_minute=0)))
    try:
        with Client(server.url, secret, timeout=120) as client:
            yield client
    finally:
        server.stop()
        served.close()


def test_the_client_answers_as_the_local_workspace_does(remote: Client, tmp_path: Path) -> None:
    with Workspace.init(tmp_path / "local", overrides={"user": "ada"}) as local:
        here = [_masked(answer) for answer in scenario(local)]
    there = [_masked(answer) for answer in scenario(remote)]
    assert len(here) == len(there)
    for step, (mine, theirs) in enumerate(zip(here, there, strict=True)):
        assert mine == theirs, f"answer {step} differs"
