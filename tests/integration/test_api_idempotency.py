"""``Idempotency-Key``: a retried creating call gets the first answer and changes nothing
more; the same key with another body is refused; keys are per caller."""

from __future__ import annotations

import sqlalchemy as sa
from api_support import ApiServer

from loopline.store import AuditFilter

KEY = {"Idempotency-Key": "create-ci-token-0001"}


def _token_rows(api: ApiServer) -> int:
    with api.workspace.store.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM api_tokens")).scalar_one())


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(api: ApiServer) -> None:
    http = api.http("admin")
    before = _token_rows(api)
    first = http.post("/api/v1/tokens", json={"user": "ci", "role": "viewer"}, headers=KEY)
    again = http.post("/api/v1/tokens", json={"user": "ci", "role": "viewer"}, headers=KEY)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the same token, secret included: shown to its caller
    assert again.headers["Idempotency-Replayed"] == "true"
    assert "Idempotency-Replayed" not in first.headers
    assert _token_rows(api) == before + 1
    created = api.workspace.audit.entries(AuditFilter(action="governance.token_created"))
    assert len([e for e in created if e.after and e.after["user"] == "ci"]) == 1


def test_the_same_key_with_another_body_is_refused_422(api: ApiServer) -> None:
    http = api.http("admin")
    assert http.post("/api/v1/tokens", json={"user": "ci", "role": "viewer"},
                     headers=KEY).status_code == 201
    other = http.post("/api/v1/tokens", json={"user": "ci", "role": "admin"}, headers=KEY)
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"


def test_keys_are_per_caller_and_refusals_are_replayed_too(api: ApiServer) -> None:
    body = {"user": "someone", "role": "viewer"}
    admin = api.http("admin").post("/api/v1/tokens", json=body, headers=KEY)
    other = api.http("developer").post("/api/v1/tokens", json=body, headers=KEY)
    assert admin.status_code == 201 and other.status_code == 403  # not admin's answer
    bad = {"user": "bad name", "role": "viewer"}
    key = {"Idempotency-Key": "bad-0001"}
    first = api.http("admin").post("/api/v1/tokens", json=bad, headers=key)
    assert first.status_code == 422
    assert api.http("admin").post("/api/v1/tokens", json=bad, headers=key).json() == \
        first.json()


def _keys_stored(api: ApiServer) -> int:
    with api.workspace.store.engine.connect() as connection:
        return int(connection.execute(sa.text(
            "SELECT count(*) FROM idempotency_keys")).scalar_one())


def test_an_answer_not_worth_replaying_is_forgotten(api: ApiServer) -> None:
    body = {"user": "ci", "role": "viewer"}
    refused = api.http(None).post("/api/v1/tokens", json=body, headers={
        **KEY, "Authorization": "Bearer llt_" + "A" * 43})
    assert refused.status_code == 401
    assert _keys_stored(api) == 0  # a 401 (or 403, 429, 5xx) leaves no claim behind
    assert api.http("admin").post("/api/v1/tokens", json=body, headers=KEY).status_code == 201
    assert _keys_stored(api) == 1


def test_a_malformed_key_is_refused_naming_the_header(api: ApiServer) -> None:
    answer = api.http("admin").post("/api/v1/tokens", json={"user": "ci", "role": "viewer"},
                                    headers={"Idempotency-Key": "has space"})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "Idempotency-Key"
