"""``client.governance``: the workspace's approvals, policies and roles over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteApprovals:
    """``Workspace.approvals`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport


class RemotePolicies:
    """``Workspace.policies`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport


class RemoteAccess:
    """``Workspace.access`` (users, service accounts and their roles) over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
