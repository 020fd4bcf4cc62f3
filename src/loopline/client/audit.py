"""``client.audit``: the workspace's ``AuditLog`` over HTTP (list, head, verify)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopline.client.transport import Transport, decode
from loopline.core.audit import AuditEntry, ChainReport
from loopline.core.errors import InvalidArgumentError
from loopline.store import AuditFilter

__all__ = ["RemoteAudit"]

MAX_LIMIT = 10_000


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class RemoteAudit:
    """Reads and verification of the audit chain, as ``Workspace.audit`` does."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def entries(self, where: AuditFilter | None = None) -> list[AuditEntry]:
        """List entries matching ``where`` (newest first by default). See ``AuditLog.entries``.

        The server pages them; an entry appended between two pages may shift a newest-first
        listing, so an entry repeated across pages is kept once.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..10000.
        """
        where = where or AuditFilter()
        if not 1 <= where.limit <= MAX_LIMIT:
            raise InvalidArgumentError("limit", f"must be between 1 and {MAX_LIMIT}")
        params: dict[str, Any] = {
            "actor": where.actor, "action": where.action, "subject": where.subject,
            "since": _time(where.since), "until": _time(where.until),
            "newest_first": where.newest_first}
        seen: set[int] = set()
        found = []
        for item in self._http.first_items("/audit", params, where.limit):
            entry = decode(AuditEntry, item)
            if entry.seq not in seen:
                seen.add(entry.seq)
                found.append(entry)
        return found

    def head(self) -> tuple[int, str]:
        """Return the recorded last sequence number and hash of the chain."""
        answer = self._http.get("/audit/head")
        return int(answer["seq"]), str(answer["hash"])

    def verify(self) -> ChainReport:
        """Check the whole chain and the head on the server; report the first break."""
        return decode(ChainReport, self._http.get("/audit/verify"))
