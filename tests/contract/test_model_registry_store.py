"""The model registry's records on every backend: versions without gaps or duplicates (also
under concurrent registration from several processes), atomic audited alias moves, status
transitions, gate decisions, resolution and lineage."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loopline.core.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.core.events import EventType
from loopline.core.gates import AllowAll, GateAction, GateDecision, GateRequest
from loopline.core.lineage import Direction, EdgeKind
from loopline.core.models import ModelStatus, ModelURI, ModelVersion, NewModelVersion
from loopline.store import AuditFilter, MetadataStore
from loopline.store.lineage import LineageQueries
from loopline.store.model_registry import (
    ModelQueries,
    create_version,
    delete_alias,
    describe_model,
    is_trusted,
    record_trust,
    set_alias,
    set_status,
)

DIGEST = "ab" * 32
ALLOW = GateDecision(True, "the test allows it", ({"rule": "always", "saw": {"n": 1}},))
DENY = GateDecision(False, "needs a reviewer's approval", ({"rule": "approval", "saw": 0},))
PROCESSES, PER_PROCESS = 4, 10

WORKER = textwrap.dedent(f"""
    import sys, time
    from pathlib import Path
    from loopline.core.models import NewModelVersion
    from loopline.store import MetadataStore
    from loopline.store.model_registry import create_version
    url, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = MetadataStore.open(url)
    (go.parent / f"ready-{{name}}").touch()
    while not go.exists():
        time.sleep(0.005)
    for i in range(count):
        with store.write(name) as uow:
            create_version(uow, NewModelVersion("racer", "{DIGEST}", "skops",
                                                tags={{"worker": name, "i": i}}))
    store.close()
