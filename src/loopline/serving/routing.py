r"""The routing table: which loaded model version answers (and which shadows) each request.

Immutable once built, so the server swaps a whole table with one reference assignment and a
request never sees half a change. Per request the work is a dictionary lookup, one random
draw (or one SHA-256 of the sticky key) and a bisection over precomputed cumulative weights.

Sticky assignment hashes ``deployment + "\0" + key`` into [0, 100) with ``hashlib``, so the
same key gets the same arm in every process for as long as the routes stay the same. A shadow
mirrors a request with probability ``weight / 100``; with a key, the decision hashes the key
salted with the shadow's URI, so it is stable per key and independent of the arm choice.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from loopline.core.deployments import ANSWERING, WEIGHT_TOTAL, Deployment, Route, RouteRole
from loopline.core.errors import NotFoundError
from loopline.core.ports import ServableModel

_HASH_SPAN = float(1 << 64)
_UNAVAILABLE_HINT = "its model versions are not loaded yet or failed to load; see the server log"
_UNKNOWN_HINT = "it is not served here"


def sticky_point(deployment: str, key: str, salt: str = "") -> float:
    """Return the stable position of ``key`` in [0, 100) for ``deployment``.

    The same arguments give the same point in every process (SHA-256, not ``hash()``).
    """
    text = f"{deployment}\0{key}" + (f"\0{salt}" if salt else "")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPAN * WEIGHT_TOTAL


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route a request took and the loaded model that serves it."""

    route: Route
    model: ServableModel


@dataclass(frozen=True, slots=True)
class _Entry:
    """One deployment's precomputed split."""

    deployment: Deployment
    primary: RouteChoice
    answering: tuple[RouteChoice, ...]  # weight > 0 only, in route order
    bounds: tuple[float, ...]  # cumulative weights of ``answering``; the last is 100
    shadows: tuple[RouteChoice, ...]

    def pick(self, point: float) -> RouteChoice:
        """Return the answering route whose cumulative span holds ``point`` in [0, 100)."""
        index = bisect.bisect_right(self.bounds, point)
        return self.answering[min(index, len(self.answering) - 1)]


def _entry(deployment: Deployment, models: Mapping[str, ServableModel]) -> _Entry | None:
    """Return the deployment's split, or None when one of its versions has no loaded model."""
    if any(route.uri not in models for route in deployment.routes):
        return None
    choices = [RouteChoice(route, models[route.uri]) for route in deployment.routes]
    primary = next(c for c in choices if c.route.role is RouteRole.PRIMARY)
    answering = tuple(c for c in choices if c.route.role in ANSWERING and c.route.weight > 0)
    if not answering:  # weights are checked to sum to 100; be safe with a 0 % primary anyway
        answering = (primary,)
    bounds, total = [], 0.0
    for choice in answering:
        total += choice.route.weight
        bounds.append(total)
    scale = WEIGHT_TOTAL / total if total > 0 else 1.0
    return _Entry(
        deployment=deployment, primary=primary, answering=answering,
        bounds=tuple(b * scale for b in bounds),
        shadows=tuple(c for c in choices if c.route.role is RouteRole.SHADOW))


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Deployments' splits over loaded models; immutable, safe to share between threads.

    Build it with ``RoutingTable.build``. A deployment whose model versions are not all
    loaded is listed in ``unavailable`` and is not routable; ``ready`` is True when none is.
    """

    _entries: Mapping[str, _Entry]
    unavailable: tuple[str, ...] = ()
    revisions: Mapping[str, int] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def build(cls, deployments: Sequence[Deployment], models: Mapping[str, ServableModel],
              rng: random.Random | None = None) -> RoutingTable:
        """Return the table of ``deployments`` over ``models`` (keyed by ``models:/N/V``).

        ``rng`` draws the weighted choices (seed one in tests). Deployments whose versions
        are missing from ``models`` become ``unavailable``.
        """
        entries: dict[str, _Entry] = {}
        unavailable: list[str] = []
        for deployment in deployments:
            entry = _entry(deployment, models)
            if entry is None:
                unavailable.append(deployment.name)
            else:
                entries[deployment.name] = entry
        revisions = {d.name: d.revision for d in deployments}
        return cls(MappingProxyType(entries), tuple(sorted(unavailable)),
                   MappingProxyType(revisions), rng or random.Random())

    @classmethod
    def empty(cls) -> RoutingTable:
        """Return a table with no deployments."""
        return cls.build((), {})

    @property
    def ready(self) -> bool:
        """Whether every deployment in the table has all its model versions loaded."""
        return not self.unavailable

    def deployments(self) -> tuple[str, ...]:
        """Return the routable deployments' names, sorted."""
        return tuple(sorted(self._entries))

    def models(self) -> dict[str, ServableModel]:
        """Return every loaded model the table routes to, keyed by URI."""
        out: dict[str, ServableModel] = {}
        for entry in self._entries.values():
            for choice in (*entry.answering, entry.primary, *entry.shadows):
                out[choice.route.uri] = choice.model
        return out

    def _get(self, deployment: str) -> _Entry:
        try:
            return self._entries[deployment]
        except KeyError:
            # Never list the served deployments: callers of the public port are not
            # authenticated, and the names are for operators (`loopline deploy list`).
            hint = _UNAVAILABLE_HINT if deployment in self.unavailable else _UNKNOWN_HINT
            raise NotFoundError("deployment", deployment, hint) from None

    def deployment(self, name: str) -> Deployment:
        """Return the deployment record the table routes ``name`` by (its sticky key, say).

        Raises:
            NotFoundError: when ``name`` is not routable.
        """
        return self._get(name).deployment

    def route(self, deployment: str, key: str | None = None) -> RouteChoice:
        """Return the answering route for one request to ``deployment``.

        Weighted random without ``key``; with ``key``, a stable choice per key.

        Raises:
            NotFoundError: when ``deployment`` is not routable.
        """
        entry = self._get(deployment)
        if len(entry.answering) == 1:
            return entry.answering[0]
        point = self._rng.random() * WEIGHT_TOTAL if key is None else \
            sticky_point(deployment, key)
        return entry.pick(point)

    def shadows(self, deployment: str, key: str | None = None) -> list[RouteChoice]:
        """Return the shadow routes that mirror this request (each with ``weight`` % odds).

        Raises:
            NotFoundError: when ``deployment`` is not routable.
        """
        chosen: list[RouteChoice] = []
        for shadow in self._get(deployment).shadows:
            weight = shadow.route.weight
            if weight >= WEIGHT_TOTAL:
                chosen.append(shadow)
                continue
            point = self._rng.random() * WEIGHT_TOTAL if key is None else \
                sticky_point(deployment, key, salt=shadow.route.uri)
            if point < weight:
                chosen.append(shadow)
        return chosen

    def model(self, deployment: str) -> RouteChoice:
        """Return the deployment's primary route and model (for endpoints naming a model).

        Raises:
            NotFoundError: when ``deployment`` is not routable.
        """
        return self._get(deployment).primary
