"""Deployments: a name and the routes that split its traffic between model versions.

Pure: no I/O. A route sends a share of requests (``weight``, percent) to one model version
in a ``role``: ``primary`` (the version that answers by default), ``canary`` (a new version
taking a growing share during a rollout), ``shadow`` (a copy of the traffic, ``weight``
percent of it, whose answers are logged and never returned). The answering routes' weights
sum to 100. A strategy says how routes change: ``replace`` switches at once (blue/green),
``canary`` moves through ``CanaryPlan.steps`` with an analysis between steps, ``ab`` keeps a
fixed split with sticky assignment by a request key, ``shadow`` mirrors to a version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name


class RouteRole(StrEnum):
    """What a route's version does with the requests it gets."""

    PRIMARY = "primary"
    CANARY = "canary"
    SHADOW = "shadow"


class Strategy(StrEnum):
    """How a deployment's routes change."""

    REPLACE = "replace"
    CANARY = "canary"
    AB = "ab"
    SHADOW = "shadow"


class DeploymentState(StrEnum):
    """Where a deployment stands; ``rolling_out`` is a canary between its first and last step."""

    ACTIVE = "active"
    ROLLING_OUT = "rolling_out"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"


ANSWERING = (RouteRole.PRIMARY, RouteRole.CANARY)
WEIGHT_TOTAL = 100.0
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Route:
    """``weight`` percent of requests go to ``models:/MODEL/VERSION`` in ``role``."""

    model: str
    version: int
    weight: float
    role: RouteRole = RouteRole.PRIMARY

    @property
    def uri(self) -> str:
        """The version's URI, ``models:/MODEL/VERSION``."""
        return f"models:/{self.model}/{self.version}"

    def as_record(self) -> dict[str, Any]:
        """Return the route as JSON-ready data."""
        return {"model": self.model, "version": self.version, "weight": self.weight,
                "role": str(self.role)}


def route_from_record(record: Mapping[str, Any], field: str = "route") -> Route:
    """Return the route ``record`` describes (as ``Route.as_record`` writes it).

    Raises:
        InvalidArgumentError: naming ``field.<key>`` for a missing or invalid value.
    """
    try:
        model = validate_name(str(record["model"]), f"{field}.model")
        version = record["version"]
        weight = record.get("weight", WEIGHT_TOTAL)
        role = RouteRole(str(record.get("role", RouteRole.PRIMARY)))
    except KeyError as missing:
        raise InvalidArgumentError(f"{field}.{missing.args[0]}", "is required") from None
    except ValueError:
        raise InvalidArgumentError(f"{field}.role", f"use one of {', '.join(RouteRole)}") \
            from None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidArgumentError(f"{field}.version", f"{version!r} must be a version >= 1")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or \
            not 0 <= float(weight) <= WEIGHT_TOTAL:
        raise InvalidArgumentError(f"{field}.weight", f"{weight!r} must be a percent, 0-100")
    return Route(model, version, float(weight), role)


def check_routes(routes: Sequence[Route], field: str = "routes") -> tuple[Route, ...]:
    """Return ``routes`` when they make a servable split.

    Exactly one primary; answering routes (primary and canaries) weigh 100 in total; a
    version answers through at most one route; shadows mirror ``weight`` percent of traffic.

    Raises:
        InvalidArgumentError: naming ``field`` and what is wrong.
    """
    if not routes:
        raise InvalidArgumentError(field, "a deployment needs at least one route")
    primaries = [r for r in routes if r.role is RouteRole.PRIMARY]
    if len(primaries) != 1:
        raise InvalidArgumentError(field, f"needs exactly one primary route, has "
                                          f"{len(primaries)}")
    answering = [r for r in routes if r.role in ANSWERING]
    total = sum(r.weight for r in answering)
    if abs(total - WEIGHT_TOTAL) > _TOLERANCE:
        raise InvalidArgumentError(field, f"primary and canary weights must sum to 100, "
                                          f"not {total:g}")
    uris = [r.uri for r in answering]
    if len(set(uris)) != len(uris):
        raise InvalidArgumentError(field, "a version may answer through one route only")
    return tuple(routes)


@dataclass(frozen=True, slots=True)
class AnalysisPolicy:
    """How a canary is judged against the primary between steps.

    Windows of whole serving-stats buckets, ``interval`` long, are compared: the canary's error rate
    may exceed the primary's by at most ``max_error_rate_increase`` (absolute), its p99
    latency may be at most ``max_p99_ratio`` times the primary's; both need at least
    ``min_samples`` requests each, else the window is inconclusive and keeps growing, unless
    the canary's errors alone exceed what the threshold allows at ``min_samples`` (then it
    fails at once). ``passes_to_promote``
    passing intervals move to the next step; ``failures_to_rollback`` failing ones roll back.
    ``extra`` holds thresholds other subsystems supply (drift, quality deltas).
    """

    interval: timedelta = timedelta(minutes=1)
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    min_samples: int = 100
    passes_to_promote: int = 1
    failures_to_rollback: int = 1
    extra: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    """The canary's share at each step (percent, increasing, ending at 100) and its analysis."""

    steps: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0)
    analysis: AnalysisPolicy = field(default_factory=AnalysisPolicy)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment as stored: its strategy, routes now, and where a rollout stands.

    ``revision`` grows with every change of routes or state (the server swaps its routing
    table when it sees a new one); ``last_good`` are the routes a rollback returns to.
    ``sticky_key`` names the request header or field whose hash assigns an A/B arm.
    """

    name: str
    strategy: Strategy
    routes: tuple[Route, ...]
    state: DeploymentState
    revision: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    canary: CanaryPlan | None = None
    sticky_key: str | None = None
    step: int = 0
    step_started_at: datetime | None = None
    passes: int = 0
    failures: int = 0
    last_good: tuple[Route, ...] = ()
    description: str | None = None

    @property
    def primary(self) -> Route:
        """The primary route."""
        return next(r for r in self.routes if r.role is RouteRole.PRIMARY)


@dataclass(frozen=True, slots=True)
class DeploymentChange:
    """One entry of a deployment's history: the routes and state a revision set, and why."""

    name: str
    revision: int
    routes: tuple[Route, ...]
    state: DeploymentState
    reason: str
    actor: str
    at: datetime
    gate: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What one version of a deployment served over a window: counts and a latency sketch."""

    requests: int
    errors: int
    latency_sketch: Mapping[str, Any]

    @property
    def error_rate(self) -> float:
        """Errors per request (0 when there were none)."""
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class RolloutVerdict:
    """A canary analysis: the window, the numbers it used and what it decided."""

    id: str
    deployment: str
    revision: int
    step: int
    window_start: datetime
    window_end: datetime
    verdict: str  # "pass", "fail" or "inconclusive"
    numbers: Mapping[str, Any]
    decided_at: datetime
