"""A model version's quarantines, read from the audit chain, for the release rule.

Every status change writes a ``model.status_changed`` audit entry (subject
``models:/NAME/VERSION``, ``after.status`` the new status) and every approval request a
``governance.approval_requested`` entry (subject ``approval:<id>``); the chain's ``seq``
orders them exactly, whatever the clocks said. ``unreleased_quarantine`` tells whether the
version's latest quarantine was followed by a release to a servable status (through an
approval) or not; ``requested_at_seq`` tells where in the chain a request was made, so a
release can demand an approval asked for *after* the quarantine it ends.
"""

from __future__ import annotations

import json
from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loopline.core.models import ModelStatus
from loopline.store.approval_records import subject_of
from loopline.store.models import AUDIT_ENTRIES

__all__ = ["requested_at_seq", "unreleased_quarantine"]

STATUS_CHANGED = "model.status_changed"
APPROVAL_REQUESTED = "governance.approval_requested"


def _status_of(after: str | None) -> str | None:
    try:
        found = json.loads(after) if after else None
    except ValueError:
        return None
    status = found.get("status") if isinstance(found, dict) else None
    return status if isinstance(status, str) else None


def unreleased_quarantine(connection: Connection, uri: str,
                          servable: Collection[ModelStatus]) -> int | None:
    """Return the audit ``seq`` of ``uri``'s latest quarantine if no release followed it.

    A release is a later move to one of ``servable``; moves to other statuses (``archived``)
    keep the quarantine standing. None when the version was never quarantined or was
    released since.
    """
    wanted = {str(status) for status in servable}
    rows = connection.execute(sa.select(AUDIT_ENTRIES.c.seq, AUDIT_ENTRIES.c.after).where(
        AUDIT_ENTRIES.c.subject == uri, AUDIT_ENTRIES.c.action == STATUS_CHANGED)
        .order_by(AUDIT_ENTRIES.c.seq.desc()))
    for seq, after in rows:
        status = _status_of(after)
        if status == ModelStatus.QUARANTINED:
            return int(seq)
        if status in wanted:
            return None
    return None


def requested_at_seq(connection: Connection, request_id: str) -> int | None:
    """Return the audit ``seq`` of approval request ``request_id``'s creation, if recorded."""
    found = connection.execute(sa.select(sa.func.min(AUDIT_ENTRIES.c.seq)).where(
        AUDIT_ENTRIES.c.subject == subject_of(request_id),
        AUDIT_ENTRIES.c.action == APPROVAL_REQUESTED)).scalar()
    return None if found is None else int(found)
