"""``client.governance``: approvals, policies, roles, legal holds, retention and the report.

Each class mirrors a workspace service over HTTP with the same method names, parameters and
records. Where the local method takes the acting subject (``actor``) first, the remote one
does too: the server acts as the token's user, so ``actor`` must be that user and any other
is refused before anything is sent (``client.actors.check_actor``). Records that hold
parsed policy files (``PolicySet``) are rebuilt from the files the server answers with, by
the same parser the server used.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loopline.client.actors import check_actor
from loopline.client.transport import PAGE_LIMIT, Transport, decode, segment
from loopline.core.errors import ConflictError, InvalidArgumentError
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    Identity,
    IdentityKind,
    LegalHold,
    Role,
    RoleBinding,
)
from loopline.governance.durations import format_duration
from loopline.governance.policy_files import PolicySet, load_policy_set, read_policy_dir
from loopline.governance.policy_sets import AppliedPolicySet, refuse_empty
from loopline.governance.report import GovernanceReport, ReportItem
from loopline.governance.retention import RetentionReport
from loopline.governance.retention_policy import RetentionPolicy
from loopline.store.policy_records import PolicySetRecord

__all__ = ["RemoteAccess", "RemoteApprovals", "RemoteGovernanceReport", "RemoteLegalHolds",
           "RemotePolicies", "RemoteRetention"]

DEFAULT_LIMIT = 100
HISTORY_LIMIT = 20
ALL_MODELS = "*"


class RemoteApprovals:
    """``Workspace.approvals`` over HTTP: request, decide, withdraw and read approvals."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def request(self, model: str, version: int, gate: str, target: str | None, reason: str,
                expires_in: timedelta | None = None) -> ApprovalRequest:
        """Ask for ``gate`` (to ``target``) on a version to be approved (needs write).

        See ``ApprovalService.request``; ``expires_in`` travels in whole seconds.
        """
        return decode(ApprovalRequest, self._http.post("/approvals", {
            "model": model, "version": version, "gate": str(gate), "target": target,
            "reason": reason,
            "expires_in": None if expires_in is None else format_duration(expires_in)}))

    def approve(self, request_id: str, comment: str = "") -> ApprovalRequest:
        """Vote for the request (needs approve). See ``ApprovalService.approve``."""
        return self._decide(request_id, "approve", comment)

    def reject(self, request_id: str, comment: str) -> ApprovalRequest:
        """Reject the request, closing it (needs approve). See ``ApprovalService.reject``."""
        return self._decide(request_id, "reject", comment)

    def withdraw(self, request_id: str) -> ApprovalRequest:
        """Withdraw the caller's own open request. See ``ApprovalService.withdraw``."""
        return decode(ApprovalRequest,
                      self._http.post(f"/approvals/{segment(request_id)}/withdraw"))

    def get(self, request_id: str) -> ApprovalRequest:
        """Return the request with its votes. See ``ApprovalService.get``."""
        return decode(ApprovalRequest, self._http.get(f"/approvals/{segment(request_id)}"))

    def list(self, status: ApprovalStatus | str | None = None, model: str | None = None,
             limit: int = DEFAULT_LIMIT) -> builtins.list[ApprovalRequest]:
        """List at most ``limit`` requests newest first. See ``ApprovalService.list``.

        The server lists only requests about models the caller may read.
        """
        found = self._http.get("/approvals", {
            "status": None if status is None else str(status), "model": model,
            "limit": limit})
        return [decode(ApprovalRequest, item) for item in found["items"]]

    def for_action(self, model: str, version: int, gate: str,
                   target: str | None) -> builtins.list[ApprovalRequest]:
        """List every request for one action on a version. See ``ApprovalService.for_action``."""
        return [decode(ApprovalRequest, item) for item in self._http.items(
            "/approvals/for-action", {"model": model, "version": version, "gate": str(gate),
                                      "target": target})]

    def _decide(self, request_id: str, verb: str, comment: str) -> ApprovalRequest:
        return decode(ApprovalRequest, self._http.post(
            f"/approvals/{segment(request_id)}/{verb}", {"comment": comment}))


def _policy_set(view: dict[str, Any]) -> PolicySet:
    """Return the policy set of a ``PolicySetView`` answer, parsed from its files."""
    return load_policy_set({str(k): str(v) for k, v in view["files"].items()})


def _applied(view: dict[str, Any]) -> AppliedPolicySet:
    return AppliedPolicySet(str(view["id"]), decode(datetime, view["applied_at"]),
                            str(view["applied_by"]), _policy_set(view["policy_set"]),
                            changed=bool(view["changed"]))


