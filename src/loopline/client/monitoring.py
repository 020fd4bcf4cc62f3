"""``client.monitor_configs``, ``.evaluator``, ``.playbook_actions``: monitoring over HTTP.

They mirror ``MonitorConfigs``, ``Evaluator`` and ``ActionLog`` (with ``records``, the reads
of configs, evaluations and alerts, on the first two as locally). What the server does
differently, it says: callers without ``admin`` see webhook URLs by their origin only, and a
value that is not a finite number comes back as None.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from loopline.client.actors import check_actor
from loopline.client.transport import Transport, decode, segment
from loopline.core.monitoring import (
    ActionState,
    Alert,
    AlertState,
    Evaluation,
    MonitorConfig,
    PlaybookAction,
)
from loopline.monitoring.config_store import AppliedConfig
from loopline.monitoring.config_yaml import Where, format_duration, parse_config
from loopline.monitoring.evaluator import Rerun
from loopline.store.monitor_records import MonitorConfigRecord

__all__ = ["RemoteEvaluator", "RemoteMonitorConfigs", "RemoteMonitorRecords",
           "RemotePlaybookActions"]


def _applied(data: Any) -> AppliedConfig:
    """Return the ``AppliedConfig`` an answer describes, its config parsed from the document.

    The digest is the server's: a document whose webhook URLs were cut to their origin
    (a caller without ``admin``) would hash differently.
    """
    config = parse_config(data["document"])
    if config.digest != data["digest"]:
        config = dataclasses.replace(config, digest=str(data["digest"]))
    return AppliedConfig(
        id=str(data["id"]), applied_at=decode(datetime, data["applied_at"]),
        applied_by=str(data["applied_by"]), source=data["source"],
        document=dict(data["document"]), config=config, changed=bool(data["changed"]),
        warnings=tuple(str(w) for w in data["warnings"]))


class RemoteMonitorRecords:
    """Reads of applied configs, evaluations and alerts, as ``MonitorRecords`` does."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def newest_config(self) -> MonitorConfigRecord | None:
        """Return the config in force, or None before the first apply."""
        found = self.configs(1)
        return found[0] if found else None

    def newest_config_id(self) -> str | None:
        """Return the id of the config in force, or None."""
        found = self.newest_config()
        return None if found is None else found.id

    def configs(self, limit: int = 20) -> builtins.list[MonitorConfigRecord]:
        """List applied configs, newest first. See ``MonitorRecords.configs``."""
        page = self._http.get("/monitoring/configs", {"limit": limit})
        return [decode(MonitorConfigRecord, item) for item in page["items"]]

    def evaluation(self, evaluation_id: str) -> Evaluation:
        """Return one evaluation. See ``MonitorRecords.evaluation``."""
        return decode(Evaluation, self._http.get(
            f"/monitoring/evaluations/{segment(evaluation_id)}"))

    def evaluations(self, rule: str | None = None, deployment: str | None = None,
                    limit: int = 50) -> builtins.list[Evaluation]:
        """List evaluations, newest window first. See ``MonitorRecords.evaluations``."""
        page = self._http.get("/monitoring/evaluations",
                              {"rule": rule, "deployment": deployment, "limit": limit})
        return [decode(Evaluation, item) for item in page["items"]]

    def alert(self, alert_id: str) -> Alert:
        """Return one alert. See ``MonitorRecords.alert``."""
        return decode(Alert, self._http.get(f"/monitoring/alerts/{segment(alert_id)}"))

    def alerts(self, state: AlertState | None = None, deployment: str | None = None,
               limit: int = 50) -> builtins.list[Alert]:
        """List alerts, newest opened first. See ``MonitorRecords.alerts``."""
        page = self._http.get("/monitoring/alerts", {
            "state": None if state is None else str(state), "deployment": deployment,
            "limit": limit})
        return [decode(Alert, item) for item in page["items"]]


