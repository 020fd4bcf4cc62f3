"""``loopline approvals``: request, approve, reject, withdraw, list and show approval requests.

A request names a model version (``models:/NAME/VERSION``, or an alias that is resolved to
the version it points at now), a gate (``alias``, ``status``, ``deploy`` ...) and its target.
Exit codes follow ``cli/errors.py``: 3 for an unknown request or version, 4 for a duplicate
open request, a second vote or a closed or expired request, 5 for bad input, 9 when
four-eyes or the actor's roles forbid it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.governance import ApprovalRequest
from loopline.core.models import ModelURI
from loopline.governance.approvals import DEFAULT_LIMIT, MAX_LIMIT
from loopline.governance.durations import parse_duration

app = typer.Typer(help="Approval requests: ask for a governed action, approve or reject it.",
                  no_args_is_help=True)

RequestId = Annotated[str, typer.Argument(help="The approval request's id.")]


def _when(value: Any) -> str:
    return str(value.isoformat(timespec="seconds"))


def _what(request: ApprovalRequest) -> str:
    action = request.gate if request.target is None else f"{request.gate} → {request.target}"
    return f"{action} on models:/{request.model}/{request.version}"


def _record(request: ApprovalRequest) -> dict[str, Any]:
    return {"id": request.id, "model": request.model, "version": request.version,
            "gate": request.gate, "target": request.target, "requester": request.requester,
            "reason": request.reason, "status": str(request.status),
            "required": request.required, "approvals": len(request.approvers()),
            "created_at": request.created_at, "expires_at": request.expires_at,
            "votes": list(request.votes), "details": dict(request.details)}


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        help="Only requests in this status: pending, approved, rejected, expired, "
             "withdrawn.")] = None,
    model: Annotated[str | None, typer.Option(help="Only requests about this model.")] = None,
    limit: Annotated[int, typer.Option(
        help=f"At most this many requests (1-{MAX_LIMIT}).")] = DEFAULT_LIMIT,
    as_json: JsonFlag = False,
) -> None:
    """List approval requests, newest first."""
    with open_session(ctx) as workspace:
        found = workspace.approvals.list(status, model, limit)
    if as_json:
        emit_json([_record(r) for r in found])
        return
    table(f"{len(found)} approval requests",
          ["id", "model", "version", "gate", "target", "requester", "status", "votes",
           "expires"], [
              (r.id, r.model, r.version, r.gate, r.target or "", r.requester, str(r.status),
               f"{len(r.approvers())}/{r.required}", _when(r.expires_at)) for r in found])


@app.command()
def request(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(
        help="models:/NAME/VERSION, or models:/NAME@ALIAS for the version it points at.")],
    gate: Annotated[str, typer.Option(
        help="The governed action: register, alias, delete_alias, status, trust, deploy, "
             "rollout_step, playbook_action.")],
    reason: Annotated[str, typer.Option(help="Why the action should be approved.")],
    target: Annotated[str | None, typer.Option(
        help="What the action moves to: an alias, a status or a stage.")] = None,
    expires_in: Annotated[str | None, typer.Option(
        help="How long the request stays open, e.g. 3d, 12h (default: the policy's, "
             "else 7d).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask for a governed action on a model version to be approved."""
    lifetime = None if expires_in is None else parse_duration(expires_in, "expires_in")
    parsed = ModelURI.parse(uri)
    with open_session(ctx) as workspace:
        version = (parsed.version if parsed.version is not None
                   else workspace.models.resolve(parsed).version)
        made = workspace.approvals.request(parsed.name, version, gate, target, reason,
                                           lifetime)
    if as_json:
        emit_json(_record(made))
        return
    success(f"approval request {made.id}: {_what(made)} needs {made.required} approval(s), "
            f"open until {_when(made.expires_at)}")
    if made.details.get("expiry_clamped"):
        console.print(f"  asked to stay open {made.details['expires_in_asked']}; the policy's "
                      f"expires_after caps it at {made.details['policy_expires_after']}")


@app.command()
def approve(
    ctx: typer.Context, request_id: RequestId,
    comment: Annotated[str, typer.Option(help="A note kept with the vote.")] = "",
) -> None:
    """Approve a request made by someone else."""
    with open_session(ctx) as workspace:
        done = workspace.approvals.approve(request_id, comment)
    success(f"approved {done.id} ({_what(done)}): {len(done.approvers())}/{done.required} "
            f"approvals, now {done.status}")


@app.command()
def reject(
    ctx: typer.Context, request_id: RequestId,
    comment: Annotated[str, typer.Option(help="Why it is rejected (required).")],
) -> None:
    """Reject a request made by someone else, closing it."""
    with open_session(ctx) as workspace:
        done = workspace.approvals.reject(request_id, comment)
    success(f"rejected {done.id} ({_what(done)})")


@app.command()
def withdraw(ctx: typer.Context, request_id: RequestId) -> None:
    """Withdraw your own open request."""
    with open_session(ctx) as workspace:
        done = workspace.approvals.withdraw(request_id)
    success(f"withdrew {done.id} ({_what(done)})")


@app.command()
def show(ctx: typer.Context, request_id: RequestId, as_json: JsonFlag = False) -> None:
    """Show one request with its votes."""
    with open_session(ctx) as workspace:
        found = workspace.approvals.get(request_id)
    if as_json:
        emit_json(_record(found))
        return
    console.print(f"approval request {found.id}  {found.status}")
    for label, text in (
            ("action", _what(found)), ("requester", found.requester),
            ("reason", found.reason),
            ("approvals", f"{len(found.approvers())} of {found.required} required"),
            ("created", _when(found.created_at)), ("expires", _when(found.expires_at))):
        console.print(f"  {label:<10} {text}")
    if found.votes:
        table("votes", ["approver", "verdict", "role", "when", "comment"], [
            (v.approver, str(v.verdict), str(v.role), _when(v.decided_at), v.comment)
            for v in found.votes])
    else:
        console.print("  no votes yet")
