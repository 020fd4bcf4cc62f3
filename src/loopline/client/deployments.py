"""``client.deployments``: the workspace's ``DeploymentService`` over HTTP.

Same methods, arguments and records as ``Workspace.deployments``, except ``start_canary``'s
``within`` (a function run inside the server's transaction: local only) and
``apply_verdict`` (the rollout controller's own); ``run_rollouts`` asks the server for one
tick of the rollout controller, as ``loopline rollouts run --once`` does.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from loopline.client.transport import Transport, decode, segment
from loopline.core.deployments import (
    CanaryPlan,
    Deployment,
    DeploymentChange,
    RolloutVerdict,
    Route,
    Strategy,
)
from loopline.core.errors import InvalidArgumentError
from loopline.deploy.evacuation import Evacuation

MAX_LISTED = 1_000  # the service lists at most this many revisions or verdicts
_PLAN = TypeAdapter(CanaryPlan)


def _plan(plan: CanaryPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    if not isinstance(plan, CanaryPlan):
        raise InvalidArgumentError("canary", "must be a CanaryPlan")
    data: dict[str, Any] = _PLAN.dump_python(plan, mode="json")
    return data


def _routes(routes: Sequence[Route]) -> list[dict[str, Any]]:
    return [route.as_record() for route in routes]


def _newest(limit: int) -> int:
    # The service clamps ``limit`` to 1-1,000; one page of that size is the same answer.
    return max(1, min(int(limit), MAX_LISTED))


class RemoteDeployments:
    """Deployments, rollouts and their history, as ``Workspace.deployments`` offers them."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def _path(self, name: str, action: str = "") -> str:
        return f"/deployments/{segment(name)}" + (f"/{action}" if action else "")

    def _deployment(self, path: str, body: dict[str, Any]) -> Deployment:
        return decode(Deployment, self._http.post(path, body))

    # -- reading -----------------------------------------------------------------------------

    def get(self, name: str) -> Deployment:
        """Return deployment ``name``. See ``DeploymentService.get``."""
        return decode(Deployment, self._http.get(self._path(name)))

    def list(self) -> builtins.list[Deployment]:
        """List every deployment, by name. See ``DeploymentService.list``."""
        return [decode(Deployment, item) for item in self._http.items("/deployments")]

    def history(self, name: str, limit: int = 100) -> builtins.list[DeploymentChange]:
        """List the newest ``limit`` revisions of ``name``. See ``DeploymentService.history``."""
        page = self._http.get(self._path(name, "history"), {"limit": _newest(limit)})
        return [decode(DeploymentChange, item) for item in page["items"]]

    def verdicts(self, name: str, limit: int = 50) -> builtins.list[RolloutVerdict]:
        """List the newest ``limit`` canary verdicts of ``name``. See ``verdicts`` there."""
        page = self._http.get(self._path(name, "verdicts"), {"limit": _newest(limit)})
        return [decode(RolloutVerdict, item) for item in page["items"]]

    def resolve(self, uri: str) -> tuple[str, int]:
        """Return the model and version ``uri`` names now. See ``DeploymentService.resolve``."""
        found = self._http.get("/deployments/-/resolve", {"uri": uri})
        return str(found["model"]), int(found["version"])

    # -- changing ----------------------------------------------------------------------------

    def create(  # noqa: PLR0913 - mirrors DeploymentService.create
            self, name: str, routes: Sequence[Route], strategy: Strategy | str,
            canary: CanaryPlan | None = None, sticky_key: str | None = None,
            description: str | None = None, *, reason: str | None = None) -> Deployment:
        """Create deployment ``name``. See ``DeploymentService.create``."""
        return self._deployment("/deployments", {
            "name": name, "routes": _routes(routes), "strategy": str(strategy),
            "canary": _plan(canary), "sticky_key": sticky_key, "description": description,
            "reason": reason})

    def update(self, name: str, routes: Sequence[Route], reason: str, *,
               sticky_key: str | None = None) -> Deployment:
        """Switch ``name`` to ``routes`` at once. See ``DeploymentService.update``."""
        return decode(Deployment, self._http.request("PATCH", self._path(name), json={
            "routes": _routes(routes), "reason": reason, "sticky_key": sticky_key}))

    def replace(self, name: str, model: str, version: int, reason: str | None = None
                ) -> Deployment:
        """Switch ``name`` to one version as its sole primary. See ``replace`` there."""
        return self._deployment(self._path(name, "replace"), {
            "model": model, "version": version, "reason": reason})

    def start_canary(self, name: str, canary_uri_version: tuple[str, int],
                     plan: CanaryPlan | None = None, *, reason: str | None = None
                     ) -> Deployment:
        """Start a canary rollout of ``(model, version)``. See ``start_canary`` there.

        The local ``within`` (a function run in the server's transaction) is not offered.
        """
        model, version = canary_uri_version
        return self._deployment(self._path(name, "canary"), {
            "model": model, "version": version, "canary": _plan(plan), "reason": reason})

    def promote(self, name: str, *, reason: str | None = None) -> Deployment:
        """Give the canary all traffic now. See ``DeploymentService.promote``."""
        return self._deployment(self._path(name, "promote"), {"reason": reason})

    def rollback(self, name: str, reason: str) -> Deployment:
        """Return ``name`` to its last good routes. See ``DeploymentService.rollback``.

        The local ``within`` (a function run in the server's transaction) is not offered.
        """
        return self._deployment(self._path(name, "rollback"), {"reason": reason})

    def pause(self, name: str, reason: str | None = None) -> Deployment:
        """Hold a rollout at its step. See ``DeploymentService.pause``."""
        return self._deployment(self._path(name, "pause"), {"reason": reason})

    def resume(self, name: str, reason: str | None = None) -> Deployment:
        """Resume a paused rollout at its step. See ``DeploymentService.resume``."""
        return self._deployment(self._path(name, "resume"), {"reason": reason})

    def evacuate(self, model: str, version: int, reason: str) -> builtins.list[Evacuation]:
        """Take a version out of every deployment. See ``DeploymentService.evacuate``."""
        found = self._http.post("/deployments/evacuate", {
            "model": model, "version": version, "reason": reason})
        return [decode(Evacuation, item) for item in found]

    def run_rollouts(self, settle: timedelta | None = None) -> builtins.list[RolloutVerdict]:
        """Judge every canary whose window has elapsed, once, on the server; return the verdicts.

        As ``loopline rollouts run --once`` (``settle``: how long after a window ends it is
        judged; 15 s by default, at least 15 s and at most an hour). It acts on every
        deployment, so it needs an admin token. Only the verdicts this call stored are
        returned.
        """
        body = {"settle": None if settle is None else settle.total_seconds()}
        found = self._http.post("/deployments/rollouts/run", body)
        return [decode(RolloutVerdict, item) for item in found]
