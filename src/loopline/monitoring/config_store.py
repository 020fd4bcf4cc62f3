"""Applied monitoring configs: apply a checked document, read the config in force.

Rules kept here: applying needs ``admin`` (a config decides which playbooks may roll back,
quarantine or retrain on their own); the document is checked whole before anything is
written, and a document equal to the one in force (same digest) writes nothing; otherwise
the row and its audit entry (``monitoring.config_applied``) commit together. A rule may
name a deployment that does not exist yet (deployments may come later): that is a warning
returned with the result, not a refusal. The config in force is parsed once per applied row
and cached, so the scheduler's periodic evaluation costs one small query to find it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.governance import Permission
from loopline.core.monitoring import MonitorConfig
from loopline.core.ports import Authorizer, authorize_if_wired
from loopline.monitoring.config_yaml import Where, parse_config
from loopline.store import MetadataStore
from loopline.store import monitor_records as records
from loopline.store.deployment_queries import DeploymentQueries

__all__ = ["SUBJECT", "AppliedConfig", "MonitorConfigs", "config_in_force", "summary"]

SUBJECT = "monitoring"


@dataclass(frozen=True, slots=True)
class AppliedConfig:
    """A config as applied: its row, when and by whom, and what it defines.

    ``changed`` is False when it was in force already (nothing written); ``warnings`` name
    what it refers to that does not exist (yet).
    """

    id: str
    applied_at: datetime
    applied_by: str
    source: str | None
    document: Mapping[str, Any]
    config: MonitorConfig
    changed: bool = True
    warnings: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The digest of the document."""
        return self.config.digest


def summary(config: MonitorConfig) -> dict[str, Any]:
    """Return what the audit entry and the CLI say about a config: digest and counts."""
    return {"digest": config.digest, "rules": len(config.rules),
            "playbooks": len(config.playbooks), "slices": len(config.slices),
            "deployments": sorted({rule.scope.deployment for rule in config.rules})}


def _applied(record: records.MonitorConfigRecord, config: MonitorConfig,
             changed: bool = True, warnings: tuple[str, ...] = ()) -> AppliedConfig:
    return AppliedConfig(record.id, record.applied_at, record.applied_by, record.source,
                         record.document, config, changed, warnings)


def config_in_force(store: MetadataStore) -> MonitorConfig | None:
    """Return the config in force in ``store`` (parsed afresh), or None before the first.

    Raises:
        InvalidArgumentError: when the stored document no longer parses (a config applied
            by an older loopline that this one reads differently).
    """
    record = records.MonitorRecords(store.engine).newest_config()
    return None if record is None else parse_config(record.document)


class MonitorConfigs:
    """The monitoring configs applied to one workspace; the newest is the one in force."""

    def __init__(self, store: MetadataStore, authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self.records = records.MonitorRecords(store.engine)
        self._lock = threading.Lock()
        self._cached: AppliedConfig | None = None

    def apply(self, actor: str, document: Any, *, source: str | None = None,
              where: Where | None = None) -> AppliedConfig:
        """Store ``document`` (a YAML document's data) as the config in force from now on.

        ``where`` names locations in errors (``monitor.yaml:14: rules[2].threshold``);
        ``source`` is kept with the row (the file it came from).

        Raises:
            AccessDeniedError: when ``actor`` does not hold ``admin``.
            InvalidArgumentError: naming the place of the first problem (nothing is
                written).
        """
        authorize_if_wired(self._authorizer, actor, Permission.ADMIN)
        config = parse_config(document) if where is None else parse_config(document, where)
        data = {} if document is None else dict(document)
        warnings = self._missing_deployments(config)
        with self._store.write(actor) as uow:
            uow.serialise()  # read the config in force under the lock every applier takes
            previous = records.newest_config(uow.session.connection())
            if previous is not None and previous.digest == config.digest:
                return _applied(previous, config, changed=False, warnings=warnings)
            row = records.insert_config(uow, config.digest, data, source, previous)
            before = None if previous is None else {"id": previous.id,
                                                    "digest": previous.digest}
            uow.audit("monitoring.config_applied", SUBJECT, before,
                      {"id": row.id, "source": source, **summary(config)})
        applied = _applied(row, config, warnings=warnings)
        with self._lock:
            self._cached = applied
        return applied

    def current(self) -> AppliedConfig | None:
        """Return the config in force, or None before the first apply.

        Raises:
            InvalidArgumentError: when the stored document no longer parses.
        """
        newest = self.records.newest_config_id()
        if newest is None:
            return None
        with self._lock:
            cached = self._cached
        if cached is not None and cached.id == newest:
            return cached
        record = self.records.newest_config()
        if record is None:  # pragma: no cover - configs are never deleted
            return None
        applied = _applied(record, parse_config(record.document))
        with self._lock:
            self._cached = applied
        return applied

    def _missing_deployments(self, config: MonitorConfig) -> tuple[str, ...]:
        known = set(DeploymentQueries(self._store.engine).revisions())
        missing = sorted({rule.scope.deployment for rule in config.rules} - known)
        return tuple(f"deployment {name!r} does not exist (yet); its rules have nothing to "
                     "measure until it does" for name in missing)
