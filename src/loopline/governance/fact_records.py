"""Rebuild ``Facts`` from the record a gate decision kept, to re-evaluate it later.

Pure: no I/O. ``Facts.as_record`` keeps what rules read; this is its inverse for those
fields. Approval requests are recorded by id, status, requester, approvers and expiry, which
is all the approvals rule reads (status as of the decision time, and who approved); the
fields it does not read (reason, required count, vote times) are filled with neutral values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    ApprovalVote,
    Role,
    Verdict,
)
from loopline.governance.facts import DatasetFact, Facts


def _approval(facts: Mapping[str, Any], item: Mapping[str, Any]) -> ApprovalRequest:
    expires_at = datetime.fromisoformat(str(item["expires_at"]))
    votes = tuple(ApprovalVote(str(name), Verdict.APPROVE, "", expires_at, Role.APPROVER)
                  for name in item.get("approvers") or ())
    return ApprovalRequest(
        id=str(item["id"]), model=str(facts["model"]), version=int(facts["version"]),
        gate=str(facts["gate"]), target=facts.get("target"), requester=str(item["requester"]),
        reason="", status=ApprovalStatus(item["status"]), required=0, created_at=expires_at,
        expires_at=expires_at, votes=votes)


def _dataset(item: Mapping[str, Any]) -> DatasetFact:
    return DatasetFact(str(item["ref"]), bool(item["exists"]), item.get("validated"),
                       tuple(item.get("suites") or ()))


def facts_from_record(record: Mapping[str, Any]) -> Facts:
    """Return the facts ``record`` (``Facts.as_record`` plus ``details``) describes.

    Raises:
        InvalidArgumentError: naming ``facts`` when the record lacks a field or holds one of
            the wrong kind.
    """
    try:
        code_version = record.get("code_version")
        return Facts(
            model=str(record["model"]), version=int(record["version"]),
            gate=str(record["gate"]), target=record.get("target"),
            actor=str(record["actor"]), status=record.get("status"),
            metrics=dict(record.get("metrics") or {}), tags=dict(record.get("tags") or {}),
            description=record.get("description"),
            datasets=tuple(_dataset(item) for item in record.get("datasets") or ()),
            code_version=None if code_version is None else dict(code_version),
            run_id=record.get("run_id"),
            environment_recorded=bool(record.get("environment_recorded")),
            signature_recorded=bool(record.get("signature_recorded")),
            artifact_encrypted=bool(record.get("artifact_encrypted")),
            approvals=tuple(_approval(record, item) for item in record.get("approvals") or ()),
            details=dict(record.get("details") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError("facts", f"is not a recorded facts mapping: {exc!r}"
                                   ) from exc
