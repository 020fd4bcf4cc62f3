"""The model registry as a workspace offers it: register, resolve, govern, load, describe.

Every change goes to the ``Gate`` first and then to the store functions in one unit of work
(``store.model_registry``), which write the event and the audit entry with the gate's
decision. The gate is asked outside the transaction: a policy may read the database (an
approval, say), which must not wait behind the write lock this transaction would hold. The
store checks existence, lifecycle and quarantine again inside the transaction, so a decision
about a state that changed meanwhile cannot write past those rules.

A registration asks the gate with ``version=0`` (its number is given only when it is
written) and with the artifact digest, flavor, metrics, tags, datasets and run; a denied
registration writes nothing, not even the artifact. Loading reads the artifact through the
verifying content store, so a changed byte raises ``IntegrityError`` naming the version.
Reproducibility (``verify``, ``export``, ``import_bundle``) lives in ``registry.verify`` and
the ``registry.bundle_*`` modules; an import is gated and recorded as a registration is.

A quarantined version is released (moved to a status that serves: ``candidate``, ``staging``,
``production``) only with an approver's consent: an approved approval request for that move
(gate ``status``, target ``candidate``) made *after* the version's latest quarantine, with an
approver other than the actor, checked inside the transaction on the locked version row,
whatever the policies in force say (see ``set_status``). Retiring it to ``archived`` on the
way does not launder it: the quarantine stands (``store.status_history``) until a release
through such an approval, so ``archived -> candidate`` needs one too, and an approval given
for an earlier quarantine never releases a later one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loopline.core.datasets import DatasetVersion
from loopline.core.errors import InvalidArgumentError, PolicyDeniedError
from loopline.core.gates import AllowAll, GateAction, GateDecision, GateRequest
from loopline.core.governance import ApprovalStatus
from loopline.core.models import (
    LATEST,
    ModelAlias,
    ModelStatus,
    ModelURI,
    ModelVersion,
    NewModelVersion,
    RegisteredModel,
    TrustDecision,
    parse_status,
    validate_alias,
    validate_version,
)
from loopline.core.names import validate_name
from loopline.core.ports import BlobStore, Gate
from loopline.data.provenance import environment
from loopline.registry import environment_check
from loopline.registry.batch_scoring import ScoreJob, ScoreOptions, ScoreReport, score
from loopline.registry.bundle_export import ExportedBundle, write_bundle
from loopline.registry.bundle_import import ImportedVersion, open_bundle
from loopline.registry.environment_check import EnvironmentDifference
from loopline.registry.flavors import LoadedModel, TrustContext
from loopline.registry.holdout import Tolerance
from loopline.registry.loading import load_version
from loopline.registry.model_card import build_card, render
from loopline.registry.registration import (
    Payload,
    Registration,
    check_references,
    prepare,
    snapshots,
)
from loopline.registry.servable import Servable, load_servable
from loopline.registry.signatures import Signature
from loopline.registry.verify import DEFAULT_TIMEOUT, VerifyReport, verify_version
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import model_registry as records
from loopline.store.approval_records import ApprovalQueries
from loopline.store.model_queries import ModelQueries, to_version, version_row
from loopline.store.status_history import requested_at_seq, unreleased_quarantine

CardFormat = Literal["markdown", "json"]
SERVABLE = frozenset({ModelStatus.CANDIDATE, ModelStatus.STAGING, ModelStatus.PRODUCTION})
"""The statuses a deployment may route to (``archived`` and ``quarantined`` may not)."""
StatusWithin = Callable[[UnitOfWork, ModelVersion], None]
"""A caller's own write, run inside a status change's transaction with the version as written.

