"""``loopline playbooks actions|show``: what the playbooks did for each alert, and why.

Read-only. A webhook URL in a step's parameters is shown by its origin only (its path is
often the webhook's secret), in tables and in ``--json`` alike. Exit codes follow
``cli/errors.py``: 3 for an unknown action, 5 for a bad ``--state`` or ``--limit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from loopline.automation.log import MAX_LIST
from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import ActionState, PlaybookAction
from loopline.outbound import display_url

app = typer.Typer(help="Playbook actions: what ran for each alert (retrain, rollback, "
                       "quarantine, notify).", no_args_is_help=True)

# What a result's keys say, in the order a summary shows them.
SUMMARY_KEYS = ("reason", "run_id", "run_state", "canary", "revision", "quarantined",
                "status_code", "cooldown_of", "last_error")


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    shown = dict(params)
    if isinstance(shown.get("url"), str):
        try:
            shown["url"] = display_url(shown["url"])
        except (InvalidArgumentError, ValueError):
            shown["url"] = "(invalid URL)"
    return shown


def _result(action: PlaybookAction) -> dict[str, Any]:
    return {key: value for key, value in action.result.items() if key != "alert"}


def _record(action: PlaybookAction) -> dict[str, Any]:
    alert = action.result.get("alert") or {}
    return {"id": action.id, "alert_id": action.alert_id, "deployment": alert.get("deployment"),
            "playbook": action.playbook, "step": action.step, "kind": str(action.kind),
            "state": str(action.state), "params": _params(action.params),
            "requires_approval": action.requires_approval, "approval_id": action.approval_id,
            "attempts": action.attempts, "claimed_by": action.claimed_by,
            "lease_until": action.lease_until, "created_at": action.created_at,
            "updated_at": action.updated_at, "result": _result(action), "alert": alert}


def _summary(action: PlaybookAction) -> str:
    result = _result(action)
    parts = [f"{key}={result[key]}" for key in SUMMARY_KEYS if result.get(key) is not None]
    if action.state is ActionState.AWAITING_APPROVAL and action.approval_id:
        parts.insert(0, f"approval={action.approval_id}")
    return "; ".join(parts)


@app.command()
def actions(
    ctx: typer.Context,
    alert: Annotated[str | None, typer.Option("--alert", help="Only this alert's actions.")
                     ] = None,
    state: Annotated[str | None, typer.Option(
        help="Only actions in this state: pending, awaiting_approval, running, done, failed, "
             "skipped.")] = None,
    limit: Annotated[int, typer.Option(help=f"At most this many (1-{MAX_LIST}).")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List playbook actions, newest first (an alert's in step order)."""
    with open_session(ctx) as workspace:
        found = workspace.playbook_actions.list(alert, state, limit)
    if as_json:
        emit_json([_record(action) for action in found])
        return
    table(f"{len(found)} playbook actions",
          ["id", "alert", "deployment", "playbook", "step", "kind", "state", "updated",
           "what happened"],
          [(a.id, a.alert_id, (a.result.get("alert") or {}).get("deployment", ""),
            a.playbook, a.step, str(a.kind), str(a.state),
            a.updated_at.isoformat(timespec="seconds"), _summary(a)) for a in found])


@app.command()
def show(
    ctx: typer.Context,
    action_id: Annotated[str, typer.Argument(help="The action's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one action: its alert, step, parameters, approval and result."""
    with open_session(ctx) as workspace:
        found = workspace.playbook_actions.get(action_id)
    record = _record(found)
    if as_json:
        emit_json(record)
        return
    console.print(f"playbook action {found.id}  {found.state}")
    alert = record["alert"]
    for label, value in (
            ("alert", f"{found.alert_id} (rule {alert.get('rule')}, severity "
                      f"{alert.get('severity')}, value {alert.get('value')} vs threshold "
                      f"{alert.get('threshold')})"),
            ("deployment", alert.get("deployment")),
            ("window", f"{alert.get('window_start')} .. {alert.get('window_end')}"),
            ("playbook", f"{found.playbook}, step {found.step}: {found.kind}"),
            ("params", record["params"] or "-"),
            ("approval", found.approval_id or ("required" if found.requires_approval
                                               else "-")),
            ("attempts", found.attempts),
            ("held by", f"{found.claimed_by} until {found.lease_until}" if found.claimed_by
             else "-"),
            ("created", found.created_at.isoformat(timespec="seconds")),
            ("updated", found.updated_at.isoformat(timespec="seconds"))):
        console.print(f"  {label:<11}{value}")
    for key, value in record["result"].items():
        console.print(f"  {key:<11}{value}")


def register(root: typer.Typer) -> None:
    """Add ``loopline playbooks`` to the root command."""
    root.add_typer(app, name="playbooks")
