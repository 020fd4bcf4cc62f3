"""``loopline tokens``: API tokens for the control plane — create (shown once), list, revoke.

Managing tokens needs ``admin``. ``create`` prints the secret once; only its hash is stored,
so a lost token is revoked and replaced, never recovered. Exit codes follow
``cli/errors.py``: 9 when the actor may not manage tokens, 5 for a bad user, role or
duration, 3 for an unknown token, 4 for one revoked already.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.tokens import ApiToken
from loopline.governance.tokens import describe

app = typer.Typer(help="API tokens of the control plane: create, list, revoke.",
                  no_args_is_help=True)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


@app.command()
def create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose token it is (the audit actor).")],
    role: Annotated[str, typer.Option(
        "--role", help="viewer, developer, approver or admin: the most the token may do.")],
    expires: Annotated[str | None, typer.Option(
        "--expires", help="Lifetime from now, e.g. 90d, 12h (default: no expiry).")] = None,
    description: Annotated[str | None, typer.Option(
        "--description", help="What the token is for (a CI job, a person's laptop).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token and print its secret once (only its hash is stored)."""
    with open_session(ctx) as workspace:
        token, secret = workspace.tokens.create(user, role, expires, description)
    if as_json:
        emit_json({"token": describe(token), "secret": secret})
        return
    success(f"token {token.id} for {token.user} ({token.role})"
            + (f", expires {_when(token.expires_at)}" if token.expires_at else ""))
    console.print("the secret, shown this once (store it now; it cannot be shown again):")
    console.print(secret, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")
                       ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List tokens, newest first (never their secrets)."""
    with open_session(ctx) as workspace:
        found: list[ApiToken] = workspace.tokens.list(user, revoked)
    if as_json:
        emit_json([describe(t) for t in found])
        return
    table(f"{len(found)} tokens", ["id", "user", "role", "created", "by", "expires",
                                   "last used", "revoked", "description"], [
        (t.id, t.user, str(t.role), _when(t.created_at), t.created_by, _when(t.expires_at),
         _when(t.last_used_at), _when(t.revoked_at), t.description or "") for t in found])


@app.command()
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (`loopline tokens list`).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token: requests made with it are refused from now on."""
    with open_session(ctx) as workspace:
        token = workspace.tokens.revoke(token_id)
    if as_json:
        emit_json(describe(token))
        return
    success(f"revoked token {token.id} of {token.user}")
