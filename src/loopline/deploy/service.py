"""Deployments as a workspace offers them: create, update, canary, promote, roll back, pause.

Every change is one write transaction (``store.deployment_records``): the deployment is read
under its lock, the state machine checked (``deploy.steps.require``), the gate asked once the
transaction holds the append lock (``deploy.gating``), and the new revision written with its
history row, audit entry and ``deployment.changed`` event. ``rollback``, ``pause`` and
``resume`` never ask the gate (a rollback must always be possible) but are authorised
(``write`` on each model the deployment routes to) and audited like the rest.

Canary verdicts (``apply_verdict``) come from the rollout controller; see ``deploy.rollouts``.

Quarantined and archived versions never gain a route: every change that sets routes checks
each version's status inside its transaction (version rows locked). ``promote`` of a
quarantined canary is refused; a verdict for a rollout whose canary was quarantined rolls it
back; ``rollback`` never restores a quarantined ``last_good`` (``rollouts.rollback_target``:
it falls back to the current primary alone at 100 %, said in history and audit, or is
refused with ``ConflictError`` naming the version).

Quarantine itself is always allowed and changes no deployment: a running model server keeps
serving the version it has loaded until the deployment changes (a new revision, picked up on
the server's next poll). To take the version out of service, call ``evacuate`` (see
``deploy.evacuation``), or roll back or update each deployment that routes to it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence

from loopline.core.deployments import (
    CanaryPlan,
    Deployment,
    DeploymentChange,
    DeploymentState,
    RolloutVerdict,
    Route,
    RouteRole,
    Strategy,
)
from loopline.core.errors import AlreadyExistsError, InvalidArgumentError
from loopline.core.governance import Permission
from loopline.core.models import version_uri
from loopline.core.names import validate_name, validate_text
from loopline.core.ports import Authorizer, Gate, authorize_if_wired
from loopline.deploy import evacuation, rollouts
from loopline.deploy.evacuation import Evacuation
from loopline.deploy.gating import allow_deploy
from loopline.deploy.specs import (
    check_strategy,
    infer_strategy,
    parse_strategy,
    validate_sticky_key,
)
from loopline.deploy.steps import canary_route, promoted, require, validate_plan, with_canary
from loopline.deploy.steps import require_single_primary as single_primary
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import deployment_records as records
from loopline.store.deployment_queries import DeploymentQueries
from loopline.store.model_queries import ModelQueries

MAX_TEXT = 2_000
_S = DeploymentState
SETTLED = (_S.ACTIVE, _S.ROLLED_BACK)  # no rollout in progress
IN_ROLLOUT = (_S.ROLLING_OUT, _S.PAUSED)

Build = Callable[[UnitOfWork, Deployment], tuple[Deployment, records.Note]]
Within = Callable[[UnitOfWork, Deployment], None]
"""A caller's own write, run inside a change's transaction with the deployment as written.