class RemoteMonitorConfigs:
    """``Workspace.monitor_configs`` over HTTP, and the monitoring report."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self.records = RemoteMonitorRecords(transport)

    def apply(self, actor: str, document: Any, *, source: str | None = None,
              where: Where | None = None) -> AppliedConfig:
        """Apply ``document`` (a config's data) as the config in force. See ``apply`` there.

        The server acts as the token's user (it needs ``admin``): ``actor`` must be that
        user, checked before anything is sent (``check_actor``). ``where`` is not sent (it
        is a function): errors name the document's places (``rules[2].threshold``);
        ``apply_yaml`` sends the text, and its errors name lines.

        Raises:
            InvalidArgumentError: naming ``actor``, or the place of the first problem.
            AccessDeniedError: when the token may not administer.
        """
        del where
        check_actor(self._http, actor)
        body = {"document": {} if document is None else dict(document), "source": source}
        return _applied(self._http.request("PUT", "/monitoring/config", json=body))

    def apply_yaml(self, actor: str, text: str, *, source: str | None = None,
                   ) -> AppliedConfig:
        """Apply the YAML ``text`` of a config file (remote only: the server reads it).

        Errors name ``<source>:<line>: <place>`` (``monitor.yaml`` without ``source``).

        Raises:
            As :meth:`apply`.
        """
        check_actor(self._http, actor)
        return _applied(self._http.request("PUT", "/monitoring/config",
                                           json={"yaml": text, "source": source}))

    def current(self) -> AppliedConfig | None:
        """Return the config in force, or None before the first apply."""
        found = self._http.get("/monitoring/config")
        return None if found is None else _applied(found)

    def report(self, deployment: str, since: str | timedelta | None = None,
               start: datetime | None = None, end: datetime | None = None) -> str:
        """Return the HTML monitoring report of ``deployment`` (``loopline monitor report``).

        The period ends at ``end`` (default: now) and goes back ``since`` (default 7 days)
        or to ``start``; at most 90 days.

        Raises:
            NotFoundError: when there is no such deployment.
            InvalidArgumentError: naming ``since``, ``start`` or ``end``.
            ConfigurationError: when the server lacks matplotlib.
        """
        length = format_duration(since) if isinstance(since, timedelta) else since
        return self._http.text("/monitoring/report", {
            "deployment": deployment, "since": length,
            "start": None if start is None else start.isoformat(),
            "end": None if end is None else end.isoformat()})


class RemoteEvaluator:
    """``Workspace.evaluator`` over HTTP: the server measures, with its own data."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self.records = RemoteMonitorRecords(transport)

    def run(self, config: MonitorConfig,
            deployments: Collection[str] | None = None) -> builtins.list[Evaluation]:
        """Evaluate the rules of ``config`` once; it must be the config in force there.

        The server evaluates only the config in force (``config`` is matched by digest).

        Raises:
            ConflictError: when ``config`` is not the config in force (or none is).
            AccessDeniedError: when the token may not write.
        """
        return self._run(config.digest, deployments)

    def run_in_force(self, deployments: Collection[str] | None = None,
                     ) -> builtins.list[Evaluation]:
        """Evaluate the config in force once, as ``loopline monitor run`` (remote only).

        Raises:
            ConflictError: when no config is in force.
            AccessDeniedError: when the token may not write.
        """
        return self._run(None, deployments)

    def _run(self, digest: str | None,
             deployments: Collection[str] | None) -> builtins.list[Evaluation]:
        wanted = None if deployments is None else sorted(deployments)
        found = self._http.post("/monitoring/run", {"deployments": wanted, "digest": digest})
        return [decode(Evaluation, item) for item in found]

    def rerun(self, evaluation_id: str) -> Rerun:
        """Measure a stored evaluation again; nothing is written. See ``Evaluator.rerun``."""
        return decode(Rerun, self._http.post(
            f"/monitoring/evaluations/{segment(evaluation_id)}/rerun"))


class RemotePlaybookActions:
    """``Workspace.playbook_actions`` over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def list(self, alert_id: str | None = None, state: ActionState | str | None = None,
             limit: int = 100) -> builtins.list[PlaybookAction]:
        """List at most ``limit`` actions newest first. See ``ActionLog.list``."""
        page = self._http.get("/playbooks/actions", {
            "alert_id": alert_id, "state": None if state is None else str(state),
            "limit": limit})
        return [decode(PlaybookAction, item) for item in page["items"]]

    def get(self, action_id: str) -> PlaybookAction:
        """Return one action. See ``ActionLog.get``."""
        return decode(PlaybookAction, self._http.get(
            f"/playbooks/actions/{segment(action_id)}"))
