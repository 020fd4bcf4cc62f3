"""``client.runs``: the workspace's pipeline Runner (runs) over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemotePipelines:
    """the workspace's pipeline Runner (runs) over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