Its rows commit with the change or not at all; an exception from it rolls the change back.
"""


@dataclass(frozen=True, slots=True)
class VersionDetails:
    """A version with what points at it: its aliases and its trust decision, if any."""

    version: ModelVersion
    aliases: tuple[ModelAlias, ...]
    trust: TrustDecision | None


class ModelRegistry:
    """Model versions, aliases, statuses and trust of one workspace, behind a gate."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, actor: str,
                 gate: Gate | None = None) -> None:
        self._store = store
        self._blobs = blobs
        self._actor = actor
        self._gate: Gate = gate if gate is not None else AllowAll()
        self.queries = ModelQueries(store.engine)

    # -- registering -------------------------------------------------------------------------

    def register(  # noqa: PLR0913 - the options a user names at registration
            self, model: Any, name: str, *, signature: Signature | Mapping[str, Any] | None = None,
            metrics: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None,
            datasets: Sequence[str | DatasetVersion] = (), run: str | None = None,
            description: str | None = None, flavor: str | None = None,
            input_example: Any = None, holdout: Any = None,
            tolerance: Tolerance | None = None, reference: Any = None) -> ModelVersion:
        """Register ``model`` as the next version of ``name`` (see ``Registration``).

        Metrics are overall (``{"accuracy": 0.9}``) and/or per slice (``{"recall":
        {"overall": 0.8, "region=EU": 0.75}}``); see ``registry.metrics``. ``reference``
        (the training inputs) records the profiles monitoring compares windows with
        (``registry.reference_profile``).

        Raises:
            InvalidArgumentError: naming the field that is invalid, or when no flavor takes
                the model.
            NotFoundError: when a dataset snapshot or the run does not exist.
            PolicyDeniedError: when the gate denies it (nothing is written).
            UserCodeError: when the model's ``predict`` raises while typing the signature
                or scoring the holdout sample or the reference.
        """
        return self.register_with(model, name, Registration(
            signature=signature, metrics=metrics, params=params, tags=tags, datasets=datasets,
            run=run, description=description, flavor=flavor, input_example=input_example,
            holdout=holdout, tolerance=tolerance, reference=reference))

    def register_with(self, model: Any, name: str, registration: Registration) -> ModelVersion:
        """Register ``model`` as the next version of ``name`` with ``registration``'s options.

        Raises:
            As :meth:`register`.
        """
        prepared = prepare(model, name, registration)
        return self.record_version(prepared.new, prepared.payloads())

    def record_version(self, new: NewModelVersion, payloads: Sequence[Payload]) -> ModelVersion:
        """Store ``payloads`` and write ``new`` once its references exist and the gate allows.

        Raises:
            NotFoundError, PolicyDeniedError: as :meth:`register` (nothing is written).
            IntegrityError: when a payload hashes to another digest than its record names.
        """
        check_references(self._store, new)
        request = GateRequest(GateAction.REGISTER, new.name, 0, self._actor, None, {
            "artifact_digest": new.artifact_digest, "flavor": new.flavor,
            "metrics": dict(new.metrics), "tags": dict(new.tags),
            "datasets": list(new.datasets), "run_id": new.run_id,
            "imported_from": new.extra.get("imported_from"),
            "code_version": None if new.code_version is None else dict(new.code_version),
            "environment_recorded": bool(new.environment),
            "signature_recorded": new.signature is not None,
            "description": new.description})
        what = f"registering a version of model {new.name!r}"
        self._gate.check(request).require(what)  # fail fast, before storing any bytes
        for payload in payloads:
            payload.store(self._blobs)
        with self._store.write(self._actor) as uow:
            uow.serialise()  # the decision that counts is taken under the append lock
            decision = self._gate.check(request)
            decision.require(what)
            return records.create_version(uow, new, decision)

    # -- reading -----------------------------------------------------------------------------

    def resolve(self, uri: str | ModelURI) -> ModelVersion:
        """Return the version ``uri`` names: ``[models:/]NAME/VERSION`` or ``NAME@ALIAS``.

        ``NAME@latest`` is the highest version.

        Raises:
            InvalidArgumentError: naming ``model`` when the text is not a model URI.
            NotFoundError: naming the model, version or alias that does not exist.
        """
        return self.queries.resolve(uri)

    def get(self, uri: str | ModelURI) -> VersionDetails:
        """Return the version ``uri`` names with its aliases and trust decision.

        Raises:
            As :meth:`resolve`.
        """
        version = self.resolve(uri)
        return VersionDetails(version,
                              tuple(self.queries.aliases(version.name, version.version)),
                              self.queries.trust(version.name, version.version))

    def versions(self, name: str, status: ModelStatus | str | None = None
                 ) -> list[ModelVersion]:
        """List the versions of ``name``, oldest first (only those in ``status``, if given).

        Raises:
            NotFoundError: when no model ``name`` is registered.
            InvalidArgumentError: when ``status`` is not a status.
        """
        validate_name(name, "model")
        return self.queries.versions(name, None if status is None else parse_status(status))

    def models(self) -> list[RegisteredModel]:
        """List every registered model, by name."""
        return self.queries.models()

    def model(self, name: str) -> RegisteredModel:
        """Return the registered model ``name``.

        Raises:
            NotFoundError: when there is none.
        """
        validate_name(name, "model")
        return self.queries.model(name)

    def aliases(self, name: str) -> list[ModelAlias]:
        """List the aliases of model ``name``, by alias.

        Raises:
            NotFoundError: when no model ``name`` is registered.
        """
        validate_name(name, "model")
        return self.queries.aliases(name)

    # -- governed changes --------------------------------------------------------------------

    def _ask(self, uow: UnitOfWork, action: GateAction, version: ModelVersion,
             target: str | None, details: Mapping[str, Any]) -> GateDecision:
        """Ask the gate inside ``uow``, once it holds the append lock.

        A role revoked, an approval withdrawn or a policy applied concurrently either commits
        before the lock is taken (and the gate sees it) or waits until this change commits:
        there is no window between the decision and the write it allows.
        """
        uow.serialise()
        return self._gate.check(GateRequest(
            action, version.name, version.version, self._actor, target,
            {"status": str(version.status), "metrics": dict(version.metrics),
             "tags": dict(version.tags), **details}))

    def set_alias(self, name: str, alias: str, version: int) -> ModelAlias | None:
        """Point ``models:/NAME@ALIAS`` at ``version``; return what it pointed at before.

        Raises:
            InvalidArgumentError: when the alias is invalid, all digits or ``latest``.
            NotFoundError: naming the version when it does not exist.
            ConflictError: when the version is quarantined.
            PolicyDeniedError: when the gate denies the move (nothing is written).
        """
        validate_name(name, "model")
        validate_alias(alias)
        if alias == LATEST:
            raise InvalidArgumentError("alias", f"{LATEST!r} is reserved: it always means the "
                                                "highest version; choose another alias")
        target = self.queries.version(name, validate_version(version))
        current = {a.alias: a.version for a in self.queries.aliases(name)}.get(alias)
        with self._store.write(self._actor) as uow:
            decision = self._ask(uow, GateAction.ALIAS, target, alias, {"from": current})
            return records.set_alias(uow, name, alias, version, decision)

    def delete_alias(self, name: str, alias: str) -> ModelAlias:
        """Remove ``models:/NAME@ALIAS`` and return what it pointed at.

        Raises:
            NotFoundError: when the model has no such alias.
            PolicyDeniedError: when the gate denies it (nothing is written).
        """
        validate_alias(alias)
        if alias == LATEST:
            raise InvalidArgumentError("alias", f"{LATEST!r} is not an alias one can remove")
        target = self.resolve(ModelURI(name, alias=alias))
        with self._store.write(self._actor) as uow:
            decision = self._ask(uow, GateAction.DELETE_ALIAS, target, alias, {})
            return records.delete_alias(uow, name, alias, decision)

    def set_status(self, uri: str | ModelURI, status: ModelStatus | str, *,
                   within: StatusWithin | None = None) -> ModelVersion:
        """Move the version ``uri`` names to ``status``; return it as it is now.

        Releasing a quarantined version (to a servable status, also from ``archived`` when it
        was archived while quarantined) needs an approved approval request for that move
        (gate ``status``, target ``candidate``), made after its latest quarantine, whose
        approvers include someone other than the actor. ``within`` runs inside the same
        transaction (``StatusWithin``).

        Raises:
            InvalidArgumentError: when ``status`` is not a status.
            NotFoundError: naming the version when it does not exist.
            InvalidTransitionError: when the lifecycle does not allow the move.
            PolicyDeniedError: when the gate denies it, or a release from quarantine has no
                approval (nothing is written).
        """
        wanted = parse_status(str(status))
        target = self.resolve(uri)
        with self._store.write(self._actor) as uow:
            decision = self._ask(uow, GateAction.STATUS, target, str(wanted),
                                 {"from": str(target.status)})
            if wanted in SERVABLE:
                self._require_release_approval(uow, target)
            changed = records.set_status(uow, target.name, target.version, wanted, decision)
            if within is not None:
                within(uow, changed)
            return changed

    def _require_release_approval(self, uow: UnitOfWork, target: ModelVersion) -> None:
        """Refuse to put a version under quarantine (as the locked row says) back unapproved.

        Under quarantine: quarantined now, or archived since its latest quarantine without a
        release in between. Runs after ``_ask`` took the append lock, so a vote either
        committed before (and is read here) or waits until this change commits.

        Raises:
            PolicyDeniedError: naming the version and the commands that approve the release.
        """
        connection = uow.session.connection()
        locked = to_version(version_row(connection, target.name, target.version, lock=True))
        if locked.status in SERVABLE:
            return
        quarantined = unreleased_quarantine(connection, locked.uri, SERVABLE)
        if quarantined is None:
            return
        now = uow.now()
        approved = [request for request in ApprovalQueries(self._store.engine).for_action(
            target.name, target.version, str(GateAction.STATUS), str(ModelStatus.CANDIDATE))
            if request.status_at(now) is ApprovalStatus.APPROVED
            and request.approvers(excluding=[self._actor])]
        stale = []
        for request in approved:
            made = requested_at_seq(connection, request.id)
            if made is not None and made > quarantined:
                return
            stale.append(request.id)
        uri = locked.uri
        state = "is quarantined" if locked.status is ModelStatus.QUARANTINED else (
            f"is {locked.status}, quarantined before and never released")
        older = "" if not stale else (
            f"; approval request {stale[0]} was made before its latest quarantine and does "
            "not count: its requester withdraws it (`loopline approvals withdraw ID`) or an "
            "approver rejects it before a new one can be made")
        raise PolicyDeniedError(
            f"{uri} {state}; releasing it needs an approver: `loopline approvals request "
            f"{uri} --gate status --target candidate --reason ...`, approved by someone other "
            f"than {self._actor!r} (`loopline approvals approve ID`){older}")

    def trust(self, uri: str | ModelURI, reason: str) -> TrustDecision:
        """Record an audited decision that the version may run code when it loads.

        A version trusted already keeps its first decision, which is returned.

        Raises:
            InvalidArgumentError: when ``reason`` is empty or too long.
            NotFoundError: naming the version when it does not exist.
            PolicyDeniedError: when the gate denies it (nothing is written).
        """
        target = self.resolve(uri)
        with self._store.write(self._actor) as uow:
            decision = self._ask(uow, GateAction.TRUST, target, None, {
                "reason": reason, "flavor": target.flavor,
                "artifact_digest": target.artifact_digest})
            return records.record_trust(uow, target.name, target.version, reason, decision)

    def trust_source(self, name: str, source: Mapping[str, Any], reason: str) -> GateDecision:
        """Record an audited decision that a model file from outside may run code on import.

        Asked before an import unpickles a file no version holds yet (MLflow's ``model.pkl``):
        the gate sees ``trust`` for version 0 of ``name`` with ``source`` (its ``path`` and
        ``sha256``); the audit entry ``model.source_trusted`` keeps actor, source and reason.

        Raises:
            InvalidArgumentError: when ``name`` or ``reason`` is invalid.
            PolicyDeniedError: when the gate denies it (nothing is written).
        """
        validate_name(name, "model")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > records.MAX_REASON:
            raise InvalidArgumentError("reason", f"say why it may run code (1-"
                                                 f"{records.MAX_REASON} characters)")
        details = {"reason": reason, "source": dict(source)}
        request = GateRequest(GateAction.TRUST, name, 0, self._actor, None, details)
        with self._store.write(self._actor) as uow:
            uow.serialise()  # decide under the append lock, as ``_ask`` explains
            decision = self._gate.check(request)
            decision.require(f"trusting {source.get('path')!r} to run code as model {name!r}")
            uow.audit("model.source_trusted", f"models:/{name}", None,
                      {**details, "gate": decision.as_record()})
        return decision

    # -- loading -----------------------------------------------------------------------------

    def load(self, uri: str | ModelURI, *, allow_quarantined: bool = False) -> LoadedModel:
        """Return the model the version ``uri`` names, ready to predict.

        The artifact's SHA-256 is checked as it is read; a ``python`` (pickle) artifact loads
        only when the version has a trust decision (:meth:`trust`).

        Raises:
            NotFoundError, InvalidArgumentError: as :meth:`resolve`.
            ConflictError: when the version is quarantined and ``allow_quarantined`` is not set.
            IntegrityError: naming the version when its artifact is missing or altered.
            UntrustedModelError: when the flavor needs a trust decision the version lacks.
            ConfigurationError: when the flavor's libraries are not installed.
        """
        version = self.resolve(uri)
        trust = TrustContext(trusted=self.queries.is_trusted(version.name, version.version))
        return load_version(self._blobs, version, trust, allow_quarantined)

    def servable(self, name: str, version: int) -> Servable:
        """Load version ``version`` of ``name`` for the model server (``ModelLoader`` port).

        Raises:
            NotFoundError: when there is no such version.
            PolicyDeniedError: when it is quarantined or needs a trust decision it lacks.
            IntegrityError: naming the version when its artifact is missing or altered.
        """
        return load_servable(self._blobs, self.queries, name, validate_version(version))

    def score(self, uri: str | ModelURI, source: Any, output: str | Path,
              options: ScoreOptions | None = None) -> ScoreReport:
        """Batch-score ``source`` with the version ``uri`` names into ``output``.

        Chunked, checked against the signature, written atomically and recorded in lineage
        (see ``registry.batch_scoring``).

        Raises:
            NotFoundError, InvalidArgumentError: as :meth:`resolve`, or naming ``input``,
                ``output`` or the column and first row of the chunk that fails the signature.
            ConflictError, IntegrityError, UntrustedModelError: as :meth:`load`.
            UserCodeError: when the model raises while scoring a chunk.
            ConfigurationError: when ``executor="ray"`` and ray is not installed.
        """
        version = self.resolve(uri)
        trust = TrustContext(trusted=self.queries.is_trusted(version.name, version.version))
        job = ScoreJob(self._store, self._blobs, self._actor, version,
                       load_version(self._blobs, version, trust), trust)
        return score(job, source, output, options or ScoreOptions())

    # -- reproducibility: verify, export, import (registry.verify, registry.bundle_*) -------

    def verify(self, uri: str | ModelURI, *, timeout: float = DEFAULT_TIMEOUT) -> VerifyReport:
        """Load the version's artifact in a fresh process, score its holdout, compare outputs.

        Raises:
            NotFoundError: when the version or its holdout sample does not exist.
            UntrustedModelError: when its flavor needs a trust decision it lacks.
        """
        version = self.resolve(uri)
        return verify_version(self._blobs, version,
                              self.queries.is_trusted(version.name, version.version), timeout)

    def export(self, uri: str | ModelURI, path: str | Path) -> ExportedBundle:
        """Write the version (artifact, metadata, environment, holdout) as a bundle file.

        Raises:
            AlreadyExistsError, IntegrityError: see ``bundle_export.write_bundle``.
        """
        version = self.resolve(uri)
        return write_bundle(self._blobs, version,
                            self.queries.is_trusted(version.name, version.version), Path(path))

    def import_bundle(self, path: str | Path, name: str | None = None) -> ImportedVersion:
        """Register the version in a bundle here (as ``name`` if given); trust is not carried.

        Raises:
            IntegrityError: naming the member when a check fails (nothing is written).
        """
        with open_bundle(Path(path)) as bundle:
            version = self.record_version(bundle.new_version(name), bundle.payloads())
            return bundle.imported(version)

    # -- environment and card ----------------------------------------------------------------

    def environment_lock(self, uri: str | ModelURI) -> str:
        """Return the pip requirements lock of the environment the version was registered in.

        Raises:
            IntegrityError: when the environment record is missing or altered.
        """
        version = self.resolve(uri)
        return environment_check.lock(
            environment_check.read_recorded(self._blobs, version.environment, version.uri))

    def environment_diff(self, uri: str | ModelURI) -> list[EnvironmentDifference]:
        """Return how this process's environment differs from the version's recorded one.

        Differences in the packages that matter to the version's flavor are warnings
        (``environment_check.KEY_PACKAGES``); the rest are ``info``.

        Raises:
            IntegrityError: when the environment record is missing or altered.
        """
        version = self.resolve(uri)
        recorded = environment_check.read_recorded(self._blobs, version.environment,
                                                   version.uri)
        return environment_check.compare(recorded, environment(), version.flavor)

    def model_card(self, uri: str | ModelURI, format: CardFormat = "markdown") -> str:
        """Return the version's model card as Markdown or as JSON text (``registry.model_card``).

        Raises:
            InvalidArgumentError: when ``format`` is neither ``markdown`` nor ``json``.
        """
        details = self.get(uri)
        version = details.version
        card = build_card(version, details.aliases, details.trust,
                          snapshots(self._store, version.datasets))
        return render(card, format)
