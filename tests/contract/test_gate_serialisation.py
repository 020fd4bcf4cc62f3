"""A governed change is decided under the append lock: a role revoked while the gate decides
commits after the change it could no longer stop, never between the decision and the write."""

from __future__ import annotations

import threading

import pandas as pd
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.core.gates import GateDecision, GateRequest
from loopline.core.governance import Role
from loopline.registry.service import ModelRegistry
from loopline.store import AuditFilter

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})


class RevokingWhileDeciding:
    """Wraps the workspace's gate: while deciding, an admin revokes the developer's role."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.revoker: threading.Thread | None = None
        self.blocked = False

    def check(self, request: GateRequest) -> GateDecision:
        decision = self.ws.gate.check(request)
        if request.action == "alias" and self.revoker is None:
            self.revoker = threading.Thread(target=self.ws.access.revoke,
                                            args=(self.ws.actor, "dev", Role.DEVELOPER))
            self.revoker.start()
            self.revoker.join(timeout=0.5)  # before the fix the revoke committed here
            self.blocked = self.revoker.is_alive()
        return decision


def test_a_role_revoked_while_the_gate_decides_waits_for_the_change(ws: Workspace) -> None:
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    ws.access.grant(ws.actor, "dev", Role.DEVELOPER)
    model = LogisticRegression().fit(FRAME[["x"]], FRAME["y"])
    version = ws.models.register(model, "fraud", input_example=FRAME[["x"]])
    gate = RevokingWhileDeciding(ws)
    registry = ModelRegistry(ws.store, ws.artifacts.blobs, "dev", gate=gate)

    registry.set_alias("fraud", "champion", version.version)
    assert gate.revoker is not None
    gate.revoker.join(timeout=30)

    assert gate.blocked, "the revoke committed between the gate's decision and the write"
    moved = ws.store.audit.entries(AuditFilter(action="model.alias_moved"))[0]
    revoked = ws.store.audit.entries(AuditFilter(action="governance.role_revoked"))[0]
    assert moved.actor == "dev" and moved.seq < revoked.seq
