"""The composition root: a ``Workspace`` is settings plus the concrete stores built from them.

``Workspace.open()`` finds the nearest ``.loopline/`` upwards from the current folder, as
git finds ``.git``; ``Workspace.init()`` creates one and migrates its database. This is the
only place that picks concrete classes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loopline.app.artifact_service import ArtifactService
from loopline.app.settings import (
    CONFIG_FILENAME,
    WORKSPACE_DIRNAME,
    Settings,
    absolute,
    actor_of,
    config_text,
    load_settings,
    resolve_paths,
)
from loopline.artifacts import ContentAddressedStore, Keyring
from loopline.automation.log import ActionLog
from loopline.automation.ports import AutomationOptions, AutomationPorts, RunExecutor
from loopline.automation.service import Automation, pipelines_by_name
from loopline.core.clock import Clock
from loopline.core.errors import ConfigurationError, InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.monitoring import Playbook
from loopline.core.ports import Authorizer
from loopline.core.validation import ValidationReport
from loopline.data.lineage import LineageService
from loopline.data.partitions import PartitionService
from loopline.data.prediction_log import PredictionLog
from loopline.data.snapshots import DatasetService
from loopline.data.validation import Suite
from loopline.data.validation_service import ValidationService
from loopline.deploy.service import DeploymentService
from loopline.governance.access import AccessControl
from loopline.governance.approvals import ApprovalService
from loopline.governance.engine import approval_requirement
from loopline.governance.fact_gathering import FactGatherer
from loopline.governance.gate import GovernanceGate
from loopline.governance.legal_holds import LegalHolds
from loopline.governance.policy_sets import PolicySets
from loopline.governance.report import ReportBuilder
from loopline.governance.retention import RetentionService
from loopline.governance.tokens import Tokens
from loopline.loop import Dispatcher
from loopline.monitoring.config_store import MonitorConfigs
from loopline.monitoring.evaluator import Evaluator
from loopline.monitoring.references import ReferenceProfiles
from loopline.monitoring.signals import SignalMeasurer
from loopline.pipelines import PipelineDefinition, Runner, RunnerOptions
from loopline.pipelines.faults import FaultInjector, parse_faults
from loopline.registry.service import ModelRegistry
from loopline.store import AuditLog, MetadataStore
from loopline.store.metadata_store import MAX_ACTOR

if TYPE_CHECKING:
    from loopline.serving.app import ServingConfig


def find_workspace(start: Path | None = None) -> Path:
    """Return the folder holding the nearest ``.loopline/`` at or above ``start``.

    Raises:
        NotFoundError: when no folder up to the filesystem root holds one.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / WORKSPACE_DIRNAME / CONFIG_FILENAME).is_file():
            return folder
    raise NotFoundError("workspace", str(here),
                        "no .loopline/ here or above; run `loopline init` to create one")


def _keyring(settings: Settings) -> Keyring | None:
    secret = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    if secret is None and settings.encryption_key_file is None:
        return None
    return Keyring.from_sources(secret, settings.encryption_key_file)


