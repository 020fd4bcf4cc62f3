"""``client.lineage``: the workspace's LineageService over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteLineage:
    """the workspace's LineageService over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
