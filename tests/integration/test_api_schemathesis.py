"""Property-based tests of the whole API against its own OpenAPI document (schemathesis).

For every operation, schemathesis generates requests from the published schema (valid and
invalid ones) and sends them, with an admin token, to a real server over a workspace that
holds a model with an alias, a dataset and a deployment, so lookups find things (on
SQLite and on PostgreSQL). No answer
may be a 5xx, and every answer must match the schema the document publishes for its status
(body and media type). The number of examples per operation is bounded, and so is the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.api import ApiOptions, create_api
from loopline.app import Workspace
from loopline.core.deployments import Route
from loopline.serving.server import ThreadedServer

pytestmark = pytest.mark.slow
EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _seed(ws: Workspace) -> None:
    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(features, target)
    ws.models.register(model, "iris", input_example=features.head(5))
    ws.models.set_alias("iris", "champion", 1)
    ws.datasets.snapshot(pd.concat([features, target], axis=1), "iris-data")
    ws.deployments.create("iris-prod", [Route("iris", 1, 100.0)], "replace")


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    workspace = Workspace.init(tmp_path, overrides={"db_url": db_url})
    _seed(workspace)
    _, secret = workspace.tokens.create("ada", "admin")
    server = ThreadedServer(create_api(workspace, ApiOptions(auth_failures_per_minute=0)))
    try:
        import httpx

        document = httpx.get(f"{server.url}/api/v1/openapi.json",
                             headers={"Authorization": f"Bearer {secret}"}, timeout=60).json()
        yield server.url, secret, document
    finally:
        server.stop()
        workspace.close()


def _fuzz(operation: Any, url: str, secret: str) -> None:
    # Requests the schema allows and requests it does not (wrong types, missing fields,
    # out-of-range values): both must be answered without a 5xx, in the published shape.
    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def one(case: Any) -> None:
        case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {secret}"},
                               checks=CHECKS, timeout=30)
    one()


def test_no_operation_answers_5xx_or_breaks_its_schema(
        served: tuple[str, str, dict[str, Any]]) -> None:
    url, secret, document = served
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 100  # every resource is reached, not a few
    for operation in operations:
        try:
            _fuzz(operation, url, secret)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then fail
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
