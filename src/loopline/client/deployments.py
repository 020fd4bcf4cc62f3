"""``client.deployments``: the workspace's DeploymentService over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteDeployments:
    """the workspace's DeploymentService over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
