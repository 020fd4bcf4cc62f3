"""Reproducibility on every backend: a version registered with a holdout sample verifies in a
fresh process, exports to one sealed bundle, imports into a second workspace and verifies
there; a changed byte anywhere in the bundle, a malicious archive, a swapped artifact or
recorded outputs that do not match are refused or reported, naming what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_iris, make_classification
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.artifacts import generate_key
from loopline.core.errors import (
    AlreadyExistsError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PolicyDeniedError,
    UntrustedModelError,
)
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.registry.bundle_format import BundleLimits
from loopline.registry.bundle_import import open_bundle
from loopline.registry.bundle_seal import seal
from loopline.registry.holdout_compare import compare
from loopline.registry.service import ModelRegistry
from loopline.store.models import MODEL_VERSIONS

OUTPUTS = ["predict", "predict_proba"]


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="module")
def logistic(iris: Any) -> LogisticRegression:
    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="module")
def forest(iris: Any) -> RandomForestClassifier:
    X, y = iris
    return RandomForestClassifier(n_estimators=25, random_state=0).fit(X, y)


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Workspace]:
    """A second workspace (SQLite) to import into."""
    workspace = Workspace.init(tmp_path / "other",
                               overrides={"db_url": f"sqlite:///{tmp_path / 'other.db'}"})
    try:
        yield workspace
    finally:
        workspace.close()


def _objects(ws: Workspace) -> int:
    return sum(1 for _ in ws.artifacts.list())


def _object_file(ws: Workspace, digest: str) -> Path:
    [found] = (ws.config_dir / "artifacts" / "objects").rglob(f"{digest}*")
    return found


def _check(report: Any, name: str) -> Any:
    [found] = [check for check in report.checks if check.name == name]
    return found


def _set_version(ws: Workspace, version: int, **values: Any) -> None:
    """Change a stored version row behind the registry's back (a tampering test's tool)."""
    with ws.store.engine.begin() as connection:
        connection.execute(sa.update(MODEL_VERSIONS).where(
            MODEL_VERSIONS.c.name == "iris", MODEL_VERSIONS.c.version == version)
            .values(**values))


# -- holdout and verify ------------------------------------------------------------------------


def test_a_version_with_an_input_example_verifies_in_a_fresh_process(
        ws: Workspace, logistic: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    version = ws.models.register(logistic, "iris", input_example=X)
    holdout = version.extra["holdout"]
    assert (holdout["rows"], holdout["selection"], holdout["layout"]) == (150, "all", "frame")
    assert holdout["methods"] == OUTPUTS and holdout["tolerance"] == "exact"
    assert holdout["artifact_digest"] == version.artifact_digest
    assert ws.artifacts.exists(holdout["inputs"]) and ws.artifacts.exists(holdout["outputs"])
    report = ws.models.verify("iris/1")
    assert report.passed and report.reasons == (), report.reasons
    assert report.worker["pid"] != os.getpid() and report.worker["stage"] == "done"
    for name in OUTPUTS:
        check = _check(report, name)
        assert (check.passed, check.rows, check.max_abs_diff, check.policy) == (
            True, 150, 0.0, "exact")
    assert _check(report, "artifact").passed and report.rows == 150


def test_a_random_forest_with_a_fixed_seed_verifies_exactly(
        ws: Workspace, forest: RandomForestClassifier, iris: Any) -> None:
    X, _ = iris
    ws.models.register(forest, "iris", holdout=X)
    report = ws.models.verify("iris@latest")
    assert report.passed and report.tolerance == "exact", report.reasons
    assert _check(report, "predict_proba").max_abs_diff == 0.0


def test_a_large_holdout_keeps_a_fixed_sample_of_a_thousand_rows(ws: Workspace) -> None:
    X, y = make_classification(n_samples=5_000, n_features=6, random_state=1)
    model = LogisticRegression(max_iter=500).fit(X, y)
    first = ws.models.register(model, "wide", holdout=X, tolerance={"atol": 1e-12})
    again = ws.models.register(model, "wide", holdout=X, tolerance={"atol": 1e-12})
    for version in (first, again):
        holdout = version.extra["holdout"]
        assert (holdout["rows"], holdout["of_rows"], holdout["layout"]) == (1000, 5000, "array")
        assert holdout["selection"] == "random(seed=0)"
        assert holdout["tolerance"] == {"rtol": 0.0, "atol": 1e-12}
    assert first.extra["holdout"]["inputs"] == again.extra["holdout"]["inputs"]
    report = ws.models.verify("wide/2")
    assert report.passed and report.tolerance == "rtol=0, atol=1e-12", report.reasons


def test_verify_names_the_fix_when_a_version_has_no_holdout(
        ws: Workspace, logistic: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    plain = ws.models.register(logistic, "iris")
    none = ws.models.register(logistic, "iris", input_example=X, holdout=False)
    assert "holdout" not in plain.extra and "holdout" not in none.extra
    for uri in ("iris/1", "iris/2"):
        with pytest.raises(NotFoundError, match=r"holdout sample of 'models:/iris/\d'.*"
                                                r"input_example="):
            ws.models.verify(uri)
    for tolerance, message in [("close", "must be 'exact'"), ({"atol": -1}, "from 0"),
                               ({"eps": 1}, "rtol and/or atol")]:
        with pytest.raises(InvalidArgumentError, match=message):
            ws.models.register(logistic, "iris", input_example=X, tolerance=tolerance)
    with pytest.raises(InvalidArgumentError, match="tolerance.*input_example"):
        ws.models.register(logistic, "iris", tolerance="exact")
    with pytest.raises(InvalidArgumentError, match="cannot be stored as a holdout"):
        ws.models.register(logistic, "iris", input_example=X, holdout={"rows": 1})
    assert len(ws.models.versions("iris")) == 2


def test_verify_fails_and_says_why_when_artifact_or_outputs_do_not_match(
        ws: Workspace, logistic: LogisticRegression, forest: RandomForestClassifier,
        iris: Any) -> None:
    X, _ = iris
    lr = ws.models.register(logistic, "iris", input_example=X)
    rf = ws.models.register(forest, "iris", input_example=X)
    # The forest's recorded outputs under the logistic model's record: the artifact is right,
    # what it gives is not what the record says.
    _set_version(ws, 1, extra={"holdout": {**lr.extra["holdout"],
                                           "outputs": rf.extra["holdout"]["outputs"]}})
    report = ws.models.verify("iris/1")
    assert not report.passed and _check(report, "artifact").passed
    proba = _check(report, "predict_proba")
    assert not proba.passed and proba.max_abs_diff is not None and proba.max_abs_diff > 0.01
    assert any(r.startswith("predict_proba: ") and "rows differ" in r for r in report.reasons)
    # The forest's artifact under the logistic model's version: both checks say so.
    _set_version(ws, 1, artifact_digest=rf.artifact_digest, extra=dict(lr.extra))
    report = ws.models.verify("iris/1")
    assert not report.passed
    assert "recorded with artifact" in _check(report, "artifact").detail
    assert not _check(report, "predict_proba").passed


def test_verify_fails_when_the_stored_artifact_bytes_change(
        ws: Workspace, logistic: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    version = ws.models.register(logistic, "iris", input_example=X)
    stored = _object_file(ws, version.artifact_digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    report = ws.models.verify("iris/1")
    artifact = _check(report, "artifact")
    assert not report.passed and not artifact.passed
    assert "IntegrityError" in artifact.detail and version.artifact_digest in artifact.detail
    assert [check.name for check in report.checks] == ["worker", "artifact", "recorded outputs"]
    stalled = ws.models.verify("iris/1", timeout=0.05)
    assert not stalled.passed and stalled.reasons[0].startswith("worker: ")
    assert "did not finish within 0.05 s" in stalled.reasons[0]


def test_a_python_model_verifies_only_with_a_trust_decision_here(
        ws: Workspace, other: Workspace, iris: Any, tmp_path: Path) -> None:
    X, y = iris
    ws.models.register(DummyClassifier(strategy="prior").fit(X, y), "prior", flavor="python",
                       input_example=X)
    with pytest.raises(UntrustedModelError, match=r"models:/prior/1 cannot be verified.*"
                                                  r"loopline models trust"):
        ws.models.verify("prior/1")
    ws.models.trust("prior/1", "a reviewed baseline")
    assert ws.models.verify("prior/1").passed
    ws.models.export("prior/1", tmp_path / "prior.zip")
    imported = other.models.import_bundle(tmp_path / "prior.zip")
    assert any("needs a new trust decision" in note for note in imported.notes)
    assert other.models.get("prior/1").trust is None
    with pytest.raises(UntrustedModelError):
        other.models.verify("prior/1")


def test_an_encrypted_store_is_verified_with_its_keys_handed_to_the_worker(
        logistic: LogisticRegression, iris: Any, tmp_path: Path) -> None:
    X, _ = iris
    sealed = Workspace.init(tmp_path / "sealed", overrides={
        "db_url": f"sqlite:///{tmp_path / 'sealed.db'}", "encryption_key": generate_key()})
    try:
        version = sealed.models.register(logistic, "iris", input_example=X)
        assert sealed.artifacts.info(version.artifact_digest).key_id is not None
        assert sealed.models.verify("iris/1").passed
    finally:
        sealed.close()


# -- bundles -------------------------------------------------------------------------------------


def test_export_then_import_into_another_workspace_verifies_there(
        ws: Workspace, other: Workspace, logistic: LogisticRegression, iris: Any,
        tmp_path: Path) -> None:
    X, y = iris
    snapshot = ws.datasets.snapshot(X.assign(target=y), "iris-train").version
    source = ws.models.register(logistic, "iris", input_example=X, datasets=[snapshot],
                                metrics={"accuracy": 0.97}, params={"C": 1.0},
                                tags={"owner": "ann"}, description="the demo model")
    path = tmp_path / "iris.llbundle"
    exported = ws.models.export("iris/1", path)
    assert exported.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [
            "artifact.skops", "environment.json", "holdout/inputs.parquet",
            "holdout/outputs.parquet", "manifest.json", "metadata.json"]
    with pytest.raises(AlreadyExistsError):
        ws.models.export("iris/1", path)
    imported = other.models.import_bundle(path)
    copy = imported.version
    assert (copy.uri, imported.source, imported.bundle_sha256) == (
        "models:/iris/1", "models:/iris/1", exported.sha256)
    for field in ("artifact_digest", "flavor", "signature", "metrics", "params", "tags",
                  "description", "code_version", "environment"):
        assert getattr(copy, field) == getattr(source, field), field
    assert copy.extra["holdout"] == source.extra["holdout"]
    origin = copy.extra["imported_from"]
    assert (origin["uri"], origin["bundle_sha256"], origin["datasets"]) == (
        "models:/iris/1", exported.sha256, [snapshot.ref])
    assert copy.datasets == () and copy.run_id is None  # no edge to another workspace's data
    report = other.models.verify("iris/1")
    assert report.passed, report.reasons
    renamed = other.models.import_bundle(path, name="iris-copy")
    assert renamed.version.uri == "models:/iris-copy/1"
    np.testing.assert_array_equal(other.models.load("iris-copy/1").predict(X),
                                  logistic.predict(X))


def test_a_reference_profile_travels_in_the_bundle_and_reads_back_after_import(
        ws: Workspace, other: Workspace, logistic: LogisticRegression, iris: Any,
        tmp_path: Path) -> None:
    X, _ = iris
    source = ws.models.register(logistic, "iris", input_example=X, reference=X)
    path = tmp_path / "iris.llbundle"
    ws.models.export("iris/1", path)
    with zipfile.ZipFile(path) as archive:
        assert "reference/profile.json" in archive.namelist()
    copy = other.models.import_bundle(path).version
    assert copy.extra["reference_profile"] == source.extra["reference_profile"]
    there, here = other.references.reference_of("iris", 1), ws.references.reference_of("iris", 1)
    assert there is not None and here is not None
    assert there.inputs == here.inputs and there.rows == len(X)


def _bundle(ws: Workspace, model: Any, X: Any, path: Path) -> bytes:
    ws.models.register(model, "iris", input_example=X, metrics={"accuracy": 0.97})
    ws.models.export("iris/1", path)
    return path.read_bytes()


class DenyRegistration:
    """A gate that refuses every registration, keeping what it was asked."""

    def __init__(self) -> None:
        self.seen: list[GateRequest] = []

    def check(self, request: GateRequest) -> GateDecision:
        self.seen.append(request)
        return GateDecision(request.action != GateAction.REGISTER, "imports need review")


def test_an_import_is_gated_as_a_registration_and_a_denial_writes_nothing(
        ws: Workspace, other: Workspace, logistic: LogisticRegression, iris: Any,
        tmp_path: Path) -> None:
    X, _ = iris
    _bundle(ws, logistic, X, tmp_path / "good.zip")
    gate = DenyRegistration()
    governed = ModelRegistry(other.store, other.artifacts.blobs, "mallory", gate=gate)
    with pytest.raises(PolicyDeniedError, match="imports need review"):
        governed.import_bundle(tmp_path / "good.zip")
    [request] = gate.seen
    assert request.details["imported_from"]["uri"] == "models:/iris/1"
    assert other.models.models() == [] and _objects(other) == 0


def _data_offsets(path: Path) -> dict[str, int]:
    """Return the offset of the middle of each member's stored data."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            found[info.filename] = start + info.compress_size // 2
    return found


