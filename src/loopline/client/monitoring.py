"""``client.monitoring``: the workspace's monitoring services over HTTP."""

from __future__ import annotations

from loopline.client.transport import Transport


class RemoteMonitorConfigs:
    """``Workspace.monitor_configs`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport


class RemoteEvaluator:
    """``Workspace.evaluator`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport


class RemotePlaybookActions:
    """``Workspace.playbook_actions`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