class Workspace:
    """One loopline workspace: its settings, metadata store and artifact store."""

    def __init__(self, root: Path, settings: Settings, store: MetadataStore,
                 blobs: ContentAddressedStore) -> None:
        self.root = root
        self.settings = settings
        self.store = store
        self._blobs = blobs
        # The one authorisation function: every service that changes something asks it.
        self.access = AccessControl(store)
        self._view = False
        self._wire(actor_of(settings), self.access)

    def as_actor(self, actor: str, authorizer: Authorizer | None = None) -> Workspace:
        """Return a view of this workspace whose services act as ``actor``.

        It shares the store, the artifact store and the settings (nothing is reopened, so it
        is cheap enough to build per API request); ``authorizer`` replaces the workspace's
        authorisation function in every service (the API passes one capped by the token's
        role). Closing the view closes nothing.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is blank or too long.
        """
        if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR:
            raise InvalidArgumentError("actor", f"must be 1-{MAX_ACTOR} characters")
        view = object.__new__(Workspace)
        view.root, view.settings, view.store = self.root, self.settings, self.store
        view._blobs, view.access = self._blobs, self.access
        view._view = True
        view._wire(actor, authorizer or self.access)
        return view

    def _wire(self, actor: str, authorizer: Authorizer) -> None:
        """Build every service acting as ``actor`` and asking ``authorizer``."""
        store, blobs, settings = self.store, self._blobs, self.settings
        self.actor = actor
        self.authorizer = authorizer
        self.artifacts = ArtifactService(blobs, store, actor, authorizer)
        self.lineage = LineageService(store, authorizer)
        self.datasets = DatasetService(store, blobs, self.lineage, actor, store.clock,
                                       authorizer)
        self.partitions = PartitionService(store, blobs, actor, store.clock, authorizer)
        self.validation = ValidationService(store, actor, authorizer)
        self.predictions = PredictionLog(store, blobs, actor, store.clock, authorizer)
        faults = FaultInjector(parse_faults(settings.faults, "faults")) if settings.faults \
            else None
        self._runner_options = RunnerOptions(
            actor=actor, faults=faults, executor=settings.executor,
            max_workers=settings.max_workers, ray_address=settings.ray_address,
            authorizer=authorizer)
        self.pipelines = Runner(store, blobs, self._runner_options)
        self.tokens = Tokens(store, authorizer, actor)
        self._wire_governance(store, blobs)
        self._wire_monitoring(store, blobs)

    def _wire_governance(self, store: MetadataStore, blobs: ContentAddressedStore) -> None:
        """Build the governance services and the gate every registry change goes through."""
        self.policies = PolicySets(store, self.authorizer)
        self.approvals = ApprovalService(
            store, self.authorizer, self.actor,
            requirement=lambda model, gate, target: approval_requirement(
                self.policies.active(), model, gate, target))
        self.facts = FactGatherer(store, blobs, self.approvals, self.authorizer)
        # The gate reads time from the store's clock, as the approval service does, so an
        # approval's expiry is judged at one time by both.
        self.gate = GovernanceGate(self.authorizer, self.policies, self.facts, store.clock)
        self.models = ModelRegistry(store, blobs, self.actor, gate=self.gate)
        self.deployments = DeploymentService(store, self.gate, self.actor, self.authorizer)
        self.retention = RetentionService(store, blobs, self.authorizer, self.actor)
        self.legal_holds = LegalHolds(store, self.authorizer, self.actor)
        self.governance_report = ReportBuilder(store, self.facts, self.policies.active,
                                               store.clock)

    def _wire_monitoring(self, store: MetadataStore, blobs: ContentAddressedStore) -> None:
        """Build the monitoring services: references, configs, the evaluator, actions."""
        self.references = ReferenceProfiles(store, blobs)
        self.monitor_configs = MonitorConfigs(store, self.authorizer)
        self.evaluator = Evaluator(
            store, SignalMeasurer(self.predictions, self.references, store), store.clock,
            actor=self.actor, authorizer=self.authorizer)
        self.playbook_actions = ActionLog(store)

    def automation(self, pipelines: Sequence[PipelineDefinition] = (),
                   execute: RunExecutor | None = None) -> Automation:
        """Return the playbook automation over this workspace's services.

        ``pipelines`` are what ``retrain`` steps may start; ``execute`` runs a started run
        (None: the scheduler executes it as any triggered run). Playbooks are read from the
        monitoring config in force when an action runs. The caller closes it.
        """
        secret = self.settings.webhook_secret
        options = AutomationOptions(
            actor=self.actor, webhook_secret=secret.get_secret_value() if secret else None)
        ports = AutomationPorts(self.store, self.deployments, self.models, self.approvals,
                                self.gate, self.pipelines)
        return Automation(ports, self._playbook, pipelines_by_name(pipelines), execute,
                          options)

    def _playbook(self, name: str) -> Playbook | None:
        applied = self.monitor_configs.current()
        return None if applied is None else applied.config.playbooks.get(name)

    def runner(self, **options: Any) -> Runner:
        """Return a runner with some ``RunnerOptions`` changed (``executor``, ``cache`` ...).

        The caller closes it (``Runner.close``) when it started worker processes.

        Raises:
            InvalidArgumentError: naming an unknown or out-of-range option.
        """
        unknown = sorted(set(options) - set(RunnerOptions.__dataclass_fields__))
        if unknown:
            raise InvalidArgumentError("runner options", f"unknown: {', '.join(unknown)}")
        return Runner(self.store, self._blobs,
                      dataclasses.replace(self._runner_options, **options))

    @property
    def audit(self) -> AuditLog:
        """The workspace's audit log (read, filter, verify the hash chain)."""
        return self.store.audit

    @property
    def config_dir(self) -> Path:
        """The ``.loopline/`` folder."""
        return self.root / WORKSPACE_DIRNAME

    @classmethod
    def _build(cls, root: Path, overrides: dict[str, Any] | None, clock: Clock | None,
               check_schema: bool) -> Workspace:
        config_dir = root / WORKSPACE_DIRNAME
        settings = resolve_paths(load_settings(config_dir / CONFIG_FILENAME, overrides),
                                 config_dir)
        if settings.db_url is None or settings.artifact_root is None:  # pragma: no cover
            raise ConfigurationError("settings were not resolved against the workspace")
        keyring = _keyring(settings)
        store = MetadataStore.open(settings.db_url, clock=clock, check_schema=check_schema)
        try:
            blobs = ContentAddressedStore.from_url(settings.artifact_root, keyring=keyring)
        except BaseException:
            store.close()
            raise
        return cls(root, settings, store, blobs)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *,
             overrides: dict[str, Any] | None = None, clock: Clock | None = None,
             check_schema: bool = True) -> Workspace:
        """Open the workspace at or above ``path`` (default: the current folder).

        ``check_schema=False`` is for the commands that inspect or upgrade the schema.

        Raises:
            NotFoundError: when there is no workspace there or above.
            SchemaVersionError: when its database is not at this code's revision.
            ConfigurationError: when its settings are invalid.
        """
        root = find_workspace(Path(path) if path is not None else None)
        return cls._build(root, overrides, clock, check_schema)

    @classmethod
    def init(cls, path: str | os.PathLike[str] | None = None, *,
             overrides: dict[str, Any] | None = None, clock: Clock | None = None) -> Workspace:
        """Create (or complete) a workspace in ``path`` and migrate its database to head.

        Idempotent: on an existing workspace it only upgrades a database that is behind.

        Raises:
            ConfigurationError: when ``path`` is not a folder or settings are invalid.
            SchemaVersionError: when the database is newer than this code.
        """
        root = Path(path if path is not None else Path.cwd()).resolve()
        if root.exists() and not root.is_dir():
            raise ConfigurationError(f"cannot create a workspace in {root}: not a folder")
        given = {key: absolute(key, value, Path.cwd())
                 for key, value in (overrides or {}).items() if value is not None}
        text = config_text(given)  # refuses what must not be written, before anything is
        config_dir = root / WORKSPACE_DIRNAME
        existing = config_dir / CONFIG_FILENAME
        load_settings(existing if existing.is_file() else None, overrides)  # bad → nothing made
        config_dir.mkdir(parents=True, exist_ok=True)
        config_file = config_dir / CONFIG_FILENAME
        created = not config_file.exists()
        if created:
            _write_atomically(config_file, text)
        workspace = cls._build(root, overrides, clock, check_schema=False)
        try:
            after = workspace.store.upgrade()
            if created or after.changed:
                workspace._record_init(created, after.upgraded_from, after.current)
        except BaseException:
            workspace.close()
            raise
        return workspace

    def _record_init(self, created: bool, before: str | None, after: str | None) -> None:
        with self.store.write(self.actor) as uow:
            if created:
                uow.emit(EventType.WORKSPACE_INITIALISED, str(self.root), {"schema": after})
                uow.audit("workspace.init", f"workspace:{self.root}", None,
                          {"db": self.store.display_url, "schema": after})
            if before != after:
                uow.emit(EventType.SCHEMA_UPGRADED, "schema", {"from": before, "to": after})
                uow.audit("db.upgrade", "schema", {"revision": before}, {"revision": after})

    def upgrade(self) -> None:
        """Migrate the database to this code's revision, auditing the change."""
        after = self.store.upgrade()
        if after.changed:
            self._record_init(False, after.upgraded_from, after.current)

    def validate_dataset(self, ref: str, suite: Suite) -> ValidationReport:
        """Check a dataset version against ``suite`` and store the result.

        The previous version's profile feeds the shift checks (see ``ValidationService``).
        """
        version = self.datasets.get(ref)
        present = [c.name for c in version.columns]
        suite.check_columns(present)  # a typo is bad input, exit 5
        wanted = suite.columns_read()  # read only what the suite looks at
        columns = None if wanted is None else [c for c in wanted if c in present]
        previous = self.datasets.previous(version)
        return self.validation.validate(
            version.id, self.datasets.read(version.id, columns=columns), suite,
            current_profile=dict(version.profile),
            previous_profile=dict(previous.profile) if previous else None)

    def serving_config(self, **options: Any) -> ServingConfig:
        """Return the model server's configuration over this workspace.

        Models load through the registry's verifying load path, predictions go to this
        workspace's prediction log; ``options`` set the other ``ServingConfig`` fields
        (``deployments``, ``batch_max_rows``, ``max_rows`` ...).

        Raises:
            InvalidArgumentError: naming an unknown option.
        """
        from loopline.serving.app import ServingConfig  # the server's stack, only when asked

        fixed = {"store", "loader", "prediction_log", "actor"}
        unknown = sorted(set(options) - (set(ServingConfig.__dataclass_fields__) - fixed))
        if unknown:
            raise InvalidArgumentError("serving options", f"unknown: {', '.join(unknown)}")
        return ServingConfig(store=self.store, loader=self.models,
                             prediction_log=self.predictions, actor=self.actor, **options)

    def dispatcher(self, batch_size: int = 500, poll_interval: float = 0.2) -> Dispatcher:
        """Return an event dispatcher reading this workspace's outbox."""
        return Dispatcher(self.store.event_source(poll_interval), batch_size=batch_size)

    def close(self) -> None:
        """Stop pipeline workers this workspace started and release database connections.

        A view (``as_actor``) closes only its own pipeline workers: the store is shared.
        """
        self.pipelines.close()
        if not self._view:
            self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