class RemotePolicies:
    """``Workspace.policies`` over HTTP: apply a set of policy files, read the one in force."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def apply(self, actor: str, files: Mapping[str, str], *, allow_empty: bool = False,
              source: str = "the policy files") -> AppliedPolicySet:
        """Apply ``files`` (name -> YAML text) as the set the gates evaluate (needs admin).

        As ``PolicySets.apply``: ``actor`` must be the token's user, and the files are
        parsed here first, so an empty set is refused naming ``source`` before anything is
        sent (the server parses them again and decides).

        Raises:
            InvalidArgumentError: naming ``actor`` when it is not the token's user; naming
                ``<file>:<line>`` when a file is malformed, or ``source`` when the set is
                empty and ``allow_empty`` is False (nothing is written).
            AccessDeniedError: when the token's user does not hold ``admin``.
        """
        check_actor(self._http, actor)
        if not allow_empty:
            refuse_empty(load_policy_set(files), source)
        return _applied(self._http.post("/policies", {"files": dict(files),
                                                      "allow_empty": allow_empty}))

    def apply_dir(self, actor: str, folder: str | Path, *,
                  allow_empty: bool = False) -> AppliedPolicySet:
        """Read the ``*.yaml``/``*.yml`` files of the local ``folder`` and apply them.

        Remote only (a convenience over :meth:`apply`, whose refusals name ``folder``).

        Raises:
            NotFoundError, InvalidArgumentError: as ``read_policy_dir`` for the folder, and
                as :meth:`apply`.
        """
        return self.apply(actor, read_policy_dir(folder), allow_empty=allow_empty,
                          source=str(folder))

    def active(self) -> PolicySet:
        """Return the set in force (``EMPTY_POLICY_SET`` before any is applied)."""
        return _policy_set(self._http.get("/policies")["active"])

    def current(self) -> AppliedPolicySet | None:
        """Return the set in force with when and by whom it was applied, or None before any."""
        found = self._http.get("/policies")["current"]
        return None if found is None else _applied(found)

    def history(self, limit: int = HISTORY_LIMIT) -> builtins.list[PolicySetRecord]:
        """List at most ``limit`` (1-1000) applied sets newest first, files included."""
        found = self._http.get("/policies/history", {"limit": limit})
        return [decode(PolicySetRecord, item) for item in found["items"]]


class RemoteAccess:
    """``Workspace.access`` over HTTP: identities, role bindings, grants and revocations.

    ``authorize`` and ``authorize_in`` are not here: the server authorises every call.
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def enforced(self) -> bool:
        """Tell whether roles are enforced or the workspace is open."""
        return bool(self._http.get("/access")["enforced"])

    def roles_of(self, actor: str, model: str | None = None) -> frozenset[Role]:
        """Return the roles ``actor`` holds on ``model``. See ``AccessControl.roles_of``."""
        found = self._http.get(f"/users/{segment(actor)}/roles", {"model": model})
        return frozenset(Role(role) for role in found["roles"])

    def bindings(self, subject: str | None = None) -> builtins.list[RoleBinding]:
        """List role bindings (of ``subject`` only, when given) by subject, role and models."""
        return [decode(RoleBinding, item)
                for item in self._http.items("/roles", {"subject": subject})]

    def identities(self) -> builtins.list[Identity]:
        """List every known identity by name."""
        return [decode(Identity, {k: v for k, v in item.items() if k != "bindings"})
                for item in self._http.items("/users")]

    def grant(self, actor: str, subject: str, role: Role | str, models: str = ALL_MODELS,
              kind: IdentityKind | str = IdentityKind.USER) -> RoleBinding:
        """Bind ``role`` on ``models`` to ``subject`` (needs admin); return the binding.

        As ``AccessControl.grant``; ``actor`` must be the token's user.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is another user (nothing sent),
                or as ``AccessControl.grant``.
        """
        check_actor(self._http, actor)
        return decode(RoleBinding, self._http.post(
            f"/users/{segment(subject)}/roles",
            {"role": str(role), "models": models, "kind": str(kind)}))

    def revoke(self, actor: str, subject: str, role: Role | str,
               models: str = ALL_MODELS) -> None:
        """Remove the binding of ``role`` on ``models`` from ``subject`` (needs admin).

        As ``AccessControl.revoke``; ``actor`` must be the token's user.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is another user (nothing sent),
                or as ``AccessControl.revoke``.
        """
        check_actor(self._http, actor)
        self._http.request("DELETE", f"/users/{segment(subject)}/roles/{segment(role)}",
                           params={"models": models})

    def add_identity(self, actor: str, name: str, kind: IdentityKind | str = IdentityKind.USER,
                     description: str | None = None) -> Identity:
        """Record the user or service account ``name`` (needs admin).

        As ``AccessControl.add_identity``; ``actor`` must be the token's user.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is another user (nothing sent),
                or as ``AccessControl.add_identity``.
        """
        check_actor(self._http, actor)
        return decode(Identity, self._http.post("/users", {
            "name": name, "kind": str(kind), "description": description}))

    def disable(self, actor: str, name: str) -> Identity:
        """Disable ``name`` (needs admin). See ``AccessControl.disable``.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is not the token's user (nothing
                sent), or as ``AccessControl.disable``.
        """
        check_actor(self._http, actor)
        return decode(Identity, self._http.post(f"/users/{segment(name)}/disable"))

    def enable(self, actor: str, name: str) -> Identity:
        """Enable ``name`` again (needs admin). See ``AccessControl.enable``.

        Raises:
            InvalidArgumentError: naming ``actor`` when it is not the token's user (nothing
                sent), or as ``AccessControl.enable``.
        """
        check_actor(self._http, actor)
        return decode(Identity, self._http.post(f"/users/{segment(name)}/enable"))


