"""Applying monitoring configs on every backend: the newest is in force, applying the same
document again writes nothing, a rule naming a deployment that does not exist yet is a
warning, a bad document writes nothing, and applying needs admin once roles are in force."""

from __future__ import annotations

from typing import Any

import pytest

from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError, InvalidArgumentError
from loopline.core.governance import Role
from loopline.monitoring.config_store import MonitorConfigs, config_in_force
from loopline.store import AuditFilter


def _document(threshold: float = 0.3, deployment: str = "fraud") -> dict[str, Any]:
    return {"drift": {"method": "psi"}, "rules": [
        {"name": "drift", "signal": "dataset_drift", "deployment": deployment,
         "threshold": threshold, "window": "15m"}]}


def _applied(ws: Workspace) -> list[Any]:
    return ws.store.audit.entries(AuditFilter(action="monitoring.config_applied"))


def test_the_newest_config_is_in_force_and_the_same_one_twice_writes_nothing(
        ws: Workspace) -> None:
    configs = MonitorConfigs(ws.store, ws.access)
    assert configs.current() is None and config_in_force(ws.store) is None
    first = configs.apply("ann", _document(), source="monitor.yaml")
    assert first.changed and first.applied_by == "ann" and first.source == "monitor.yaml"
    assert first.warnings == ("deployment 'fraud' does not exist (yet); its rules have "
                              "nothing to measure until it does",)
    again = configs.apply("bob", _document())
    assert not again.changed and again.id == first.id and len(_applied(ws)) == 1

    second = configs.apply("bob", _document(threshold=0.4))
    assert second.changed and second.digest != first.digest
    current = MonitorConfigs(ws.store).current()  # a fresh service reads it from the store
    assert current is not None and current.id == second.id
    assert current.config.rules[0].threshold == 0.4 and dict(current.document) == _document(0.4)
    in_force = config_in_force(ws.store)
    assert in_force is not None and in_force.digest == second.digest
    [newest, oldest] = _applied(ws)
    assert oldest.before is None and newest.before == {"id": first.id, "digest": first.digest}
    assert newest.after is not None and newest.after["rules"] == 1
    assert newest.after["deployments"] == ["fraud"]


def test_a_bad_document_is_refused_and_nothing_is_written(ws: Workspace) -> None:
    configs = MonitorConfigs(ws.store, ws.access)
    with pytest.raises(InvalidArgumentError, match=r"rules\[0\]\.threshold"):
        configs.apply("ann", _document(threshold=-1))
    assert configs.current() is None and _applied(ws) == []


def test_applying_needs_admin_once_roles_are_in_force(ws: Workspace) -> None:
    ws.access.grant(ws.actor, "ann", Role.ADMIN)
    ws.access.grant("ann", "dev", Role.DEVELOPER)
    configs = MonitorConfigs(ws.store, ws.access)
    with pytest.raises(AccessDeniedError, match="'dev' may not admin"):
        configs.apply("dev", _document())
    assert configs.apply("ann", _document()).changed
