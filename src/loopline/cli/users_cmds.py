"""``loopline users``: who you are, who holds which role, and granting or revoking roles.

The actor is ``--user`` or ``LOOPLINE_USER``, else the operating-system user; through
``--server`` it is the token's user. A workspace
with no role binding is open (everyone acts as admin) until the first grant, which must be
``admin`` on every model. Exit codes follow ``cli/errors.py``: 9 when the actor may not manage
roles, 5 for a bad name, role or pattern, 3 for an unknown binding or identity, 4 when the
change would leave the workspace without an admin.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.session import actor_of
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.governance import Identity, IdentityKind, RoleBinding
from loopline.governance.access import ALL_MODELS

app = typer.Typer(help="Identities and roles: whoami, list, grant, revoke, add, disable.",
                  no_args_is_help=True)

Subject = Annotated[str, typer.Argument(help="The user or service account.")]
RoleArg = Annotated[str, typer.Argument(help="viewer, developer, approver or admin.")]
Models = Annotated[str, typer.Option(
    "--models", help="Model-name glob the role applies to, e.g. 'fraud-*' (default: all).")]
Service = Annotated[bool, typer.Option(
    "--service", help="A service account (a scheduler, a CI job) rather than a person.")]


def _kind(service: bool) -> IdentityKind:
    return IdentityKind.SERVICE if service else IdentityKind.USER


def _scope(binding: RoleBinding) -> str:
    return str(binding.role) if binding.models == ALL_MODELS else \
        f"{binding.role} on {binding.models}"


@app.command()
def whoami(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show who acts, whether roles are enforced, and the roles held."""
    with open_session(ctx) as workspace:
        actor = actor_of(workspace)
        enforced = workspace.access.enforced()
        held = workspace.access.bindings(actor)
        disabled = any(i.disabled for i in workspace.access.identities() if i.name == actor)
    roles = [_scope(b) for b in held] if enforced else ["admin (open workspace)"]
    if as_json:
        emit_json({"actor": actor, "enforced": enforced, "disabled": disabled,
                   "bindings": held})
        return
    console.print(f"actor     {actor}" + ("  (disabled)" if disabled else ""))
    console.print("roles are " + ("enforced" if enforced else
                                  "not enforced: the workspace is open (no role granted yet)"))
    console.print(f"roles     {', '.join(roles) or 'none'}")


def _rows(identities: list[Identity], bindings: list[RoleBinding]) -> list[dict[str, Any]]:
    by_subject: dict[str, list[RoleBinding]] = {}
    for binding in bindings:
        by_subject.setdefault(binding.subject, []).append(binding)
    return [{"name": i.name, "kind": i.kind, "disabled": i.disabled,
             "description": i.description, "created_at": i.created_at,
             "created_by": i.created_by,
             "bindings": [{"role": b.role, "models": b.models, "granted_by": b.created_by,
                           "granted_at": b.created_at} for b in by_subject.get(i.name, [])]}
            for i in identities]


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List identities with the roles bound to them."""
    with open_session(ctx) as workspace:
        rows = _rows(workspace.access.identities(), workspace.access.bindings())
        enforced = workspace.access.enforced()
    if as_json:
        emit_json(rows)
        return
    title = f"{len(rows)} identities" + ("" if enforced else " (open workspace: no role "
                                                             "enforced)")
    table(title, ["name", "kind", "roles", "disabled", "created", "by", "description"], [
        (r["name"], str(r["kind"]),
         ", ".join(str(b["role"]) if b["models"] == ALL_MODELS else f"{b['role']} on "
                   f"{b['models']}" for b in r["bindings"]),
         "yes" if r["disabled"] else "", r["created_at"].isoformat(timespec="seconds"),
         r["created_by"], r["description"] or "") for r in rows])


@app.command()
def grant(ctx: typer.Context, subject: Subject, role: RoleArg, models: Models = ALL_MODELS,
          service: Service = False) -> None:
    """Grant a role (the first grant must be admin, and turns enforcement on)."""
    with open_session(ctx) as workspace:
        binding = workspace.access.grant(actor_of(workspace), subject, role, models, _kind(service))
    success(f"{binding.subject} holds {_scope(binding)}")


@app.command()
def revoke(ctx: typer.Context, subject: Subject, role: RoleArg,
           models: Models = ALL_MODELS) -> None:
    """Revoke a role binding (revoking the very last one opens the workspace)."""
    with open_session(ctx) as workspace:
        workspace.access.revoke(actor_of(workspace), subject, role, models)
    where = "" if models == ALL_MODELS else f" on {models}"
    success(f"{subject} no longer holds {role}{where}")


@app.command()
def add(
    ctx: typer.Context, name: Subject, service: Service = False,
    description: Annotated[str | None, typer.Option(help="What the identity is for.")] = None,
) -> None:
    """Record a user or service account (it holds no role until granted one)."""
    with open_session(ctx) as workspace:
        identity = workspace.access.add_identity(actor_of(workspace), name, _kind(service),
                                                 description)
    success(f"{identity.kind} {identity.name} added")


@app.command()
def disable(ctx: typer.Context, name: Subject) -> None:
    """Disable an identity: it keeps its bindings but may do nothing."""
    with open_session(ctx) as workspace:
        identity = workspace.access.disable(actor_of(workspace), name)
    success(f"{identity.name} is disabled")


@app.command()
def enable(ctx: typer.Context, name: Subject) -> None:
    """Enable a disabled identity again: its roles count once more."""
    with open_session(ctx) as workspace:
        identity = workspace.access.enable(actor_of(workspace), name)
    success(f"{identity.name} is enabled")