""")


def _new(name: str = "churn", **fields: Any) -> NewModelVersion:
    return NewModelVersion(name, fields.pop("artifact_digest", DIGEST),
                           fields.pop("flavor", "skops"), **fields)


def _register(store: MetadataStore, name: str = "churn", **fields: Any) -> ModelVersion:
    with store.write("tester") as uow:
        return create_version(uow, _new(name, **fields))


def _audit(store: MetadataStore, action: str) -> list[Any]:
    return store.audit.entries(AuditFilter(action=action, newest_first=False, limit=1000))


def _events(store: MetadataStore, type: str) -> list[Any]:
    return store.events.read_after(0, limit=1000, types=[type])


@pytest.fixture
def queries(store: MetadataStore) -> ModelQueries:
    return ModelQueries(store.engine)


# -- versions ------------------------------------------------------------------------------


def test_versions_are_numbered_from_one_without_gaps_per_model(
        store: MetadataStore, queries: ModelQueries) -> None:
    numbers = [_register(store, "churn").version for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert _register(store, "fraud").version == 1
    assert [v.version for v in queries.versions("churn")] == [1, 2, 3]
    assert queries.model("churn").latest_version == 3
    assert [m.name for m in queries.models()] == ["churn", "fraud"]


def test_a_version_reads_back_everything_registration_recorded(
        store: MetadataStore, queries: ModelQueries) -> None:
    made = _register(store, signature={"inputs": [{"name": "x", "type": "float64"}]},
                     metrics={"auc": 0.91, "slices": {"eu": {"auc": float("nan")}}},
                     params={"C": 1.0}, tags={"owner": "ann"}, run_id="run-1",
                     datasets=("iris@3",), code_version={"git": "abc"},
                     environment={"python": "3.11"}, description="first",
                     extra={"holdout_digest": DIGEST})
    read = queries.version("churn", 1)
    assert read == made
    assert read.status is ModelStatus.CANDIDATE and read.created_by == "tester"
    assert read.metrics["slices"] == {"eu": {"auc": "nan"}}  # kept by name, not lost
    assert read.uri == "models:/churn/1"


def test_a_registration_rolled_back_gives_its_number_back(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store)
    with pytest.raises(RuntimeError, match="after registering"), store.write("tester") as uow:
        create_version(uow, _new())
        raise RuntimeError("failed after registering")
    assert _register(store).version == 2
    assert [v.version for v in queries.versions("churn")] == [1, 2]


def test_registration_emits_an_event_and_an_audit_entry(store: MetadataStore) -> None:
    _register(store, run_id="run-1", datasets=("iris@3",))
    [event] = _events(store, EventType.MODEL_VERSION_REGISTERED)
    assert event.subject == "models:/churn/1"
    assert event.payload["version"] == 1 and event.payload["datasets"] == ["iris@3"]
    [entry] = _audit(store, "model.version_registered")
    assert entry.subject == "models:/churn/1" and entry.before is None
    assert entry.after is not None and entry.after["artifact_digest"] == DIGEST


def test_concurrent_registration_from_several_processes_yields_consecutive_versions(
        store: MetadataStore, queries: ModelQueries, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, store.url, f"proc-{n}",
                                 str(PER_PROCESS), str(go)]) for n in range(PROCESSES)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES:  # all connected: they overlap
        assert time.monotonic() < deadline, "registering processes did not get ready"
        assert all(w.poll() is None for w in workers), "a registering process died"
        time.sleep(0.01)
    go.touch()  # the model does not exist yet: its first registration races too
    assert [w.wait(timeout=120) for w in workers] == [0] * PROCESSES
    versions = queries.versions("racer")
    total = PROCESSES * PER_PROCESS
    assert [v.version for v in versions] == list(range(1, total + 1))
    assert queries.model("racer").latest_version == total
    for n in range(PROCESSES):  # each process's registrations got increasing numbers
        mine = [v.tags["i"] for v in versions if v.tags["worker"] == f"proc-{n}"]
        assert mine == list(range(PER_PROCESS))
    assert len(_events(store, EventType.MODEL_VERSION_REGISTERED)) == total
    assert store.audit.verify().ok


# -- aliases -------------------------------------------------------------------------------


def test_alias_moves_return_the_previous_target_and_audit_before_and_after(
        store: MetadataStore, queries: ModelQueries) -> None:
    for _ in range(2):
        _register(store)
    with store.write("ann") as uow:
        assert set_alias(uow, "churn", "champion", 1, ALLOW) is None
    with store.write("ben") as uow:
        previous = set_alias(uow, "churn", "champion", 2, ALLOW)
    assert previous is not None and (previous.version, previous.updated_by) == (1, "ann")
    [alias] = queries.aliases("churn")
    assert (alias.alias, alias.version, alias.updated_by) == ("champion", 2, "ben")
    first, second = _audit(store, "model.alias_moved")
    assert first.subject == "models:/churn@champion" and first.before is None
    assert first.after["version"] == 1
    assert second.before["version"] == 1 and second.after["version"] == 2
    assert second.after["gate"] == ALLOW.as_record()
    assert [(e.payload["from"], e.payload["to"])
            for e in _events(store, EventType.MODEL_ALIAS_MOVED)] == [(None, 1), (1, 2)]


def test_an_alias_move_rolled_back_leaves_the_alias_where_it_was(
        store: MetadataStore, queries: ModelQueries) -> None:
    for _ in range(2):
        _register(store)
    with store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 1, ALLOW)
    with pytest.raises(RuntimeError), store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 2, ALLOW)
        raise RuntimeError("crash before commit")
    assert queries.resolve("models:/churn@champion").version == 1
    assert len(_audit(store, "model.alias_moved")) == 1


def test_concurrent_alias_moves_keep_an_unbroken_before_after_history(
        store: MetadataStore, queries: ModelQueries) -> None:
    for _ in range(3):
        _register(store)

    def mover(target: int) -> None:
        for _ in range(5):
            with store.write(f"mover-{target}") as uow:
                set_alias(uow, "churn", "champion", target, ALLOW)

    with ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(mover, n) for n in (1, 2, 3)]:
            done.result(timeout=120)
    entries = _audit(store, "model.alias_moved")
    assert entries[0].before is None
    for earlier, later in itertools.pairwise(entries):
        assert later.before["version"] == earlier.after["version"] != later.after["version"]
    assert queries.resolve("churn@champion").version == entries[-1].after["version"]


def test_an_alias_to_a_missing_version_is_refused_naming_it(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store)
    with pytest.raises(NotFoundError, match=r"models:/churn/9.*versions 1 to 1"), \
            store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 9, ALLOW)
    with pytest.raises(NotFoundError, match=r"models:/nobody/1.*no model 'nobody'"), \
            store.write("ann") as uow:
        set_alias(uow, "nobody", "champion", 1, ALLOW)
    assert queries.aliases("churn") == []
    assert _audit(store, "model.alias_moved") == []


@pytest.mark.parametrize(("alias", "problem"), [
    ("latest", "reserved"), ("42", "all digits"), ("bad alias", "must be 1-128")])
def test_reserved_numeric_or_malformed_aliases_are_refused(
        store: MetadataStore, alias: str, problem: str) -> None:
    _register(store)
    with pytest.raises(InvalidArgumentError, match=problem), store.write("ann") as uow:
        set_alias(uow, "churn", alias, 1, ALLOW)


def test_an_alias_to_a_quarantined_version_is_refused(store: MetadataStore) -> None:
    _register(store)
    with store.write("ann") as uow:
        set_status(uow, "churn", 1, ModelStatus.QUARANTINED, ALLOW)
    with pytest.raises(ConflictError, match="quarantined"), store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 1, ALLOW)


def test_deleting_an_alias_is_audited_and_a_missing_one_is_named(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store)
    with store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 1, ALLOW)
    with store.write("ann") as uow:
        assert delete_alias(uow, "churn", "champion", ALLOW).version == 1
    assert queries.aliases("churn") == []
    [entry] = _audit(store, "model.alias_deleted")
    assert entry.before is not None and entry.before["version"] == 1
    assert _events(store, EventType.MODEL_ALIAS_MOVED)[-1].payload["to"] is None
    with pytest.raises(NotFoundError, match=r"models:/churn@champion"), \
            store.write("ann") as uow:
        delete_alias(uow, "churn", "champion", ALLOW)


# -- resolution ----------------------------------------------------------------------------


def test_resolve_by_number_alias_and_latest_in_every_spelling(
        store: MetadataStore, queries: ModelQueries) -> None:
    for _ in range(3):
        _register(store)
    with store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 2, ALLOW)
    for text, expected in [("models:/churn/1", 1), ("churn/3", 3),
                           ("models:/churn@champion", 2), ("churn@champion", 2),
                           ("models:/churn@latest", 3), ("churn@latest", 3)]:
        assert queries.resolve(text).version == expected, text
    assert queries.resolve(ModelURI("churn", alias="champion")).version == 2


@pytest.mark.parametrize(("uri", "kind", "hint"), [
    ("models:/nobody/1", "model version", "no model 'nobody'"),
    ("models:/nobody@latest", "model", "loopline models list"),
    ("models:/nobody@champion", "model", "loopline models list"),
    ("models:/churn/5", "model version", "versions 1 to 2"),
    ("models:/churn@champion", "model alias", "has no aliases"),
])
def test_resolving_what_does_not_exist_names_it_and_what_does(
        store: MetadataStore, queries: ModelQueries, uri: str, kind: str, hint: str) -> None:
    for _ in range(2):
        _register(store)
    with pytest.raises(NotFoundError, match=hint) as caught:
        queries.resolve(uri)
    assert caught.value.kind == kind


@pytest.mark.parametrize("uri", ["churn", "models:/churn", "models:/churn/0", "churn/v1",
                                 "models:/churn@", "runs:/abc/model", "churn/1@x", ""])
def test_bad_uris_are_refused_naming_the_expected_forms(
        store: MetadataStore, queries: ModelQueries, uri: str) -> None:
    _register(store)
    with pytest.raises(InvalidArgumentError, match="expected models:/NAME/VERSION") as caught:
        queries.resolve(uri)
    assert caught.value.field == "model"


# -- status --------------------------------------------------------------------------------


def test_status_moves_along_the_lifecycle_with_events_and_audit(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store)
    path = [ModelStatus.STAGING, ModelStatus.PRODUCTION, ModelStatus.ARCHIVED,
            ModelStatus.CANDIDATE, ModelStatus.QUARANTINED, ModelStatus.CANDIDATE]
    for status in path:
        with store.write("ann") as uow:
            assert set_status(uow, "churn", 1, status, ALLOW).status is status
        assert queries.version("churn", 1).status is status
    moves = [(e.payload["from"], e.payload["to"])
             for e in _events(store, EventType.MODEL_STATUS_CHANGED)]
    assert moves == list(zip(["candidate", *path[:-1]], path, strict=True))
    entries = _audit(store, "model.status_changed")
    assert [(e.before["status"], e.after["status"]) for e in entries] == moves
    assert all(e.after["gate"]["allowed"] for e in entries)
    assert [v.version for v in queries.versions("churn", ModelStatus.CANDIDATE)] == [1]


@pytest.mark.parametrize(("start", "target"), [
    ([], ModelStatus.CANDIDATE),
    ([ModelStatus.PRODUCTION], ModelStatus.CANDIDATE),
    ([ModelStatus.ARCHIVED], ModelStatus.PRODUCTION),
    ([ModelStatus.QUARANTINED], ModelStatus.PRODUCTION),
    ([ModelStatus.QUARANTINED], ModelStatus.STAGING),
])
def test_status_moves_the_lifecycle_forbids_are_refused(
        store: MetadataStore, queries: ModelQueries, start: list[ModelStatus],
        target: ModelStatus) -> None:
    _register(store)
    for status in start:
        with store.write("ann") as uow:
            set_status(uow, "churn", 1, status, ALLOW)
    before = len(_audit(store, "model.status_changed"))
    if target is ModelStatus.CANDIDATE and not start:  # same status: a no-op, not an error
        with store.write("ann") as uow:
            assert set_status(uow, "churn", 1, target, ALLOW).status is target
    else:
        with pytest.raises(InvalidTransitionError, match=f"to '{target}'"), \
                store.write("ann") as uow:
            set_status(uow, "churn", 1, target, ALLOW)
    assert len(_audit(store, "model.status_changed")) == before


def test_an_unknown_status_or_version_is_named(store: MetadataStore) -> None:
    _register(store)
    with pytest.raises(InvalidArgumentError, match="'retired' is not a status"), \
            store.write("ann") as uow:
        set_status(uow, "churn", 1, "retired", ALLOW)
    with pytest.raises(NotFoundError, match="models:/churn/2"), store.write("ann") as uow:
        set_status(uow, "churn", 2, ModelStatus.STAGING, ALLOW)


# -- gates ---------------------------------------------------------------------------------


def test_a_denying_gate_decision_is_refused_and_nothing_is_written(
        store: MetadataStore, queries: ModelQueries) -> None:
    for _ in range(2):
        _register(store)
    with store.write("ann") as uow:
        set_alias(uow, "churn", "champion", 1, ALLOW)
    events, audit_head = store.events.count(), store.audit.head()
    attempts = [
        lambda uow: set_alias(uow, "churn", "champion", 2, DENY),
        lambda uow: set_alias(uow, "churn", "challenger", 2, DENY),
        lambda uow: delete_alias(uow, "churn", "champion", DENY),
        lambda uow: set_status(uow, "churn", 2, ModelStatus.PRODUCTION, DENY),
        lambda uow: create_version(uow, _new(), DENY),
        lambda uow: record_trust(uow, "churn", 1, "reviewed", DENY),
    ]
    for attempt in attempts:
        with pytest.raises(PolicyDeniedError, match="needs a reviewer's approval"), \
                store.write("mallory") as uow:
            attempt(uow)
    assert (store.events.count(), store.audit.head()) == (events, audit_head)
    assert [(a.alias, a.version) for a in queries.aliases("churn")] == [("champion", 1)]
    assert queries.version("churn", 2).status is ModelStatus.CANDIDATE
    assert queries.model("churn").latest_version == 2
    assert not queries.is_trusted("churn", 1)


def test_the_allow_all_gate_allows_and_its_decision_is_audited(store: MetadataStore) -> None:
    _register(store)
    request = GateRequest(GateAction.STATUS, "churn", 1, "ann", "staging")
    decision = AllowAll().check(request)
    with store.write("ann") as uow:
        set_status(uow, "churn", 1, ModelStatus.STAGING, decision)
    [entry] = _audit(store, "model.status_changed")
    assert entry.after["gate"] == {"allowed": True, "reason": decision.reason, "rules": []}


# -- lineage and trust ---------------------------------------------------------------------


def test_registration_records_model_dataset_and_run_lineage(store: MetadataStore) -> None:
    _register(store, run_id="run-7", datasets=("iris@3", "iris-labels@1"))
    lineage = LineageQueries(store.engine)
    edges = {(e.source.id, e.kind)
             for e in lineage.neighbours("model_version:churn@1", Direction.UPSTREAM)}
    assert edges == {("model:churn", EdgeKind.REGISTERED_AS),
                     ("dataset_snapshot:iris@3", EdgeKind.TRAINED_ON),
                     ("dataset_snapshot:iris-labels@1", EdgeKind.TRAINED_ON),
                     ("pipeline_run:run-7", EdgeKind.PRODUCED)}
    node = lineage.node("model_version:churn@1")
    assert node is not None and node.attributes["artifact_digest"] == DIGEST
    downstream = lineage.downstream("dataset_snapshot:iris@3")
    assert "model_version:churn@1" in downstream.ids()


def test_a_trust_decision_is_recorded_once_and_audited_with_the_artifact(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store, flavor="python")
    assert not queries.is_trusted("churn", 1)
    with store.write("ann") as uow:
        first = record_trust(uow, "churn", 1, "built in-house from reviewed code")
        assert is_trusted(uow, "churn", 1)
    with store.write("ben") as uow:
        assert record_trust(uow, "churn", 1, "again") == first
    assert queries.trust("churn", 1) == first and first.decided_by == "ann"
    [entry] = _audit(store, "model.trust_granted")
    assert entry.after["artifact_digest"] == DIGEST and entry.after["flavor"] == "python"
    with pytest.raises(InvalidArgumentError, match="reason"), store.write("ann") as uow:
        record_trust(uow, "churn", 1, "  ")
    with pytest.raises(NotFoundError, match="models:/churn/2"), store.write("ann") as uow:
        record_trust(uow, "churn", 2, "reviewed")


def test_describing_a_model_updates_only_what_is_given(
        store: MetadataStore, queries: ModelQueries) -> None:
    _register(store)
    with store.write("ann") as uow:
        describe_model(uow, "churn", description="predicts churn")
    with store.write("ann") as uow:
        described = describe_model(uow, "churn", tags={"owner": "ann"})
    assert queries.model("churn") == described
    assert (described.description, dict(described.tags)) == ("predicts churn", {"owner": "ann"})
    with pytest.raises(NotFoundError, match="nobody"), store.write("ann") as uow:
        describe_model(uow, "nobody", description="x")
