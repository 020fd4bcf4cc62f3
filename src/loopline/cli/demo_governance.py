"""The governance part of ``loopline demo``: a policy gates production, four eyes approve.

It writes ``policies/production.yaml`` into the demo folder, applies it, shows the gate
refusing ``refunds`` to ``production`` for want of an approval (naming the rule), has a
second person approve, moves the alias, then prints the governance report's figures and
exports the run lineage as OpenLineage events to a file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from loopline.app import Workspace
from loopline.cli.output import console
from loopline.core.errors import PolicyDeniedError
from loopline.core.gates import GateAction
from loopline.governance.openlineage import openlineage_all_events
from loopline.governance.openlineage_export import export_to_file
from loopline.governance.policy_files import read_policy_dir
from loopline.store import AuditFilter

POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: production-readiness
    description: what a refunds model needs before it serves production
    applies_to: {models: ["refunds"], gates: [alias, status], targets: [production]}
    rules:
      - {id: card, kind: required_metadata, fields: [owner, purpose]}
      - {id: trained-on-checked-data, kind: lineage_complete, validated_datasets: true,
         code_version: false}
      - {id: accuracy, kind: metric, check: "accuracy >= 0.6"}
      - {id: four-eyes, kind: approvals, count: 1, expires_after: 7d}
    """)
REVIEWER = "demo-reviewer"


def govern_production(workspace: Workspace, root: Path) -> None:
    """Apply the demo policy, be refused, get an approval, promote; report and export."""
    folder = root / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "production.yaml").write_text(POLICY, encoding="utf-8")
    applied = workspace.policies.apply(workspace.actor, read_policy_dir(folder))
    console.print(f"   applied {folder}/production.yaml as policy set "
                  f"{applied.policy_set.digest[:12]}…")
    try:
        workspace.models.set_alias("refunds", "production", 1)
    except PolicyDeniedError as refused:
        console.print(f"   refused: {refused}", style="red")
    request = workspace.approvals.request("refunds", 1, GateAction.ALIAS, "production",
                                          "demo: promote the first refunds model")
    with Workspace.open(root, overrides={"user": REVIEWER}) as reviewer:
        reviewer.approvals.approve(request.id, "metrics and lineage reviewed")
    console.print(f"   {workspace.actor} asked, {REVIEWER} approved (the requester may not)")
    workspace.models.set_alias("refunds", "production", 1)
    moved = workspace.store.audit.entries(AuditFilter(action="model.alias_moved", limit=1))[0]
    gate = (moved.after or {}).get("gate", {})
    console.print(f"   allowed and audited with each rule's observed value: {gate.get('reason')}")
    report = workspace.governance_report.build()
    console.print(f"   governance report: {report.examined} versions, completeness "
                  f"{report.completeness:.0%}, violating a policy {report.violation_rate:.0%}")
    exported = export_to_file(openlineage_all_events(workspace.store),
                              root / "openlineage.jsonl")
    console.print(f"   {exported.sent} OpenLineage events written to {root}/openlineage.jsonl")
