"""``client.audit``: the store's AuditLog over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteAudit:
    """the store's AuditLog over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
