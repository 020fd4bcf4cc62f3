"""What ``loopline status`` reports: where everything lives and whether it is healthy."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.app.workspace import Workspace
from loopline.core.errors import LooplineError
from loopline.core.redaction import redact_text
from loopline.store import SchemaState


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the status report."""

    name: str
    location: str
    healthy: bool
    detail: str


def workspace_status(workspace: Workspace) -> list[Check]:
    """Probe the workspace's parts without raising; one ``Check`` per part."""
    checks = [Check("workspace", str(workspace.config_dir), True, f"actor {workspace.actor}")]
    health = workspace.store.health()
    if not health.reachable or health.schema is None:
        checks.append(Check("metadata store", health.url, False, health.error or "unreachable"))
    else:
        ok = health.schema.state is SchemaState.CURRENT
        detail = f"{health.backend}, schema {health.schema.current or 'none'}"
        if not ok:
            detail += f" ({health.schema.state.value}; code expects {health.schema.head})"
        checks.append(Check("metadata store", health.url, ok, detail))
        if ok:
            checks.extend(_log_checks(workspace))
    checks.append(_artifact_check(workspace))
    return checks


def _log_checks(workspace: Workspace) -> list[Check]:
    try:
        return _read_logs(workspace)
    except LooplineError as exc:
        return [Check("event and audit logs", "events, audit_entries", False, exc.message)]


def _read_logs(workspace: Workspace) -> list[Check]:
    events = workspace.store.events
    report = workspace.store.audit.verify()
    chain = "chain intact" if report.ok else f"chain broken at {report.first_break.describe()}" \
        if report.first_break else "chain broken"
    return [
        Check("event log", "events", True,
              f"{events.count()} events, {len(events.cursors())} subscriber(s)"),
        Check("audit log", "audit_entries", report.ok, f"{report.entries} entries, {chain}"),
    ]


def _artifact_check(workspace: Workspace) -> Check:
    blobs = workspace.artifacts.blobs
    keyring = getattr(blobs, "keyring", None)
    encryption = f"encrypted (key {keyring.active_id})" if keyring else "not encrypted"
    root = redact_text(str(workspace.settings.artifact_root))
    try:
        count = sum(1 for _ in workspace.artifacts.list())
    except LooplineError as exc:
        return Check("artifact store", root, False, str(exc))
    except OSError as exc:
        return Check("artifact store", root, False, f"unreachable: {exc}")
    return Check("artifact store", root, True, f"{count} objects, {encryption}")
