"""API tokens on each backend: shown once, stored only as a hash, audited, expiring, revocable,
and capped by their role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.governance import Permission, Role
from loopline.core.tokens import hash_token, looks_like_token
from loopline.governance.tokens import TokenAuthorizer
from loopline.store import AuditFilter


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed(db_url: str, tmp_path: Path, clock: ManualClock) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "timed", overrides={"db_url": db_url}, clock=clock)
    try:
        yield workspace
    finally:
        workspace.close()


def _stored_rows(ws: Workspace) -> list[dict[str, object]]:
    with ws.store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.text(
            "SELECT * FROM api_tokens"))]


def test_a_created_token_authenticates_and_only_its_hash_is_stored(ws: Workspace) -> None:
    token, secret = ws.tokens.create("ci-bot", "developer", description="nightly CI")
    assert looks_like_token(secret)
    assert ws.tokens.authenticate(secret).id == token.id
    rows = _stored_rows(ws)
    assert [r["secret_hash"] for r in rows] == [hash_token(secret)]
    assert all(secret not in str(value) for row in rows for value in row.values())
    entries = ws.audit.entries(AuditFilter(action="governance.token_created"))
    assert [e.actor for e in entries] == [ws.actor]
    assert secret not in repr(entries) and hash_token(secret) not in repr(entries)
    events = ws.store.events.read_after(0, 100, [EventType.TOKENS_CHANGED])
    assert [e.payload["action"] for e in events] == ["created"]


@pytest.mark.parametrize("presented", [None, "", "llt_short", "x" * 47,
                                       "llt_" + "A" * 43, "Bearer llt_" + "A" * 43])
def test_a_missing_malformed_or_unknown_secret_is_refused_with_one_message(
        ws: Workspace, presented: str | None) -> None:
    ws.tokens.create("ci-bot", "viewer")
    with pytest.raises(AuthenticationError) as refused:
        ws.tokens.authenticate(presented)
    assert "missing, unknown, expired or revoked" in refused.value.message


def test_a_token_stops_working_when_it_expires_or_is_revoked(timed: Workspace,
                                                             clock: ManualClock) -> None:
    short, short_secret = timed.tokens.create("ci-bot", "viewer", "1h")
    kept, kept_secret = timed.tokens.create("ci-bot", "viewer")
    clock.advance(timedelta(minutes=59))
    assert timed.tokens.authenticate(short_secret).id == short.id
    clock.advance(timedelta(minutes=1))
    with pytest.raises(AuthenticationError):
        timed.tokens.authenticate(short_secret)
    timed.tokens.revoke(kept.id)
    with pytest.raises(AuthenticationError):
        timed.tokens.authenticate(kept_secret)
    with pytest.raises(ConflictError, match="already revoked"):
        timed.tokens.revoke(kept.id)
    assert [t.id for t in timed.tokens.list()] == [short.id]  # revoked ones are hidden
    assert {t.id for t in timed.tokens.list(include_revoked=True)} == {short.id, kept.id}


def test_use_is_recorded_at_most_once_a_minute(timed: Workspace, clock: ManualClock) -> None:
    token, secret = timed.tokens.create("ci-bot", "viewer")
    first = timed.tokens.authenticate(secret)
    assert first.last_used_at is None  # the answer is read before the use is written
    used = timed.tokens.get(token.id).last_used_at
    assert used == clock.now()
    clock.advance(timedelta(seconds=30))
    timed.tokens.authenticate(secret)
    assert timed.tokens.get(token.id).last_used_at == used
    clock.advance(timedelta(seconds=31))
    timed.tokens.authenticate(secret)
    assert timed.tokens.get(token.id).last_used_at == clock.now()


@pytest.mark.parametrize(("field", "kwargs"), [
    ("user", {"user": "has space", "role": "viewer"}),
    ("user", {"user": "", "role": "viewer"}),
    ("role", {"user": "ci", "role": "owner"}),
    ("expires", {"user": "ci", "role": "viewer", "expires": "soon"}),
    ("expires", {"user": "ci", "role": "viewer", "expires": "0s"}),
    ("description", {"user": "ci", "role": "viewer", "description": " "}),
])
def test_bad_token_fields_are_refused_by_name_and_nothing_is_written(
        ws: Workspace, field: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        ws.tokens.create(**kwargs)
    assert refused.value.field == field
    assert _stored_rows(ws) == []


@pytest.mark.parametrize("token_id", ["nope", "0" * 31, "../" + "0" * 29])
def test_a_malformed_token_id_is_refused_and_an_unknown_one_not_found(
        ws: Workspace, token_id: str) -> None:
    with pytest.raises(InvalidArgumentError):
        ws.tokens.revoke(token_id)
    with pytest.raises(NotFoundError):
        ws.tokens.revoke("0" * 32)


def test_only_an_admin_manages_tokens_once_roles_are_enforced(ws: Workspace) -> None:
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    ws.access.grant(ws.actor, "dev", Role.DEVELOPER)
    developer = ws.as_actor("dev")
    with pytest.raises(AccessDeniedError):
        developer.tokens.create("dev", "admin")
    with pytest.raises(AccessDeniedError):
        developer.tokens.list()
    token, _ = ws.tokens.create("dev", "developer")
    with pytest.raises(AccessDeniedError):
        developer.tokens.revoke(token.id)


def test_the_token_role_caps_what_its_user_may_do(ws: Workspace) -> None:
    viewer_token, _ = ws.tokens.create("boss", "viewer")
    capped = TokenAuthorizer(ws.access, viewer_token)
    assert capped.authorize("boss", Permission.READ) is Role.ADMIN  # open workspace: admin
    for permission in (Permission.WRITE, Permission.APPROVE, Permission.ADMIN):
        with pytest.raises(AccessDeniedError, match="viewer token"):
            capped.authorize("boss", permission)
    view = ws.as_actor("boss", capped)
    with pytest.raises(AccessDeniedError):
        view.tokens.create("boss", "admin")
    # ... and the user's own bindings still bind: an admin token of a viewer is a viewer.
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    ws.access.grant(ws.actor, "boss", Role.VIEWER)
    admin_token, _ = ws.tokens.create("boss", "admin")
    with pytest.raises(AccessDeniedError):
        TokenAuthorizer(ws.access, admin_token).authorize("boss", Permission.WRITE)


def test_a_view_acts_as_its_actor_and_shares_the_store(ws: Workspace) -> None:
    view = ws.as_actor("someone-else")
    assert view.actor == "someone-else" and view.store is ws.store
    view.tokens  # noqa: B018 - a view has every service
    token, _ = view.tokens.create("x", "viewer")
    assert ws.audit.entries(AuditFilter(action="governance.token_created"))[-1].actor == \
        "someone-else"
    view.close()  # closes nothing shared
    assert ws.tokens.get(token.id).user == "x"
    with pytest.raises(InvalidArgumentError):
        ws.as_actor("")
