"""The model registry service on every backend: register → load with equal predictions,
inferred signatures, aliases and statuses through the gate, verified and trust-checked
loading, environment locks and diffs, model cards, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from model_payloads import FileDropper, MeanModel
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    PolicyDeniedError,
    UntrustedModelError,
)
from loopline.core.events import EventType
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.lineage import Direction
from loopline.core.models import ModelStatus
from loopline.data.provenance import environment
from loopline.governance.approvals import ApprovalService
from loopline.registry import environment_check
from loopline.registry.service import ModelRegistry
from loopline.registry.signatures import Signature, infer_signature
from loopline.store import AuditFilter

METRICS = {"accuracy": 0.96, "recall": {"overall": 0.95, "region=EU": 0.91, "region=US": 0.97}}
TAGS = {"purpose": "sort iris flowers", "owner": "ann", "intended_use": "the demo",
        "limitations": "three species only"}


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="module")
def model(iris: tuple[pd.DataFrame, pd.Series]) -> Pipeline:
    X, y = iris
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)



class Deny:
    """A gate that denies one action and allows the rest, keeping every request it saw."""

    def __init__(self, action: GateAction) -> None:
        self.action = action
        self.seen: list[GateRequest] = []

    def check(self, request: GateRequest) -> GateDecision:
        self.seen.append(request)
        if request.action == self.action:
            return GateDecision(False, "needs a reviewer's approval", ({"rule": "review"},))
        return GateDecision(True, "fine")


def _register(ws: Workspace, model: Any, iris: Any, **options: Any) -> Any:
    X, _ = iris
    options.setdefault("input_example", X)
    return ws.models.register(model, "iris", **options)


def _object_file(ws: Workspace, digest: str) -> Path:
    [found] = (ws.config_dir / "artifacts" / "objects").rglob(f"{digest}*")
    return found


def _audit(ws: Workspace, action: str) -> list[Any]:
    return ws.store.audit.entries(AuditFilter(action=action, newest_first=False, limit=100))


# -- registering and loading -----------------------------------------------------------------


def test_a_registered_sklearn_model_loads_and_predicts_the_same(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    X, _ = iris
    version = _register(ws, model, iris, metrics=METRICS, params={"C": 1.0}, tags=TAGS)
    assert (version.name, version.version, version.flavor) == ("iris", 1, "sklearn")
    assert version.status is ModelStatus.CANDIDATE and version.created_by == "tester"
    stored = ws.artifacts.get_bytes(version.artifact_digest)
    assert hashlib.sha256(stored).hexdigest() == version.artifact_digest
    loaded = ws.models.load("models:/iris/1")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.classes == (0, 1, 2)
    assert ws.models.resolve("iris@latest") == version == ws.models.versions("iris")[0]
    assert [m.name for m in ws.models.models()] == ["iris"]
    [event] = ws.store.events.read_after(0, 100, [EventType.MODEL_VERSION_REGISTERED])
    assert event.subject == "models:/iris/1"


def test_the_signature_is_inferred_from_the_input_example(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    X, _ = iris
    version = _register(ws, model, iris)
    assert version.signature is not None
    signature = Signature.from_dict(version.signature)
    assert signature.names == tuple(X.columns)
    assert signature.inputs[0].minimum == X.iloc[:, 0].min()
    assert signature.output.type == "class" and signature.output.classes == (0, 1, 2)
    given = infer_signature(X.iloc[:, :4], model=model)
    assert _register(ws, model, iris, signature=given).signature == given.to_dict()
    plain = ws.models.register(MeanModel(1.0), "mean", flavor="python", input_example=X)
    assert plain.signature is not None and plain.signature["output"]["type"] == "number"


def test_metrics_overall_and_per_slice_are_kept_in_one_form(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    version = _register(ws, model, iris, metrics=METRICS)
    assert dict(version.metrics) == {
        "accuracy": 0.96, "recall": 0.95,
        "slices": {"region=EU": {"recall": 0.91}, "region=US": {"recall": 0.97}}}
    same = _register(ws, model, iris, metrics=version.metrics)  # the stored form is accepted
    assert same.metrics == version.metrics
    with pytest.raises(InvalidArgumentError, match=r"metrics\.recall: is given twice"):
        _register(ws, model, iris, metrics={"recall": 0.9, "slices": {"overall": {"recall": 1}}})
    with pytest.raises(InvalidArgumentError, match="'high' is not a number"):
        _register(ws, model, iris, metrics={"accuracy": "high"})


def test_code_version_environment_and_lineage_are_recorded(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    X, y = iris
    snapshot = ws.datasets.snapshot(X.assign(target=y), "iris-train").version
    run = ws.pipelines.run(trains)
    version = _register(ws, model, iris, datasets=[snapshot], run=run.run.id)
    assert version.datasets == (snapshot.ref,) and version.run_id == run.run.id
    assert version.code_version is not None and "commit" in version.code_version
    env = version.environment or {}
    assert env["digest"] == environment().digest
    assert env["key_packages"]["scikit-learn"] == sklearn.__version__
    assert ws.artifacts.exists(env["artifact"])
    upstream = {e.source.id for e in ws.lineage.queries.neighbours(
        "model_version:iris@1", Direction.UPSTREAM)}
    assert {f"dataset_snapshot:{snapshot.ref}", f"pipeline_run:{run.run.id}"} <= upstream


@task
def one() -> int:
    return 1


@pipeline
def trains() -> int:
    return one()


# -- aliases, status, gate ---------------------------------------------------------------------


def test_an_alias_moves_and_resolves_and_the_move_is_audited(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    for _ in range(2):
        _register(ws, model, iris)
    assert ws.models.set_alias("iris", "champion", 1) is None
    previous = ws.models.set_alias("iris", "champion", 2)
    assert previous is not None and previous.version == 1
    for uri in ("models:/iris@champion", "iris@champion"):
        assert ws.models.resolve(uri).version == 2
    details = ws.models.get("iris/2")
    assert [a.alias for a in details.aliases] == ["champion"] and details.trust is None
    entries = _audit(ws, "model.alias_moved")
    assert [(e.before and e.before["version"], e.after["version"]) for e in entries] == [
        (None, 1), (1, 2)]
    assert entries[-1].after["gate"]["allowed"] is True
    removed = ws.models.delete_alias("iris", "champion")
    assert removed.version == 2 and ws.models.aliases("iris") == []


def test_a_status_change_follows_the_lifecycle(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    assert ws.models.set_status("iris/1", "staging").status is ModelStatus.STAGING
    assert ws.models.set_status("iris@latest", ModelStatus.PRODUCTION).status is \
        ModelStatus.PRODUCTION
    with pytest.raises(InvalidTransitionError, match="'production' to 'candidate'"):
        ws.models.set_status("iris/1", "candidate")
    with pytest.raises(InvalidArgumentError, match="'retired' is not a status"):
        ws.models.set_status("iris/1", "retired")
    moves = [(e.payload["from"], e.payload["to"])
             for e in ws.store.events.read_after(0, 100, [EventType.MODEL_STATUS_CHANGED])]
    assert moves == [("candidate", "staging"), ("staging", "production")]


def test_a_denying_gate_refuses_the_alias_move_and_nothing_is_written(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    gate = Deny(GateAction.ALIAS)
    governed = ModelRegistry(ws.store, ws.artifacts.blobs, "mallory", gate=gate)
    events, head = ws.store.events.count(), ws.store.audit.head()
    with pytest.raises(PolicyDeniedError, match="needs a reviewer's approval"):
        governed.set_alias("iris", "champion", 1)
    assert (ws.store.events.count(), ws.store.audit.head()) == (events, head)
    assert ws.models.aliases("iris") == []
    [request] = gate.seen
    assert (request.action, request.model, request.version, request.actor, request.target) == (
        GateAction.ALIAS, "iris", 1, "mallory", "champion")
    assert request.details["from"] is None and request.details["status"] == "candidate"
    assert governed.set_status("iris/1", "staging").status is ModelStatus.STAGING


def test_a_denied_registration_stores_neither_version_nor_artifact(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    governed = ModelRegistry(ws.store, ws.artifacts.blobs, "mallory",
                             gate=Deny(GateAction.REGISTER))
    objects = sum(1 for _ in ws.artifacts.list())
    with pytest.raises(PolicyDeniedError):
        governed.register(model, "iris", metrics={"accuracy": 0.5})
    assert ws.models.models() == [] and sum(1 for _ in ws.artifacts.list()) == objects


# -- loading safely ------------------------------------------------------------------------------


def test_a_tampered_artifact_refuses_to_load_naming_the_version(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    version = _register(ws, model, iris)
    stored = _object_file(ws, version.artifact_digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"models:/iris/1 \(sha256 [0-9a-f]{64}\)") as caught:
        ws.models.load("iris/1")
    assert version.artifact_digest in caught.value.message
    stored.unlink()
    with pytest.raises(IntegrityError, match="models:/iris/1.*not found"):
        ws.models.load("iris/1")


def test_an_untrusted_pickle_refuses_to_load_and_its_payload_never_runs(
        ws: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    ws.models.register(FileDropper(target), "dropper", flavor="python")
    with pytest.raises(UntrustedModelError, match="models:/dropper/1.*no audited trust"):
        ws.models.load("dropper/1")
    assert not target.exists()
    ws.models.trust("dropper/1", "to prove the payload is live")  # so refusing is what saved us
    with pytest.raises(IntegrityError, match="models:/dropper/1.*no predict method"):
        ws.models.load("dropper/1")
    assert target.exists()


def test_a_pickle_loads_once_the_version_is_trusted(ws: Workspace) -> None:
    ws.models.register(MeanModel(2.5), "mean", flavor="python")
    with pytest.raises(UntrustedModelError, match="loopline models trust models:/mean/1"):
        ws.models.load("mean@latest")
    decision = ws.models.trust("mean/1", "built in-house from reviewed code")
    assert decision.decided_by == "tester"
    loaded = ws.models.load("mean/1")
    np.testing.assert_array_equal(loaded.predict([[1], [2]]), [2.5, 2.5])
    assert ws.models.get("mean/1").trust == decision
    [entry] = _audit(ws, "model.trust_granted")
    assert entry.after["reason"] == "built in-house from reviewed code"


def test_a_quarantined_version_loads_only_when_asked_explicitly(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    ws.models.set_status("iris/1", "quarantined")
    with pytest.raises(ConflictError, match="models:/iris/1 is quarantined"):
        ws.models.load("iris/1")
    assert ws.models.load("iris/1", allow_quarantined=True).flavor == "sklearn"


def _approved_release(ws: Workspace, version: int, reason: str) -> str:
    request = ws.approvals.request("iris", version, "status", "candidate", reason)
    ApprovalService(ws.store, ws.access, "ann").approve(request.id, "looked at it")
    return request.id


def test_a_quarantined_version_cannot_be_released_through_the_archive_unapproved(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    ws.models.set_status("iris/1", "quarantined")
    assert ws.models.set_status("iris/1", "archived").status is ModelStatus.ARCHIVED
    with pytest.raises(PolicyDeniedError, match="quarantined before and never released"):
        ws.models.set_status("iris/1", "candidate")  # archived -> candidate: still needs it
    assert ws.models.resolve("iris/1").status is ModelStatus.ARCHIVED
    _approved_release(ws, 1, "the alert was a false alarm")
    assert ws.models.set_status("iris/1", "candidate").status is ModelStatus.CANDIDATE
    # released through an approval: a later archive and restore need none
    ws.models.set_status("iris/1", "archived")
    assert ws.models.set_status("iris/1", "candidate").status is ModelStatus.CANDIDATE
    # a version never quarantined is restored from the archive as before
    _register(ws, model, iris)
    ws.models.set_status("iris/2", "archived")
    assert ws.models.set_status("iris/2", "candidate").status is ModelStatus.CANDIDATE


def test_an_approval_for_an_earlier_quarantine_does_not_release_a_later_one(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    ws.models.set_status("iris/1", "quarantined")  # day 1
    day_one = _approved_release(ws, 1, "day 1: a false alarm")
    ws.models.set_status("iris/1", "candidate")
    ws.models.set_status("iris/1", "quarantined")  # day 3: quarantined again
    for route in ("candidate", "archived"):
        if route == "archived":
            ws.models.set_status("iris/1", "archived")
        with pytest.raises(PolicyDeniedError, match=f"{day_one} was made before its latest"):
            ws.models.set_status("iris/1", "candidate")  # the day-1 approval is still open
    ws.approvals.withdraw(day_one)
    _approved_release(ws, 1, "day 3: checked again")
    assert ws.models.set_status("iris/1", "candidate").status is ModelStatus.CANDIDATE


# -- environment and card ------------------------------------------------------------------------


def test_the_environment_lock_parses_and_matches_this_process(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    version = _register(ws, model, iris)
    lock = ws.models.environment_lock("iris/1")
    header = [line for line in lock.splitlines() if line.startswith("#")]
    pins = [line for line in lock.splitlines() if line and not line.startswith("#")]
    assert f"# environment sha256:{version.environment['digest']}" in header
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*==\S+", pin) for pin in pins), pins
    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert ws.models.environment_diff("iris/1") == []


def test_an_environment_difference_in_a_package_that_matters_is_a_warning() -> None:
    here = environment()
    changed = (*(p if not p.startswith("scikit-learn==") else "scikit-learn==0.1"
                 for p in here.packages), "zz-extra==1")
    other = dataclasses.replace(here, packages=changed, python_version="3.99.0")
    found = environment_check.compare(here, other, "sklearn")
    assert [(d.package, d.severity) for d in found] == [
        ("python", "warning"), ("scikit-learn", "warning"), ("zz-extra", "info")]


def test_the_model_card_holds_purpose_data_metrics_and_signature(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    X, y = iris
    snapshot = ws.datasets.snapshot(X.assign(target=y), "iris-train").version
    _register(ws, model, iris, metrics=METRICS, tags={**TAGS, "team": "a|b"},
              datasets=[snapshot.ref], description="first cut")
    ws.models.set_alias("iris", "champion", 1)
    card = ws.models.model_card("iris@champion")
    for text in ("# Model card: iris version 1", "sort iris flowers", "three species only",
                 snapshot.id, "| accuracy | 0.96 |", "| slice | recall |",
                 "| region=EU | 0.91 |", "| petal length (cm) | float64 | no | 1 .. 6.9 |",
                 "Output: class (classes 0, 1, 2)", "| team | a\\|b |", "champion"):
        assert text in card, text
    data = json.loads(ws.models.model_card("iris/1", format="json"))
    assert data["metrics"]["slices"]["region=US"] == {"recall": 0.97}
    assert data["training_data"][0]["snapshot_id"] == snapshot.id
    assert [c["name"] for c in data["signature"]["inputs"]] == list(X.columns)
    assert data["owner"] == "ann" and data["tags"] == {"team": "a|b"}
    with pytest.raises(InvalidArgumentError, match="format"):
        ws.models.model_card("iris/1", format="html")  # type: ignore[arg-type]


# -- bad input -----------------------------------------------------------------------------------


def test_unknown_models_bad_uris_and_missing_versions_give_clear_errors(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    _register(ws, model, iris)
    with pytest.raises(NotFoundError, match="no model 'nope' is registered"):
        ws.models.load("nope/1")
    with pytest.raises(NotFoundError, match="loopline models list"):
        ws.models.versions("nope")
    with pytest.raises(InvalidArgumentError, match="expected models:/NAME/VERSION") as caught:
        ws.models.resolve("iris")
    assert caught.value.field == "model"
    with pytest.raises(NotFoundError, match=r"models:/iris/9.*versions 1 to 1"):
        ws.models.set_alias("iris", "champion", 9)
    with pytest.raises(NotFoundError, match="models:/iris@champion"):
        ws.models.resolve("iris@champion")
    with pytest.raises(InvalidArgumentError, match="reserved"):
        ws.models.set_alias("iris", "latest", 1)
    assert _audit(ws, "model.alias_moved") == []


def test_bad_registrations_are_refused_before_anything_is_written(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    attempts: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"datasets": ["missing@1"]}, NotFoundError, "dataset snapshot 'missing@1'"),
        ({"run": "0" * 32}, NotFoundError, "pipeline run"),
        ({"flavor": "pickle"}, InvalidArgumentError, "known flavors"),
        ({"datasets": ["iris"]}, InvalidArgumentError, "NAME@VERSION"),
        ({"signature": {"inputs": []}}, InvalidArgumentError, "signature"),
    ]
    for options, error, message in attempts:
        with pytest.raises(error, match=message):
            _register(ws, model, iris, **options)
    with pytest.raises(InvalidArgumentError, match="no flavor stores a dict"):
        ws.models.register({"weights": [1, 2]}, "iris")
    with pytest.raises(InvalidArgumentError, match="invalid model"):
        ws.models.register(model, "bad name")
    assert ws.models.models() == []


def test_a_signature_its_own_input_example_breaks_is_refused(
        ws: Workspace, model: Pipeline, iris: Any) -> None:
    from loopline.registry.signatures import infer_signature
    X, _ = iris
    signature = infer_signature(X, model=model)
    renamed = X.rename(columns={X.columns[1]: "something else"})
    with pytest.raises(InvalidArgumentError, match="input_example") as caught:
        ws.models.register(model, "iris", signature=signature, input_example=renamed)
    assert "something else" in caught.value.message or X.columns[1] in caught.value.message
    assert ws.models.models() == []
