"""The audit chain rule (pure): any edit, deletion, insertion, reordering or truncation of a
chain is caught at the first entry it touches; an untouched chain always verifies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from loopline.core.audit import GENESIS_HASH, AuditEntry, entry_hash, verify_chain

START = datetime(2026, 1, 1, tzinfo=UTC)


def build_chain(actions: list[str]) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS_HASH
    for index, action in enumerate(actions, start=1):
        at = START + timedelta(seconds=index)
        fields = {"seq": index, "id": f"id{index}", "at": at, "actor": "ann", "action": action,
                  "subject": f"s{index}", "before": None, "after": {"n": index}}
        digest = entry_hash(**fields, prev_hash=prev)  # type: ignore[arg-type]
        entries.append(AuditEntry(**fields, prev_hash=prev, hash=digest))  # type: ignore[arg-type]
        prev = digest
    return entries


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return (entries[-1].seq, entries[-1].hash) if entries else (0, GENESIS_HASH)


actions = st.lists(st.sampled_from(["a.put", "b.move", "c.delete"]), min_size=2, max_size=30)


@given(actions)
def test_an_untouched_chain_verifies(names: list[str]) -> None:
    chain = build_chain(names)
    assert verify_chain(chain, *head_of(chain)).ok


@given(actions, st.data())
def test_an_edited_entry_is_named(names: list[str], data: st.DataObject) -> None:
    chain = build_chain(names)
    victim = data.draw(st.integers(0, len(chain) - 1))
    chain[victim] = replace(chain[victim], actor="mallory")
    report = verify_chain(chain, *head_of(build_chain(names)))
    assert report.first_break is not None and report.first_break.seq == victim + 1
    assert "edited" in report.first_break.reason


@given(actions, st.data())
def test_a_deleted_entry_is_named(names: list[str], data: st.DataObject) -> None:
    chain = build_chain(names)
    head = head_of(chain)
    victim = data.draw(st.integers(0, len(chain) - 1))
    del chain[victim]
    report = verify_chain(chain, *head)
    assert report.first_break is not None and report.first_break.seq == victim + 1


@given(actions, st.data())
def test_swapped_neighbours_are_caught_at_the_first(names: list[str], data: st.DataObject) -> None:
    chain = build_chain(names)
    head = head_of(chain)
    first = data.draw(st.integers(0, len(chain) - 2))
    a, b = chain[first], chain[first + 1]
    # An attacker who can edit rows renumbers them so the order by seq changes.
    chain[first], chain[first + 1] = replace(b, seq=a.seq), replace(a, seq=b.seq)
    report = verify_chain(chain, *head)
    assert report.first_break is not None and report.first_break.seq == first + 1


@given(actions, st.data())
def test_an_inserted_copy_is_caught(names: list[str], data: st.DataObject) -> None:
    chain = build_chain(names)
    at = data.draw(st.integers(1, len(chain) - 1))
    forged = replace(chain[at - 1], id="forged")
    renumbered = [replace(e, seq=e.seq + 1) for e in chain[at:]]
    tampered = [*chain[:at], replace(forged, seq=at + 1), *renumbered]
    report = verify_chain(tampered, len(tampered), tampered[-1].hash)
    assert report.first_break is not None and report.first_break.seq <= at + 1


def test_a_truncated_tail_is_caught_by_the_head() -> None:
    chain = build_chain(["a.put"] * 5)
    report = verify_chain(chain[:-2], *head_of(chain))
    assert report.first_break is not None and report.first_break.seq == 4
    assert "end" in report.first_break.reason
