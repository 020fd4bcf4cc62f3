"""Audit entries and their hash chain: the rule that makes the audit log tamper-evident.

Pure: no I/O. Each entry's hash is SHA-256 over the canonical JSON of its fields and the
previous entry's hash, so editing, deleting, inserting or reordering any entry breaks the
chain at that entry. The store keeps the head (last seq and hash) apart from the entries so
that cutting entries off the end is detected too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.canonical import hash_canonical

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What an operation asks to be audited: who did what to which thing, before and after."""

    actor: str
    action: str
    subject: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An audit entry as stored, with its place in the chain."""

    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    subject: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    prev_hash: str
    hash: str


def entry_hash(  # noqa: PLR0913 - the hash covers exactly these fields, named for clarity
    *, seq: int, id: str, at: datetime, actor: str, action: str, subject: str,
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, prev_hash: str,
) -> str:
    """Return the chained hash of one entry's fields."""
    return hash_canonical({
        "seq": seq, "id": id, "at": at.isoformat(timespec="microseconds"), "actor": actor,
        "action": action, "subject": subject, "before": before, "after": after,
        "prev_hash": prev_hash,
    })


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where the chain does not hold, and why."""

    seq: int
    entry_id: str | None
    reason: str

    def describe(self) -> str:
        """Return a one-line description naming the entry."""
        who = f"entry #{self.seq}" + (f" (id {self.entry_id})" if self.entry_id else "")
        return f"{who}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of verifying a chain end to end."""

    entries: int
    head_seq: int
    head_hash: str
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        """True when every entry and the head agree."""
        return self.first_break is None


def verify_chain(entries: Iterable[AuditEntry], head_seq: int, head_hash: str) -> ChainReport:
    """Walk ``entries`` in stored seq order and report the first break, if any.

    Detects an edited entry (its hash no longer matches its fields), an inserted or reordered
    one (its ``prev_hash`` does not link to the previous entry), a deleted one (a gap in seq),
    and a truncated tail (the last entry is not the recorded head).
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    for entry in entries:
        problem = _check_entry(entry, expected_seq, prev_hash)
        if problem is not None:
            return ChainReport(count, head_seq, head_hash, problem)
        prev_hash = entry.hash
        expected_seq += 1
        count += 1
    if count != head_seq or prev_hash != head_hash:
        reason = (f"the log ends at entry #{count} but the recorded head is entry #{head_seq}:"
                  " entries were deleted from or added to the end")
        return ChainReport(count, head_seq, head_hash, ChainBreak(count + 1, None, reason))
    return ChainReport(count, head_seq, head_hash, None)


def _check_entry(entry: AuditEntry, expected_seq: int, prev_hash: str) -> ChainBreak | None:
    if entry.seq != expected_seq:
        deleted = entry.seq > expected_seq
        what = "deleted" if deleted else "duplicated or reordered"
        # A deleted entry has no id left to name; the one found in its place is not it.
        return ChainBreak(expected_seq, None if deleted else entry.id,
                          f"found entry #{entry.seq} where #{expected_seq} belongs: entries were"
                          f" {what}")
    if entry.prev_hash != prev_hash:
        return ChainBreak(entry.seq, entry.id,
                          "does not link to the previous entry: it was inserted, reordered, or"
                          " the previous entry was changed")
    recomputed = entry_hash(
        seq=entry.seq, id=entry.id, at=entry.at, actor=entry.actor, action=entry.action,
        subject=entry.subject, before=entry.before, after=entry.after, prev_hash=entry.prev_hash,
    )
    if recomputed != entry.hash:
        return ChainBreak(entry.seq, entry.id, "its fields no longer match its hash: it was edited")
    return None
