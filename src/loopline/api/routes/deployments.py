"""``/deployments``: routes between model versions, canary rollouts, rollback and history.

Reading needs ``read``; every change needs ``write`` (the service also authorises per model
and asks the gate, except for rollback, pause, resume and evacuation, which never ask it);
one tick of the rollout controller (``/rollouts/run``) needs ``admin``, since it moves
every rolling-out deployment's canary whatever model it serves.
Bodies mirror the records the answers carry: a route is ``{model, version, weight, role}``
and a canary plan ``{steps, analysis: {interval, ...}}`` as in ``Deployment.canary`` (an
interval is seconds or an ISO 8601 duration). Paths that are not a deployment's name start
with a segment no name can take (``-``) or have no ``GET`` twin (``/evacuate``,
``/rollouts/run``), so no deployment name is shadowed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from loopline.api.auth import Admin, Reader, Writer
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import no_nul
from loopline.app import Workspace
from loopline.core.deployments import (
    WEIGHT_TOTAL,
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentChange,
    RolloutVerdict,
    Route,
    RouteRole,
    Strategy,
)
from loopline.deploy.evacuation import Evacuation
from loopline.loop.rollout import DEFAULT_SETTLE, MAX_SETTLE, RolloutController, WindowRules

router = APIRouter(prefix="/deployments", tags=["deployments"])

MAX_NAME = 128
MAX_TEXT = 2_000
MAX_ROUTES = 64
MAX_STEPS = 100
MAX_VERSION = 2**31 - 1
MAX_HISTORY = 1_000  # the most revisions or verdicts the service lists
Name = Annotated[str, Path(max_length=MAX_NAME, description="The deployment's name.")]
# PostgreSQL text cannot hold NUL: refused here (422) rather than by the database (503).
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(no_nul)]
ModelName = Annotated[str, Field(max_length=MAX_NAME, description="A registered model.")]
Version = Annotated[int, Field(strict=True, ge=1, le=MAX_VERSION)]
Count = Annotated[int, Field(strict=True, ge=1, le=1_000_000_000)]
Percent = Annotated[float, Field(gt=0, le=WEIGHT_TOTAL)]
Key = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(no_nul)]
_POLICY = AnalysisPolicy()


class Forbid(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class RouteSpec(Forbid):
    """A share of traffic (``weight`` percent) to one model version in ``role``."""

    model: ModelName
    version: Version
    weight: float = Field(default=WEIGHT_TOTAL, ge=0, le=WEIGHT_TOTAL)
    role: RouteRole = RouteRole.PRIMARY

    def route(self) -> Route:
        """Return the route this describes."""
        return Route(self.model, self.version, self.weight, self.role)


class AnalysisSpec(Forbid):
    """How a canary is judged against the primary between steps (see ``AnalysisPolicy``)."""

    interval: timedelta = Field(default=_POLICY.interval, gt=timedelta(0),
                                le=timedelta(days=1),
                                description="Seconds or an ISO 8601 duration, at most 1 day.")
    max_error_rate_increase: float = Field(default=_POLICY.max_error_rate_increase, gt=0,
                                           le=1)
    max_p99_ratio: float = Field(default=_POLICY.max_p99_ratio, gt=0, le=1e6)
    min_samples: Count = _POLICY.min_samples
    passes_to_promote: Count = _POLICY.passes_to_promote
    failures_to_rollback: Count = _POLICY.failures_to_rollback
    extra: dict[Key, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=64)

    def policy(self) -> AnalysisPolicy:
        """Return the policy this describes."""
        return AnalysisPolicy(self.interval, self.max_error_rate_increase, self.max_p99_ratio,
                              self.min_samples, self.passes_to_promote,
                              self.failures_to_rollback, dict(self.extra))


class CanarySpec(Forbid):
    """The canary's percent at each step (increasing, ending at 100) and its analysis."""

    steps: list[Percent] = Field(default=list(CanaryPlan().steps), min_length=1,
                                 max_length=MAX_STEPS)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    def plan(self) -> CanaryPlan:
        """Return the plan this describes (the service checks the steps)."""
        return CanaryPlan(tuple(self.steps), self.analysis.policy())


