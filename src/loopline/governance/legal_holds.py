"""Legal holds: what retention must keep, whatever its age, until the hold is released.

A hold names a data class (or ``*``) and a reference glob inside it: a dataset name or
``name@version`` for snapshots, a segment id or deployment name for prediction log and
feedback segments, a run id or pipeline name for run logs, a digest for artifacts, or ``*``.
Adding and releasing need ``admin``; each is audited (``governance.legal_hold_added`` /
``governance.legal_hold_released``) with a ``governance.legal_hold_changed`` event in the
same transaction.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

from loopline.core.errors import ConflictError, InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import LegalHold, Permission
from loopline.core.ids import new_id
from loopline.core.names import validate_text
from loopline.core.ports import Authorizer
from loopline.governance.retention_policy import parse_data_class
from loopline.store import MetadataStore
from loopline.store import legal_hold_records as hold_records

MAX_REF = 512
MAX_REASON = 2_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOLD_ID = re.compile(r"^[0-9a-f]{32}$")
LIST_HINT = "list holds with `loopline retention holds list --all`"


def validate_ref(value: object) -> str:
    """Return ``value`` when it can name what a hold covers (a glob allowed).

    Raises:
        InvalidArgumentError: naming ``ref`` when it is blank, too long or holds control
            characters.
    """
    ref = validate_text(value, "ref", MAX_REF)
    if _CONTROL.search(ref):
        raise InvalidArgumentError("ref", f"{ref!r} must not hold control characters")
    return ref


def describe(hold: LegalHold) -> dict[str, Any]:
    """Return the hold as the audit entry and ``--json`` show it."""
    return {"id": hold.id, "data_class": hold.data_class, "ref": hold.ref,
            "reason": hold.reason, "created_at": hold.created_at.isoformat(),
            "created_by": hold.created_by,
            "released_at": hold.released_at.isoformat() if hold.released_at else None,
            "released_by": hold.released_by}


class LegalHolds:
    """Add, release and list the legal holds of one workspace."""

    def __init__(self, store: MetadataStore, authorizer: Authorizer, actor: str) -> None:
        self._store = store
        self._authorizer = authorizer
        self._actor = actor

    def add(self, data_class: str, ref: str, reason: str) -> LegalHold:
        """Hold ``ref`` (a glob) of ``data_class`` (or ``*``) until released.

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError: naming ``data_class``, ``ref`` or ``reason`` when it is
                unknown, blank or too long.
        """
        data_class = parse_data_class(data_class, "data_class", allow_all=True)
        ref = validate_ref(ref)
        reason = validate_text(reason, "reason", MAX_REASON)
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        with self._store.write(self._actor) as uow:
            hold = LegalHold(id=new_id(), data_class=data_class, ref=ref, reason=reason,
                             created_at=uow.now(), created_by=self._actor)
            hold_records.insert_hold(uow, hold)
            uow.audit("governance.legal_hold_added", f"legal_hold:{hold.id}", None,
                      describe(hold))
            uow.emit(EventType.LEGAL_HOLD_CHANGED, f"legal_hold:{hold.id}",
                     {"action": "added", "data_class": data_class, "ref": ref})
        return hold

    def release(self, hold_id: str) -> LegalHold:
        """Release the hold ``hold_id``; retention may delete what it covered from then on.

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError: naming ``hold_id`` when it is not a hold id.
            NotFoundError: when no hold has that id.
            ConflictError: when the hold was released already.
        """
        if not isinstance(hold_id, str) or not _HOLD_ID.fullmatch(hold_id):
            raise InvalidArgumentError("hold_id", f"{hold_id!r} is not a hold id (32 hex "
                                                  f"characters); {LIST_HINT}")
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        with self._store.write(self._actor) as uow:
            # The append lock before the hold's row lock: the order every writer keeps (see
            # ``store.approval_records``), so two writers cannot wait on each other.
            uow.serialise()
            connection = uow.session.connection()
            before = hold_records.get_hold(connection, hold_id, lock=True)
            if before is None:
                raise NotFoundError("legal hold", hold_id, LIST_HINT)
            if before.released_at is not None:
                raise ConflictError(f"legal hold {hold_id!r} was already released on "
                                    f"{before.released_at:%Y-%m-%d} by {before.released_by}")
            hold_records.release_hold(uow, hold_id, uow.now())
            after = hold_records.get_hold(connection, hold_id)
            if after is None:  # pragma: no cover - the row is locked by this transaction
                raise NotFoundError("legal hold", hold_id, LIST_HINT)
            uow.audit("governance.legal_hold_released", f"legal_hold:{hold_id}",
                      describe(before), describe(after))
            uow.emit(EventType.LEGAL_HOLD_CHANGED, f"legal_hold:{hold_id}",
                     {"action": "released", "data_class": after.data_class, "ref": after.ref})
        return after

    def list(self, active_only: bool = True) -> builtins.list[LegalHold]:
        """List holds, oldest first (only those not released, by default).

        Raises:
            AccessDeniedError: when the actor does not hold ``read``.
        """
        self._authorizer.authorize(self._actor, Permission.READ)
        with self._store.engine.connect() as connection:
            return hold_records.list_holds(connection, active_only)
