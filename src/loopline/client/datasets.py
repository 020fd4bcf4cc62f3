"""``client.datasets``: the workspace's DatasetService over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteDatasets:
    """the workspace's DatasetService over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