Routes = Annotated[list[RouteSpec], Field(min_length=1, max_length=MAX_ROUTES)]


class NewDeployment(Forbid):
    """A deployment to create: its routes, strategy and the plan later canaries use."""

    name: str = Field(max_length=MAX_NAME)
    routes: Routes
    strategy: Strategy
    canary: CanarySpec | None = None
    sticky_key: str | None = Field(default=None, max_length=MAX_NAME + 8,
                                   description="header:NAME or field:NAME (A/B arms).")
    description: Text | None = None
    reason: Text | None = None


class RoutesChange(Forbid):
    """New routes for a deployment, switched to at once, and why."""

    routes: Routes
    reason: Text
    sticky_key: str | None = Field(default=None, max_length=MAX_NAME + 8)


class VersionChange(Forbid):
    """A model version to switch to as the sole primary, and why."""

    model: ModelName
    version: Version
    reason: Text | None = None


class CanaryStart(Forbid):
    """A version to roll out as a canary, the plan (the stored one when null) and why."""

    model: ModelName
    version: Version
    canary: CanarySpec | None = None
    reason: Text | None = None


class Reason(Forbid):
    """Why, kept in the history and the audit log (a default when null)."""

    reason: Text | None = None


class RequiredReason(Forbid):
    """Why, kept in the history and the audit log."""

    reason: Text


class EvacuationRequest(Forbid):
    """A model version to take out of every deployment that routes to it, and why."""

    model: ModelName
    version: Version
    reason: Text


class RolloutTick(Forbid):
    """How the controller's tick cuts windows."""

    # Never sooner than the default: a window judged before its last bucket's final counts
    # are flushed would decide on part of its traffic.
    settle: timedelta | None = Field(
        default=None, ge=DEFAULT_SETTLE, le=MAX_SETTLE,
        description=f"How long after a window ends it is judged: "
                    f"{DEFAULT_SETTLE.total_seconds():.0f} s (the default) to 1 hour.")


class _RequestTick(RolloutController):
    """A controller for one tick asked over HTTP: it leaves serving stats alone.

    Pruning them is the background duty's (``api.background``, ``loopline scheduler``),
    at most once an hour; a request must not delete rows for every deployment.
    """

    def prune(self, now: datetime, force: bool = False) -> int:
        """Delete nothing (see the class); return 0."""
        return 0


class ResolvedVersion(BaseModel):
    """The model version a URI names now."""

    model: str
    version: int


# -- paths that are not a deployment's name ----------------------------------------------------


@router.get("/-/resolve", response_model=ResolvedVersion)
def resolve_version(ws: Reader, uri: Annotated[str, Query(
        max_length=300, description="models:/NAME/VERSION or models:/NAME@ALIAS"),
        AfterValidator(no_nul)]) -> ResolvedVersion:
    """Return the model version ``uri`` names now (an alias is followed)."""
    model, version = ws.deployments.resolve(uri)
    return ResolvedVersion(model=model, version=version)


@router.post("/evacuate", response_model=list[Evacuation])
def evacuate(body: EvacuationRequest, ws: Writer) -> list[Evacuation]:
    """Take a version out of every deployment routing to it; say what happened to each."""
    return ws.deployments.evacuate(body.model, body.version, body.reason)


def _stored(ws: Workspace, verdict: RolloutVerdict) -> bool:
    # Another controller may have stored the same window first; the service then ignored
    # this verdict, and the answer names only the verdicts this tick stored.
    # A verdict this tick stored is among the deployment's newest.
    return any(kept.id == verdict.id for kept in ws.deployments.verdicts(verdict.deployment))


@router.post("/rollouts/run", response_model=list[RolloutVerdict])
def run_rollouts(ws: Admin, body: RolloutTick | None = None) -> list[RolloutVerdict]:
    """Judge each rolling-out canary whose window has elapsed, once (``rollouts run --once``).

    Safe to call at any rate and beside running controllers: windows come from stored
    state, a window is judged once, and a repeated verdict is ignored. Verdicts are applied
    (and audited) as the token's user; serving stats are not pruned (the background duty
    does). Answers the verdicts this call stored.
    """
    rules = WindowRules(settle=None if body is None else body.settle)
    controller = _RequestTick(ws.store, ws.deployments, ws.store.clock, rules)
    return [verdict for verdict in controller.tick() if _stored(ws, verdict)]