def test_one_changed_byte_anywhere_in_the_bundle_is_refused_and_nothing_is_written(
        ws: Workspace, other: Workspace, logistic: LogisticRegression, iris: Any,
        tmp_path: Path) -> None:
    X, _ = iris
    original = _bundle(ws, logistic, X, tmp_path / "good.zip")
    changed = tmp_path / "changed.zip"
    objects = _objects(other)
    named = [(offset, f"member '{name}'")
             for name, offset in _data_offsets(tmp_path / "good.zip").items()]
    named += [(len(original) - 30, "seal"), (len(original) - 300, "seal")]
    stride = list(range(0, len(original), 41))  # and a sweep over the whole file
    for position, what in [*named, *((p, "") for p in stride)]:
        data = bytearray(original)
        data[position] ^= 0x5A
        changed.write_bytes(bytes(data))
        with pytest.raises(IntegrityError) as caught:
            other.models.import_bundle(changed)
        assert what in caught.value.message, (position, caught.value.message)
    assert {what for _, what in named} >= {"member 'manifest.json'", "member 'artifact.skops'",
                                           "member 'metadata.json'"}
    assert _objects(other) == objects and other.models.models() == []
    changed.write_bytes(original[:-1])  # and a truncated one
    with pytest.raises(IntegrityError, match="no loopline seal"):
        other.models.import_bundle(changed)
    changed.write_bytes(original)
    assert other.models.import_bundle(changed).version.version == 1  # the copy was sound


