"""``client.models``: the workspace's ModelRegistry over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteModels:
    """the workspace's ModelRegistry over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