class RemoteLegalHolds:
    """``Workspace.legal_holds`` over HTTP: add, release and list legal holds."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def add(self, data_class: str, ref: str, reason: str) -> LegalHold:
        """Hold ``ref`` (a glob) of ``data_class`` (or ``*``) until released (needs admin)."""
        return decode(LegalHold, self._http.post("/legal-holds", {
            "data_class": str(data_class), "ref": ref, "reason": reason}))

    def release(self, hold_id: str) -> LegalHold:
        """Release the hold ``hold_id`` (needs admin). See ``LegalHolds.release``."""
        return decode(LegalHold, self._http.post(f"/legal-holds/{segment(hold_id)}/release"))

    def list(self, active_only: bool = True) -> builtins.list[LegalHold]:
        """List holds, oldest first (only those not released, by default)."""
        return [decode(LegalHold, item)
                for item in self._http.items("/legal-holds", {"active_only": active_only})]


class RemoteRetention:
    """``Workspace.retention`` over HTTP: the server runs the applied retention policy."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self._policies = RemotePolicies(transport)

    def run(self, policy: RetentionPolicy | None = None, *, dry_run: bool = False,
            now: datetime | None = None) -> RetentionReport:
        """Run the applied retention policy (needs admin, a dry run included).

        Unlike ``RetentionService.run`` the server runs only the policy of the applied set:
        ``policy`` may be left out, and when given must be that one. ``now`` is for dry
        runs only (a real run judges ages by the server's clock).

        Raises:
            ConflictError: when ``policy`` is not the applied set's retention policy.
            InvalidArgumentError: naming ``now`` when given for a real run.
            NotFoundError: when the applied set holds no retention policy.
        """
        if now is not None and not dry_run:
            raise InvalidArgumentError("now", "a real run judges ages by the server's clock; "
                                              "give now only with dry_run=True")
        if policy is not None and policy != self._policies.active().retention:
            raise ConflictError(f"retention policy {policy.name!r} is not the one the server "
                                "applies; apply it first (policies.apply) and run without it")
        if dry_run:
            found = self._http.get("/retention",
                                   {"now": None if now is None else now.isoformat()})
        else:
            found = self._http.post("/retention/apply")
        return decode(RetentionReport, found)


class RemoteGovernanceReport:
    """``Workspace.governance_report`` over HTTP: the completeness and policy report."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def build(self, sample: int | None = None, seed: int = 0) -> GovernanceReport:
        """Examine every version, or ``sample`` of them chosen with ``seed``.

        See ``ReportBuilder.build``; the server builds it, at its own clock.
        """
        query: dict[str, object] = {"sample": sample, "seed": seed, "limit": PAGE_LIMIT}
        found = self._http.get("/governance/report", query)
        items = list(found["items"])
        while found.get("next_cursor"):  # the items come a page at a time
            found = self._http.get("/governance/report",
                                   {**query, "cursor": found["next_cursor"]})
            items.extend(found["items"])
        return GovernanceReport(
            decode(datetime, found["generated_at"]), str(found["policy_set"]),
            int(found["population"]), tuple(decode(ReportItem, item) for item in items),
            {str(k): int(v) for k, v in found["missing_counts"].items()})