def _malicious(path: Path, member: zipfile.ZipInfo, payload: bytes) -> Path:
    """Write a sealed zip holding a manifest and ``member``: only the reader's checks stop it."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", b"{}")
        archive.writestr(member, payload, compress_type=zipfile.ZIP_DEFLATED)
    seal(path)
    return path


def _member(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_a_malicious_archive_is_refused_before_anything_is_extracted(
        other: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cases = [
        (_member("../evil"), b"x", "'../evil' is refused: it climbs out"),
        (_member("/tmp/evil"), b"x", "'/tmp/evil' is refused: it is an absolute path"),
        (_member("C:/evil"), b"x", "absolute path"),
        (_member("link", stat.S_IFLNK | 0o777), b"/etc/passwd", "it is a symbolic link"),
        (_member("fifo", stat.S_IFIFO | 0o644), b"", "it is a FIFO"),
        (_member("dir/"), b"", "'dir/'"),
        (_member("bomb"), bytes(8 << 20), "more than 200 times"),
    ]
    for number, (member, payload, message) in enumerate(cases):
        path = _malicious(folder / f"case{number}.zip", member, payload)
        with pytest.raises(IntegrityError, match=message.replace("(", r"\(")):
            other.models.import_bundle(path)
    with zipfile.ZipFile(folder / "many.zip", "w") as archive:
        for number in range(20):
            archive.writestr(f"m{number}", b"")
    seal(folder / "many.zip")
    with pytest.raises(IntegrityError, match="20 members, more than the limit of 16"):
        other.models.import_bundle(folder / "many.zip")
    big = _malicious(folder / "big.zip", _member("artifact.skops"), os.urandom(4096))
    with pytest.raises(IntegrityError, match="expands to 4096 bytes, more than the limit"), \
            open_bundle(big, BundleLimits(max_member_bytes=1024)):
        pass
    unsealed = folder / "unsealed.zip"
    with zipfile.ZipFile(unsealed, "w") as archive:
        archive.writestr("manifest.json", b"{}")
    with pytest.raises(IntegrityError, match="no loopline seal"):
        other.models.import_bundle(unsealed)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"case{n}.zip" for n in range(len(cases))] + ["many.zip", "big.zip", "unsealed.zip"])
    assert other.models.models() == [] and _objects(other) == 0


def _rebuild(good: Path, path: Path, changes: dict[str, Any]) -> Path:
    """Rewrite members of ``good`` with ``changes`` and a manifest consistent with them."""
    with zipfile.ZipFile(good) as source:
        members = {name: source.read(name) for name in source.namelist()}
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["members"]:
        if entry["name"] in changes:
            data = changes[entry["name"]](members[entry["name"]])
            members[entry["name"]] = data
            entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)
    seal(path)
    return path


def test_a_consistent_bundle_with_a_foreign_or_invalid_record_is_refused(
        ws: Workspace, other: Workspace, logistic: LogisticRegression, iris: Any,
        tmp_path: Path) -> None:
    X, _ = iris
    good = tmp_path / "good.zip"
    _bundle(ws, logistic, X, good)
    foreign = _rebuild(good, tmp_path / "foreign.zip", {"artifact.skops": lambda data: data.replace(
        b"LogisticRegression", b"LogisticRegressioN")})
    with pytest.raises(IntegrityError, match="metadata.json' names artifact sha256"):
        other.models.import_bundle(foreign)
    for field, value, message in [("flavor", "tensorflow", "flavor 'tensorflow' not found"),
                                  ("signature", {"inputs": []}, "signature"),
                                  ("metrics", {"accuracy": "high"}, "not a number")]:
        def change(data: bytes, field: str = field, value: Any = value) -> bytes:
            return json.dumps({**json.loads(data), field: value}).encode()
        invalid = _rebuild(good, tmp_path / f"{field}.zip", {"metadata.json": change})
        with pytest.raises(IntegrityError, match=f"invalid record: .*{message}"):
            other.models.import_bundle(invalid)
    assert other.models.models() == [] and _objects(other) == 0


# -- the comparison itself ---------------------------------------------------------------------


def test_exact_comparison_counts_a_last_bit_change_and_a_tolerance_accepts_it() -> None:
    recorded = np.array([[0.1, 0.9], [0.5, 0.5], [np.nan, 1.0]])
    fresh = recorded.copy()
    fresh[1, 0] = np.nextafter(0.5, 1.0)
    exact = compare("predict_proba", recorded, fresh, "exact")
    assert (exact.passed, exact.rows, exact.detail) == (
        False, 3, "1 of 3 rows differ (max abs diff 1.11e-16)")
    assert compare("predict_proba", recorded, fresh, {"rtol": 0.0, "atol": 1e-12}).passed
    labels = compare("predict", np.array(["a", "b"], dtype=object), np.array(["a", "c"]),
                     {"rtol": 1.0, "atol": 1.0})
    assert not labels.passed and labels.max_abs_diff is None
    shape = compare("predict", np.zeros(3), np.zeros(4), "exact")
    assert not shape.passed and "shape 4 now, 3 recorded" in shape.detail
    assert not compare("predict", None, np.zeros(3), "exact").passed
