"""Applied policy sets: apply a set of policy files, and read the one the gates evaluate.

Rules kept here: applying needs ``admin``; every file is parsed and checked before anything
is written (a malformed file names itself and its line, and nothing is stored); applying the
set that is active already writes nothing; an empty set (no gate policy, no retention) is
refused unless the caller says it clears the policies on purpose, since it turns every gate
off; otherwise the new row, its audit entry (``governance.policy_applied``) and its event
commit together. The active set is parsed once per applied row and cached, so a gate
decision costs one small query, not a YAML parse.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.errors import ConfigurationError, InvalidArgumentError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ports import Authorizer
from loopline.governance.policy_files import EMPTY_POLICY_SET, PolicySet, load_policy_set
from loopline.store import MetadataStore
from loopline.store import policy_records as records

SUBJECT = "policies"


@dataclass(frozen=True, slots=True)
class AppliedPolicySet:
    """A policy set as applied: its row id, when and by whom, and whether this apply stored it.

    ``changed`` is False when the set was active already (nothing was written).
    """

    id: str
    applied_at: datetime
    applied_by: str
    policy_set: PolicySet
    changed: bool = True

    @property
    def digest(self) -> str:
        """The digest of the set's files."""
        return self.policy_set.digest


def rule_count(policy_set: PolicySet) -> int:
    """Return how many rules the set's gate policies hold in all."""
    return sum(len(policy.rules) for policy in policy_set.gate_policies)


def summary(policy_set: PolicySet) -> dict[str, Any]:
    """Return what the audit entry and the CLI say about a set: digest, files, counts."""
    return {"digest": policy_set.digest, "files": sorted(policy_set.files),
            "gate_policies": len(policy_set.gate_policies), "rules": rule_count(policy_set),
            "retention": policy_set.retention is not None}


def refuse_empty(policy_set: PolicySet, source: str) -> None:
    """Return when ``policy_set`` defines something; ``source`` names where its files are.

    Raises:
        InvalidArgumentError: naming ``source`` when the set holds no gate policy and no
            retention policy, saying how to clear the policies on purpose.
    """
    if policy_set.empty:
        files = f"{len(policy_set.files)} file{'s' if len(policy_set.files) != 1 else ''}"
        raise InvalidArgumentError(
            source, f"holds no gate policy and no retention policy ({files} of *.yaml or "
                    "*.yml); applying it would turn every gate off. To clear the policies on "
                    "purpose, run `loopline policy apply --allow-empty` (allow_empty=True)")


class PolicySets:
    """The policy sets applied to one workspace; the newest is the one in force."""

    def __init__(self, store: MetadataStore, authorizer: Authorizer) -> None:
        self._store = store
        self._authorizer = authorizer
        self.records = records.PolicyRecords(store.engine)
        self._lock = threading.Lock()
        self._cached: tuple[str, PolicySet] | None = None

    def apply(self, actor: str, files: Mapping[str, str], *, allow_empty: bool = False,
              source: str = "the policy files") -> AppliedPolicySet:
        """Store ``files`` (name -> YAML text) as the set the gates evaluate from now on.

        An empty set (no gate policy and no retention) turns every gate off, so it is
        applied only with ``allow_empty``; ``source`` names the files (their folder) in
        that refusal.

        Raises:
            AccessDeniedError: when ``actor`` does not hold ``admin``.
            InvalidArgumentError: naming ``<file>:<line>`` and the problem when a file is
                malformed, or naming ``source`` when the set is empty and ``allow_empty``
                is False (nothing is written).
        """
        self._authorizer.authorize(actor, Permission.ADMIN)
        policy_set = load_policy_set(files)
        if not allow_empty:
            refuse_empty(policy_set, source)
        with self._store.write(actor) as uow:
            uow.serialise()  # read the newest set under the lock every applier takes
            previous = records.newest(uow.session.connection())
            if previous is not None and previous.digest == policy_set.digest:
                return AppliedPolicySet(previous.id, previous.applied_at, previous.applied_by,
                                        policy_set, changed=False)
            row = records.insert_policy_set(uow, policy_set.digest, policy_set.files, previous)
            after = summary(policy_set)
            before = None if previous is None else {"digest": previous.digest,
                                                    "files": sorted(previous.files)}
            uow.audit("governance.policy_applied", SUBJECT, before, {"id": row.id, **after})
            uow.emit(EventType.POLICY_APPLIED, SUBJECT, {
                "id": row.id, "digest": row.digest,
                "previous": None if previous is None else previous.digest})
        self._remember(row.id, policy_set)
        return AppliedPolicySet(row.id, row.applied_at, row.applied_by, policy_set)

    def active(self) -> PolicySet:
        """Return the set in force (``EMPTY_POLICY_SET`` before any is applied).

        Raises:
            ConfigurationError: when the stored set no longer parses (this code reads policy
                files differently from the code that applied it); re-apply it.
        """
        set_id = self.records.newest_id()
        if set_id is None:
            return EMPTY_POLICY_SET
        with self._lock:
            cached = self._cached
        if cached is not None and cached[0] == set_id:
            return cached[1]
        record = self.records.get(set_id)
        if record is None:  # pragma: no cover - rows are never deleted
            return EMPTY_POLICY_SET
        return self._remember(record.id, self._parse(record))

    def current(self) -> AppliedPolicySet | None:
        """Return the set in force with when and by whom it was applied, or None before any.

        Raises:
            ConfigurationError: as :meth:`active`.
        """
        record = self.records.newest()
        if record is None:
            return None
        return AppliedPolicySet(record.id, record.applied_at, record.applied_by,
                                self._parse(record), changed=False)

    def history(self, limit: int = 20) -> list[records.PolicySetRecord]:
        """List applied sets newest first (files included).

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        return self.records.history(limit)

    def _remember(self, set_id: str, policy_set: PolicySet) -> PolicySet:
        with self._lock:
            self._cached = (set_id, policy_set)
        return policy_set

    @staticmethod
    def _parse(record: records.PolicySetRecord) -> PolicySet:
        try:
            return load_policy_set(record.files)
        except InvalidArgumentError as exc:
            raise ConfigurationError(
                f"the applied policy set {record.id} ({record.digest[:12]}) no longer parses: "
                f"{exc.message}; fix the files and run `loopline policy apply`") from exc