Its rows commit with the change or not at all; an exception from it rolls the change back.
Playbooks use it to mark an action done in the same transaction as its rollback or canary.
"""


def _reason(value: str | None, default: str) -> str:
    return default if value is None else validate_text(value, "reason", MAX_TEXT)


class DeploymentService:
    """The deployments of one workspace: their routes, rollouts and history, behind a gate."""

    def __init__(self, store: MetadataStore, gate: Gate, actor: str,
                 authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._gate = gate
        self._actor = actor
        self._authorizer = authorizer
        self.queries = DeploymentQueries(store.engine)
        self._models = ModelQueries(store.engine)

    # -- reading -----------------------------------------------------------------------------

    def get(self, name: str) -> Deployment:
        """Return deployment ``name``.

        Raises:
            NotFoundError: when there is none.
        """
        return self.queries.get(validate_name(name, "name"))

    def list(self) -> list[Deployment]:
        """List every deployment, by name."""
        return self.queries.list()

    def history(self, name: str, limit: int = 100) -> builtins.list[DeploymentChange]:
        """List the newest ``limit`` revisions of ``name``, newest first.

        Raises:
            NotFoundError: when there is no deployment ``name``.
        """
        return self.queries.history(validate_name(name, "name"), limit)

    def verdicts(self, name: str, limit: int = 50) -> builtins.list[RolloutVerdict]:
        """List the newest ``limit`` canary verdicts of ``name``, newest first.

        Raises:
            NotFoundError: when there is no deployment ``name``.
        """
        return self.queries.verdicts(validate_name(name, "name"), limit)

    def resolve(self, uri: str) -> tuple[str, int]:
        """Return the model and version number ``uri`` names now (aliases are followed).

        Raises:
            InvalidArgumentError: naming ``model`` when the text is not a model URI.
            NotFoundError: naming the model, version or alias that does not exist.
        """
        version = self._models.resolve(uri)
        return version.name, version.version

    # -- creating and changing routes ----------------------------------------------------------

    def create(  # noqa: PLR0913 - the parts of a deployment, as the contract names them
            self, name: str, routes: Sequence[Route], strategy: Strategy | str,
            canary: CanaryPlan | None = None, sticky_key: str | None = None,
            description: str | None = None, *, reason: str | None = None) -> Deployment:
        """Create deployment ``name`` serving ``routes`` under ``strategy`` (not ``canary``).

        ``canary`` is kept as the plan later rollouts use when they name none.

        Raises:
            InvalidArgumentError: naming ``name``, ``strategy``, ``sticky_key``, ``routes[...]``,
                ``canary.*``, ``description`` or ``reason``.
            AlreadyExistsError: when a deployment ``name`` exists.
            NotFoundError: naming a version that does not exist.
            ConflictError: naming a version that is quarantined or archived.
            PolicyDeniedError: when the gate denies a version (nothing is written).
        """
        validate_name(name, "name")
        kind = parse_strategy(strategy)
        key = None if sticky_key is None else validate_sticky_key(sticky_key)
        checked = check_strategy(kind, tuple(routes), key)
        plan = None if canary is None else validate_plan(canary)
        text = None if description is None else validate_text(description, "description",
                                                              MAX_TEXT)
        note = _reason(reason, f"created ({kind})")
        with self._store.write(self._actor) as uow:
            if records.exists(uow, name):
                raise AlreadyExistsError("deployment", name)
            records.check_servable(uow, checked)
            gate = allow_deploy(uow, self._gate, self._actor, name, {
                "before": (), "after": checked, "strategy": str(kind), "action": "create"})
            now = uow.now()
            created = Deployment(name, kind, checked, _S.ACTIVE, 1, now, self._actor, now,
                                 self._actor, canary=plan, sticky_key=key, description=text)
            return records.insert(uow, created, records.Note("created", note, gate))

    def update(self, name: str, routes: Sequence[Route], reason: str, *,
               sticky_key: str | None = None) -> Deployment:
        """Switch ``name`` to ``routes`` at once; the routes it had become ``last_good``.

        The strategy follows the routes: ``ab`` with several answering arms (it needs a
        sticky key, given here or already set), ``shadow`` with mirrors, else ``replace``.

        Raises:
            InvalidArgumentError: naming ``routes[...]``, ``sticky_key`` or ``reason``.
            NotFoundError: when the deployment or a version does not exist.
            InvalidTransitionError: when a rollout is in progress (promote or roll back first).
            ConflictError: naming a version that is quarantined or archived.
            PolicyDeniedError: when the gate denies a version (nothing is written).
        """
        wanted = tuple(routes)
        key = None if sticky_key is None else validate_sticky_key(sticky_key)
        return self._switch(name, lambda current: wanted, _reason(reason, ""), key)

    def replace(self, name: str, model: str, version: int, reason: str | None = None
                ) -> Deployment:
        """Switch ``name`` to ``models:/MODEL/VERSION`` as its sole primary (blue/green).

        Shadow routes are kept; the routes it had become ``last_good``.

        Raises:
            As :meth:`update`.
        """
        validate_name(model, "model")
        new = Route(model, version, 100.0, RouteRole.PRIMARY)

        def routes(current: Deployment) -> tuple[Route, ...]:
            return (new, *(r for r in current.routes
                           if r.role is RouteRole.SHADOW and r.uri != new.uri))

        return self._switch(name, routes, _reason(reason, f"replaced by {new.uri}"), None)

    def _switch(self, name: str, routes: Callable[[Deployment], tuple[Route, ...]],
                reason: str, sticky_key: str | None) -> Deployment:
        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            wanted = routes(current)
            key = sticky_key or current.sticky_key
            kind = infer_strategy(wanted)
            checked = check_strategy(kind, wanted, key)
            records.check_servable(uow, checked)
            gate = allow_deploy(uow, self._gate, self._actor, name, {
                "before": current.routes, "after": checked, "strategy": str(kind),
                "action": "update"})
            after = self._settled(uow, current, checked, _S.ACTIVE, strategy=kind,
                                  sticky_key=key, last_good=current.routes)
            return after, records.Note("updated", reason or f"routes updated ({kind})", gate)

        return self._change(name, SETTLED, _S.ACTIVE, build)

    # -- rollouts ----------------------------------------------------------------------------

    def start_canary(self, name: str, canary_uri_version: tuple[str, int],
                     plan: CanaryPlan | None = None, *, reason: str | None = None,
                     within: Within | None = None) -> Deployment:
        """Start a canary rollout of ``(model, version)`` on ``name`` at the plan's first step.

        The primary keeps ``100 - steps[0]`` percent; shadows are kept; the routes before
        become ``last_good``. Without ``plan``, the deployment's stored plan (or the default)
        is used. ``within`` runs inside the same transaction (see ``Within``).

        Raises:
            InvalidArgumentError: naming ``canary.*`` or ``model`` (the primary itself).
            NotFoundError: when the deployment or the version does not exist.
            InvalidTransitionError: when a rollout is in progress already.
            ConflictError: when the deployment splits traffic between arms (A/B), or the
                version is quarantined or archived.
            PolicyDeniedError: when the gate denies the version (nothing is written).
        """
        model, version = canary_uri_version
        validate_name(model, "model")
        checked_plan = None if plan is None else validate_plan(plan)

        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            chosen = checked_plan or current.canary or CanaryPlan()
            single_primary(current, model, version)
            routes = with_canary(current.routes, model, version, chosen.steps[0])
            records.check_servable(uow, routes)
            gate = allow_deploy(uow, self._gate, self._actor, name, {
                "before": current.routes, "after": routes, "strategy": str(Strategy.CANARY),
                "action": "start_canary", "steps": list(chosen.steps)})
            now = uow.now()
            after = self._next(uow, current, routes=routes, strategy=Strategy.CANARY,
                               state=_S.ROLLING_OUT, canary=chosen, step=0,
                               step_started_at=now, passes=0, failures=0,
                               last_good=current.routes)
            text = _reason(reason, f"canary {version_uri(model, version)} started at "
                                   f"{chosen.steps[0]:g}%")
            return after, records.Note("canary_started", text, gate)

        return self._change(name, SETTLED, _S.ROLLING_OUT, build, within)

    def promote(self, name: str, *, reason: str | None = None) -> Deployment:
        """Give the canary all traffic now as the sole primary; the rollout ends ``active``.

        Raises:
            NotFoundError: when there is no deployment ``name``.
            InvalidTransitionError: when no rollout is in progress.
            ConflictError: naming the canary (or a shadow) when it is quarantined or archived.
            PolicyDeniedError: when the gate denies the canary (nothing is written).
        """
        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            routes = promoted(current.routes)
            records.check_servable(uow, routes)
            gate = allow_deploy(uow, self._gate, self._actor, name, {
                "before": current.routes, "after": routes, "strategy": str(current.strategy),
                "action": "promote"})
            after = self._settled(uow, current, routes, _S.ACTIVE)
            text = _reason(reason, f"{canary_route(current.routes).uri} promoted by hand")
            return after, records.Note("promoted", text, gate)

        return self._change(name, IN_ROLLOUT, _S.ACTIVE, build)

    def rollback(self, name: str, reason: str, *, within: Within | None = None) -> Deployment:
        """Return ``name`` to its last good routes; never blocked by policy, always audited.

        When ``last_good`` holds a quarantined or archived version, the deployment instead
        routes 100 % to its current primary alone (canary, other arms and shadows dropped),
        provided that primary may serve; the history reason and the audit entry say so.
        ``within`` runs inside the same transaction (see ``Within``).

        Raises:
            InvalidArgumentError: naming ``reason`` when it is blank or too long.
            NotFoundError: when there is no deployment ``name``.
            InvalidTransitionError: when it is rolled back already.
            ConflictError: when it has no last good routes (it never changed), or naming the
                unservable version of ``last_good`` when there is nothing servable to fall
                back to (the current primary is unservable, or routes alone already).
            AccessDeniedError: when the actor may not write a model it routes to.
        """
        text = validate_text(reason, "reason", MAX_TEXT)

        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            self._authorize(current, current.last_good)
            target = rollouts.rollback_target(uow, current)
            note = text if target.fallback is None else f"{text}; {target.fallback}"
            return rollouts.rolled_back(uow, current, self._actor, target.routes), \
                records.Note("rolled_back", note, None, target.details)

        return self._change(name, (_S.ACTIVE, *IN_ROLLOUT), _S.ROLLED_BACK, build, within)

    def pause(self, name: str, reason: str | None = None) -> Deployment:
        """Hold a rollout at its step: no analysis moves it until it is resumed.

        Raises:
            NotFoundError: when there is no deployment ``name``.
            InvalidTransitionError: when it is not rolling out.
            AccessDeniedError: when the actor may not write a model it routes to.
        """
        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            self._authorize(current)
            after = self._next(uow, current, state=_S.PAUSED)
            return after, records.Note("paused", _reason(reason, "paused by hand"))

        return self._change(name, (_S.ROLLING_OUT,), _S.PAUSED, build)

    def resume(self, name: str, reason: str | None = None) -> Deployment:
        """Resume a paused rollout at its step; the step's analysis window starts again now.

        Raises:
            NotFoundError: when there is no deployment ``name``.
            InvalidTransitionError: when it is not paused.
            AccessDeniedError: when the actor may not write a model it routes to.
        """
        def build(uow: UnitOfWork, current: Deployment) -> tuple[Deployment, records.Note]:
            self._authorize(current)
            after = self._next(uow, current, state=_S.ROLLING_OUT, step_started_at=uow.now(),
                               passes=0, failures=0)
            return after, records.Note("resumed", _reason(reason, "resumed by hand"))

        return self._change(name, (_S.PAUSED,), _S.ROLLING_OUT, build)

    def apply_verdict(self, verdict: RolloutVerdict) -> Deployment:
        """Store a canary verdict and act on it; return the deployment as it is now.

        A verdict already stored, for another revision or step, for a window judged
        already, or for a deployment not rolling out (paused, say) is ignored: nothing is
        written. A step the gate denies pauses the rollout (recorded in its history) instead
        of raising, so the controller keeps running. See ``deploy.rollouts``.

        Raises:
            InvalidArgumentError: naming ``verdict.<field>`` when the verdict is malformed.
            NotFoundError: when its deployment does not exist.
        """
        rollouts.check_verdict(verdict)
        with self._store.write(self._actor) as uow:
            current = records.lock(uow, verdict.deployment)
            return rollouts.apply(uow, rollouts.Context(self._gate, self._actor), current,
                                  verdict)

    def evacuate(self, model: str, version: int, reason: str) -> builtins.list[Evacuation]:
        """Take ``models:/MODEL/VERSION`` out of every deployment routing to it; report each.

        One transaction per deployment (``deploy.evacuation``): a shadow route is removed, an
        answering one rolled back, else it is reported ``refused``. Never asks the gate.

        Raises:
            InvalidArgumentError: naming ``model``, ``version`` or ``reason``.
        """
        validate_name(model, "model")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidArgumentError("version", f"{version!r} must be a whole number from 1")
        text = validate_text(reason, "reason", MAX_TEXT)
        uri, act = version_uri(model, version), evacuation.evacuate_one
        return [act(self._store, self._actor, self._authorize, found, uri, text)
                for found in self.queries.list() if any(r.uri == uri for r in found.routes)]

    # -- helpers -----------------------------------------------------------------------------

    def _change(self, name: str, allowed: Collection[DeploymentState],
                target: DeploymentState, build: Build, within: Within | None = None
                ) -> Deployment:
        validate_name(name, "name")
        with self._store.write(self._actor) as uow:
            current = records.lock(uow, name)
            require(current, allowed, target)
            after, note = build(uow, current)
            if after.routes == current.routes and after.state is current.state and \
                    after.sticky_key == current.sticky_key:
                saved = current  # nothing would change: write nothing
            else:
                saved = records.save(uow, current, after, note)
            if within is not None:
                within(uow, saved)
            return saved

    def _next(self, uow: UnitOfWork, current: Deployment, **changes: object) -> Deployment:
        return rollouts.next_revision(uow, current, self._actor, **changes)

    def _settled(self, uow: UnitOfWork, current: Deployment, routes: tuple[Route, ...],
                 state: DeploymentState, **changes: object) -> Deployment:
        changes.setdefault("strategy", infer_strategy(routes))
        return self._next(uow, current, routes=routes, state=state, step=0,
                          step_started_at=None, passes=0, failures=0, **changes)

    def _authorize(self, current: Deployment, extra: Sequence[Route] = ()) -> None:
        for model in dict.fromkeys(r.model for r in (*current.routes, *extra)):
            authorize_if_wired(self._authorizer, self._actor, Permission.WRITE, model)


__all__ = ["DeploymentService", "Within"]
