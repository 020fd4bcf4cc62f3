"""Two model servers over one PostgreSQL store: both serve the same deployment, converge on a
replaced primary within seconds, fail no request meanwhile, and every answer's prediction
comes from the version it names."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import (
    RunningServer,
    deploy,
    primary,
    record,
    register_constant,
    running,
)

from loopline.app import Workspace

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("LOOPLINE_TEST_POSTGRES_URL"),
                       reason="LOOPLINE_TEST_POSTGRES_URL is not set (CI sets it)"),
]

CONVERGE_SECONDS = 5.0
Answer = tuple[int, str, str, Any]  # status, X-Model-Version, body model_version, predictions


@pytest.fixture
def workspaces(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Workspace, Workspace]]:
    """One workspace on PostgreSQL, opened twice (one store and engine per server)."""
    overrides = {"db_url": postgres_url}
    first = Workspace.init(tmp_path / "ws", overrides=overrides)
    second = Workspace.open(tmp_path / "ws", overrides=overrides)
    try:
        yield first, second
    finally:
        second.close()
        first.close()


def _load(server: RunningServer, stop: threading.Event, answers: list[Answer],
          errors: list[Exception]) -> None:
    """Send requests one after another until ``stop``, keeping what each answer said."""
    try:
        with server.client() as client:
            while not stop.is_set():
                response = client.post("/predict/web", json={"records": [record()]})
                body = response.json()
                answers.append((response.status_code, response.headers["x-model-version"],
                                body.get("model_version"), body.get("predictions")))
    except (httpx.HTTPError, ValueError, KeyError) as exc:  # dropped, non-JSON, no header
        errors.append(exc)


def _serves(answers: list[Answer], uri: str) -> bool:
    return bool(answers) and answers[-1][1] == uri


def test_two_servers_on_one_postgres_store_converge_on_a_replaced_primary_losing_nothing(
        workspaces: tuple[Workspace, Workspace]) -> None:
    ws, other = workspaces
    zero, one = register_constant(ws, "const", 0.0), register_constant(ws, "const", 1.0)
    deploy(ws, "web", [primary(zero)])
    expected = {zero.uri: [0.0], one.uri: [1.0]}
    answers: list[list[Answer]] = [[], []]
    errors: list[Exception] = []
    stop = threading.Event()
    with running(ws, deployments=["web"]) as a, running(other, deployments=["web"]) as b:
        threads = [threading.Thread(target=_load, args=(server, stop, seen, errors))
                   for server, seen in ((a, answers[0]), (b, answers[1]))]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + CONVERGE_SECONDS
            while not all(_serves(seen, zero.uri) for seen in answers) and not errors:
                assert time.monotonic() < deadline, "the servers never answered"
                time.sleep(0.02)
            ws.deployments.replace("web", "const", one.version, "roll forward")
            changed = time.monotonic()
            while not all(_serves(seen, one.uri) for seen in answers) and not errors:
                assert time.monotonic() - changed < CONVERGE_SECONDS, (
                    f"not converged on {one.uri} within {CONVERGE_SECONDS}s")
                time.sleep(0.02)
            time.sleep(0.1)  # a few more requests on the new version
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert errors == []
    for seen in answers:
        assert {status for status, *_ in seen} == {200}
        assert all(header == body for _, header, body, _ in seen)
        assert all(predictions == expected[body] for _, _, body, predictions in seen)
        versions = [header for _, header, _, _ in seen]
        switched = versions.index(one.uri)
        assert set(versions[:switched]) == {zero.uri}, "answered by neither version"
        assert set(versions[switched:]) == {one.uri}, "went back to v1 after switching"