# -- deployments ---------------------------------------------------------------------------------


@router.get("", response_model=Page[Deployment])
def list_deployments(ws: Reader, paging: Paging) -> Page[Deployment]:
    """List deployments by name."""
    return paginate(ws.deployments.list(), paging)


@router.post("", status_code=201, response_model=Deployment)
def create_deployment(body: NewDeployment, ws: Writer) -> Deployment:
    """Create a deployment serving its routes under its strategy (a canary starts later)."""
    canary = None if body.canary is None else body.canary.plan()
    return ws.deployments.create(body.name, [r.route() for r in body.routes], body.strategy,
                                 canary, body.sticky_key, body.description,
                                 reason=body.reason)


@router.get("/{name}", response_model=Deployment)
def show_deployment(name: Name, ws: Reader) -> Deployment:
    """Show a deployment: its routes, state and where a rollout stands."""
    return ws.deployments.get(name)


@router.patch("/{name}", response_model=Deployment)
def update_deployment(name: Name, body: RoutesChange, ws: Writer) -> Deployment:
    """Switch to new routes at once; the routes it had become its last good ones."""
    return ws.deployments.update(name, [r.route() for r in body.routes], body.reason,
                                 sticky_key=body.sticky_key)


@router.get("/{name}/history", response_model=Page[DeploymentChange])
def deployment_history(name: Name, ws: Reader, paging: Paging) -> Page[DeploymentChange]:
    """List a deployment's revisions, newest first (the newest 1,000 at most).

    Raises:
        InvalidArgumentError: naming ``cursor`` past the newest 1,000.
    """
    return paginate(ws.deployments.history(name, paging.window(MAX_HISTORY)), paging)


@router.get("/{name}/verdicts", response_model=Page[RolloutVerdict])
def deployment_verdicts(name: Name, ws: Reader, paging: Paging) -> Page[RolloutVerdict]:
    """List a deployment's canary verdicts, newest first (the newest 1,000 at most).

    Raises:
        InvalidArgumentError: naming ``cursor`` past the newest 1,000.
    """
    return paginate(ws.deployments.verdicts(name, paging.window(MAX_HISTORY)), paging)


@router.post("/{name}/replace", response_model=Deployment)
def replace_version(name: Name, body: VersionChange, ws: Writer) -> Deployment:
    """Switch to one version as the sole primary (blue/green); shadows are kept."""
    return ws.deployments.replace(name, body.model, body.version, body.reason)


@router.post("/{name}/canary", response_model=Deployment)
def start_canary(name: Name, body: CanaryStart, ws: Writer) -> Deployment:
    """Start a canary rollout of a version at its plan's first step."""
    plan = None if body.canary is None else body.canary.plan()
    return ws.deployments.start_canary(name, (body.model, body.version), plan,
                                       reason=body.reason)


@router.post("/{name}/promote", response_model=Deployment)
def promote(name: Name, ws: Writer, body: Reason | None = None) -> Deployment:
    """Give the canary all traffic now, ending the rollout."""
    return ws.deployments.promote(name, reason=None if body is None else body.reason)


@router.post("/{name}/rollback", response_model=Deployment)
def rollback(name: Name, body: RequiredReason, ws: Writer) -> Deployment:
    """Return to the last good routes (never blocked by policy, always audited)."""
    return ws.deployments.rollback(name, body.reason)


@router.post("/{name}/pause", response_model=Deployment)
def pause(name: Name, ws: Writer, body: Reason | None = None) -> Deployment:
    """Hold a rollout at its step; no analysis moves it until it is resumed."""
    return ws.deployments.pause(name, None if body is None else body.reason)


@router.post("/{name}/resume", response_model=Deployment)
def resume(name: Name, ws: Writer, body: Reason | None = None) -> Deployment:
    """Resume a paused rollout at its step; its analysis window starts again."""
    return ws.deployments.resume(name, None if body is None else body.reason)
