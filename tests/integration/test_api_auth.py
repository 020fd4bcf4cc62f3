"""Deny by default, proven by walking the OpenAPI document: every operation refuses a request
without a token or with a bad one (401) and a token whose role is too low (403)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import ApiServer, serve_api

from loopline.api import ApiOptions
from loopline.api.auth import PUBLIC_PATHS
from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.governance import ROLE_PERMISSIONS, Permission, Role

BAD_TOKENS = ["", "Bearer", "Bearer llt_" + "A" * 43, "Basic dXNlcjpwYXNz",
              "Bearer not-a-token", "bearer x y"]


@pytest.fixture
def api(api_on_each_backend: ApiServer) -> ApiServer:
    """Every test here runs on SQLite and on PostgreSQL: this is the security boundary."""
    return api_on_each_backend


def _operations(api: ApiServer) -> list[tuple[str, str, dict[str, Any]]]:
    document = api.http("viewer").get("/api/v1/openapi.json").json()
    found = [(method.upper(), path, op) for path, ops in document["paths"].items()
             for method, op in ops.items()]
    assert len(found) >= 40, "the walk found too few operations to prove anything"
    return found


def _concrete(path: str) -> str:
    # A path parameter's value never matters: authentication comes before any lookup.
    return re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", path)


def _call(http: httpx.Client, method: str, path: str,
          headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {}
    if path.endswith("/upload"):  # uploads take raw bytes; the guard refuses JSON there
        body = {"content": b"{}", "headers": {**(headers or {}),
                                              "Content-Type": "application/octet-stream"}}
        return http.request(method, _concrete(path), **body)
    if method in {"POST", "PUT", "PATCH"}:
        body = {"json": {}}
    return http.request(method, _concrete(path), headers=headers, **body)


def test_every_operation_but_health_refuses_a_missing_or_invalid_token(
        api: ApiServer) -> None:
    anonymous = api.http(None)
    checked = 0
    for method, path, _ in _operations(api):
        if path in PUBLIC_PATHS:
            assert _call(anonymous, method, path).status_code == 200
            continue
        for header in [None, *BAD_TOKENS]:
            answer = _call(anonymous, method, path,
                           None if header is None else {"Authorization": header})
            assert answer.status_code == 401, (method, path, header, answer.text)
            assert answer.json()["error"]["code"] == "unauthenticated"
            checked += 1
    assert checked > 0
    assert anonymous.get("/api/v1/openapi.json").status_code == 401


def test_every_operation_declares_a_permission_and_refuses_roles_without_it(
        api: ApiServer) -> None:
    refused = 0
    for method, path, operation in _operations(api):
        if path in PUBLIC_PATHS:
            continue
        permission = Permission(operation["x-permission"])
        if method == "GET":
            assert permission in {Permission.READ, Permission.ADMIN}, (method, path)
        for role in Role:
            if permission in ROLE_PERMISSIONS[role]:
                continue
            answer = _call(api.http(str(role)), method, path)
            assert answer.status_code == 403, (method, path, role, answer.text)
            assert answer.json()["error"]["code"] == "access_denied"
            refused += 1
    assert refused > 0


def test_a_revoked_or_expired_token_is_refused(api: ApiServer) -> None:
    token, secret = api.workspace.tokens.create("eve", "viewer", "1h")
    http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"})
    with http:
        assert http.get("/api/v1/whoami").json() == {
            "user": "eve", "role": "viewer", "token_id": token.id}
        api.workspace.tokens.revoke(token.id)
        assert http.get("/api/v1/whoami").status_code == 401


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    clock = ManualClock()
    with Workspace.init(tmp_path, clock=clock) as workspace, serve_api(workspace) as api:
        _, secret = workspace.tokens.create("eve", "viewer", "1h")
        http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"})
        with http:
            assert http.get("/api/v1/whoami").status_code == 200
            clock.advance(timedelta(hours=1))
            refused = http.get("/api/v1/whoami")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthenticated"


def test_with_roles_enforced_a_token_needs_its_user_to_hold_the_permission(
        api: ApiServer) -> None:
    access, root = api.workspace.access, api.workspace.actor
    access.grant(root, root, "admin")
    access.grant(root, "vic", "viewer", models="fraud-*")
    access.grant(root, "dev", "developer")
    viewer = api.http("viewer")
    assert viewer.get("/api/v1/models").status_code == 200  # a viewer somewhere reads
    # The admin token's user ``ada`` holds no role now: the token alone grants nothing.
    refused = api.http("admin").get("/api/v1/models")
    assert refused.status_code == 403 and "no role" in refused.json()["error"]["message"]
    access.disable(root, "vic")
    disabled = viewer.get("/api/v1/whoami")
    assert disabled.status_code == 403
    assert "identity disabled" in disabled.json()["error"]["message"]
    assert api.http("developer").post("/api/v1/approvals/0123456789abcdef0123456789abcdef/"
                                      "approve", json={}).status_code == 403


def test_repeated_failed_authentications_are_answered_429_for_a_while(
        ws: Workspace) -> None:
    with serve_api(ws, ApiOptions(auth_failures_per_minute=5)) as api:
        wrong = api.http(None)
        answers = [wrong.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
                   for _ in range(7)]
        assert [a.status_code for a in answers] == [401] * 5 + [429, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        # A valid token from the same address (a NAT, a proxy) is never locked out.
        assert api.http("admin").get("/api/v1/whoami").status_code == 200
        assert api.http(None).get("/api/v1/health").status_code == 200


@pytest.mark.parametrize("role", [str(r) for r in Role])
def test_the_token_says_who_acts(api: ApiServer, role: str) -> None:
    answer = api.http(role).get("/api/v1/whoami").json()
    assert answer["role"] == role
