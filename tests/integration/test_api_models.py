"""The model registry over HTTP on every backend: a model registered through the client reads
back as the local registry has it; aliases, statuses and trust are audited as the token's user;
payload uploads are checked against their digests and the upload limit; versions naming bytes
never uploaded are refused; cards, environments and verify answer as locally."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from api_support import ApiServer, serve_api
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.api import ApiOptions
from loopline.client import Client
from loopline.core.errors import (
    AccessDeniedError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
)
from loopline.core.models import ModelStatus
from loopline.registry.registration import Payload, Registration, prepare
from loopline.store import AuditFilter

METRICS = {"accuracy": 0.96, "recall": {"overall": 0.95, "region=EU": 0.91}}
TAGS = {"purpose": "sort iris flowers", "owner": "dev"}
MODELS = "/api/v1/models"


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    X, _ = load_iris(return_X_y=True, as_frame=True)
    return X


@pytest.fixture(scope="module")
def model(iris: pd.DataFrame) -> LogisticRegression:
    _, y = load_iris(return_X_y=True, as_frame=True)
    return LogisticRegression(max_iter=1000).fit(iris, y)


def _register(api: ApiServer, model: Any, iris: pd.DataFrame, name: str = "iris",
              role: str = "developer") -> Any:
    return api.client(role).models.register(model, name, input_example=iris, metrics=METRICS,
                                            tags=TAGS, description="a first try")


def _actors(api: ApiServer, action: str) -> list[str]:
    entries = api.workspace.store.audit.entries(AuditFilter(action=action, limit=100))
    return [entry.actor for entry in entries]


def _upload(http: httpx.Client, payload: Payload) -> None:
    answer = http.post(f"{MODELS}/iris/payloads/upload", params={"digest": payload.digest},
                       content=payload.data, headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 201, answer.text


def _checks(report: Any) -> list[tuple[Any, ...]]:
    # The worker's check reports its timings, which differ from one run to the next.
    return [(c.name, c.passed, c.compared, c.policy, c.rows, c.max_abs_diff)
            for c in report.checks]


def _error(answer: Any) -> dict[str, Any]:
    detail: dict[str, Any] = answer.json()["error"]
    return detail


# -- registering -----------------------------------------------------------------------------


def test_a_model_registered_through_the_client_reads_back_as_the_local_registry_has_it(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    version = _register(api, model, iris)
    ws, client = api.workspace, api.client("admin")
    assert (version.name, version.version, version.created_by) == ("iris", 1, "dev")
    assert version.status is ModelStatus.CANDIDATE and version.flavor == "sklearn"
    assert client.models.get("iris/1") == ws.models.get("iris/1")
    assert client.models.get("models:/iris@latest") == ws.models.get("iris@latest")
    assert client.models.resolve("iris/1") == ws.models.resolve("iris/1") == version
    assert client.models.versions("iris") == ws.models.versions("iris") == [version]
    assert client.models.versions("iris", "staging") == []
    assert client.models.models() == ws.models.models()
    assert client.models.model("iris") == ws.models.model("iris")
    pd.testing.assert_series_equal(
        pd.Series(ws.models.load("iris/1").predict(iris)), pd.Series(model.predict(iris)))
    assert _actors(api, "model.version_registered") == ["dev"]
    assert set(_actors(api, "artifact.put")) == {"dev"}


def test_uploading_bytes_already_stored_answers_200_and_new_bytes_201(api: ApiServer) -> None:
    http, data = api.http("developer"), b"some payload bytes"
    digest = hashlib.sha256(data).hexdigest()
    headers = {"Content-Type": "application/octet-stream"}
    first = http.post(f"{MODELS}/iris/payloads/upload", params={"digest": f"sha256:{digest}"},
                      content=data, headers=headers)
    again = http.post(f"{MODELS}/iris/payloads/upload", params={"digest": digest},
                      content=data, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), first.text
    assert first.json()["digest"] == digest and first.json()["size"] == len(data)
    assert api.workspace.artifacts.get_bytes(digest) == data


def test_an_upload_whose_bytes_do_not_match_its_digest_is_refused_and_stores_nothing(
        api: ApiServer) -> None:
    data = b"the bytes sent"
    answer = api.http("developer").post(
        f"{MODELS}/iris/payloads/upload", params={"digest": "sha256:" + "0" * 64},
        content=data, headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 422 and _error(answer)["field"] == "digest"
    assert not api.workspace.artifacts.exists(hashlib.sha256(data).hexdigest())
    malformed = api.http("developer").post(
        f"{MODELS}/iris/payloads/upload", params={"digest": "md5:abc"}, content=data,
        headers={"Content-Type": "application/octet-stream"})
    assert malformed.status_code == 422 and _error(malformed)["field"] == "digest"


def test_an_upload_past_the_limit_answers_413_whether_its_length_is_declared_or_not(
        api: ApiServer) -> None:
    options = ApiOptions(max_upload_bytes=1024, auth_failures_per_minute=0)
    with serve_api(api.workspace, options) as small:
        http = small.http("developer")
        data = b"x" * 4096
        params = {"digest": hashlib.sha256(data).hexdigest()}
        headers = {"Content-Type": "application/octet-stream"}

        def chunks() -> Iterator[bytes]:
            yield from (data[i:i + 512] for i in range(0, len(data), 512))

        declared = http.post(f"{MODELS}/iris/payloads/upload", params=params, content=data,
                             headers=headers)
        chunked = http.post(f"{MODELS}/iris/payloads/upload", params=params, content=chunks(),
                            headers=headers)
    assert (declared.status_code, chunked.status_code) == (413, 413), chunked.text
    assert not api.workspace.artifacts.exists(params["digest"])


def test_a_developer_bound_to_some_models_registers_them_remotely_and_no_others(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    access, root = api.workspace.access, api.workspace.actor
    access.grant(root, root, "admin")
    access.grant(root, "dev", "developer", models="iris*")
    version = _register(api, model, iris, name="iris-eu")
    assert (version.name, version.created_by) == ("iris-eu", "dev")
    assert set(_actors(api, "artifact.put")) == {"dev"}
    with pytest.raises(AccessDeniedError):
        _register(api, model, iris, name="fraud")
    data = b"bytes for another model"
    refused = api.http("developer").post(
        f"{MODELS}/fraud/payloads/upload", params={"digest": hashlib.sha256(data).hexdigest()},
        content=data, headers={"Content-Type": "application/octet-stream"})
    assert refused.status_code == 403
    assert not api.workspace.artifacts.exists(hashlib.sha256(data).hexdigest())
    assert [m.name for m in api.workspace.models.models()] == ["iris-eu"]


def test_an_upload_streams_under_the_workspace_and_leaves_nothing_behind(
        api: ApiServer) -> None:
    http, data = api.http("developer"), b"payload"
    headers = {"Content-Type": "application/octet-stream"}
    for digest in (hashlib.sha256(data).hexdigest(), "0" * 64):
        http.post(f"{MODELS}/iris/payloads/upload", params={"digest": digest}, content=data,
                  headers=headers)
    folder = api.workspace.config_dir / "tmp" / "uploads"
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_version_naming_a_payload_never_uploaded_is_refused_naming_the_field(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    prepared = prepare(model, "iris", Registration(input_example=iris))
    http = api.http("developer")
    body = {key: value for key, value in dataclasses.asdict(prepared.new).items()
            if key != "name"}
    missing = {payload.what: payload for payload in prepared.payloads()}
    answer = http.post(f"{MODELS}/iris/versions", json=body)
    assert answer.status_code == 422 and _error(answer)["field"] == "artifact_digest"
    for what in ("artifact", "environment record", "holdout inputs"):
        _upload(http, missing[what])
    answer = http.post(f"{MODELS}/iris/versions", json=body)
    assert answer.status_code == 422 and _error(answer)["field"] == "extra.holdout.outputs"
    bad_digest = http.post(f"{MODELS}/iris/versions", json={**body, "artifact_digest": "ab"})
    assert _error(bad_digest)["field"] == "artifact_digest"
    unknown_flavor = http.post(f"{MODELS}/iris/versions", json={**body, "flavor": "tarot"})
    assert _error(unknown_flavor)["field"] == "flavor"
    assert api.workspace.models.models() == []
    _upload(http, missing["holdout outputs"])
    assert http.post(f"{MODELS}/iris/versions", json=body).status_code == 201


# -- aliases, statuses, trust ----------------------------------------------------------------


def test_an_alias_set_moved_and_deleted_through_the_api_matches_local_and_is_audited(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    _register(api, model, iris)
    ws, client = api.workspace, api.client("developer")
    assert client.models.set_alias("iris", "champion", 1) is None
    previous = client.models.set_alias("iris", "champion", 2)
    assert previous is not None and previous.version == 1
    assert client.models.get("iris@champion") == ws.models.get("iris@champion")
    assert client.models.resolve("iris@champion").version == 2
    assert client.models.aliases("iris") == ws.models.aliases("iris")
    removed = client.models.delete_alias("iris", "champion")
    assert (removed.alias, removed.version, removed.updated_by) == ("champion", 2, "dev")
    with pytest.raises(NotFoundError):
        client.models.get("iris@champion")
    assert _actors(api, "model.alias_moved") == ["dev", "dev"]
    assert _actors(api, "model.alias_deleted") == ["dev"]


def test_an_alias_named_upload_is_set_and_deleted_as_json(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    http = api.http("developer")
    assert http.put(f"{MODELS}/iris/aliases/upload", json={"version": 1}).json() is None
    assert api.workspace.models.get("iris@upload").version.version == 1
    assert http.get(f"{MODELS}/iris/aliases/upload").json()["version"]["version"] == 1
    removed = http.delete(f"{MODELS}/iris/aliases/upload")
    assert removed.status_code == 200 and removed.json()["alias"] == "upload"
    assert api.workspace.models.aliases("iris") == []
    assert _actors(api, "model.alias_moved") == ["dev"]


def test_a_status_change_through_the_api_matches_local_and_is_audited(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    client = api.client("developer")
    client.models.set_alias("iris", "champion", 1)
    changed = client.models.set_status("iris@champion", "staging")
    assert changed.status is ModelStatus.STAGING
    assert changed == api.workspace.models.resolve("iris/1")
    client.models.set_status("iris/1", ModelStatus.ARCHIVED)
    with pytest.raises(InvalidTransitionError):
        client.models.set_status("iris/1", "production")
    assert _actors(api, "model.status_changed") == ["dev", "dev"]


def test_a_trust_decision_needs_a_trusting_token_and_is_kept_as_locally(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    with pytest.raises(AccessDeniedError):
        api.client("developer").models.trust("iris/1", "reviewed the code")
    decision = api.client("admin").models.trust("iris/1", "reviewed the code")
    assert (decision.decided_by, decision.reason) == ("ada", "reviewed the code")
    assert api.workspace.models.get("iris/1").trust == decision
    assert api.client("viewer").models.get("iris/1") == api.workspace.models.get("iris/1")


def test_a_viewer_reads_but_every_registry_write_is_refused_with_403(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    viewer = api.client("viewer").models
    assert viewer.versions("iris") == api.workspace.models.versions("iris")
    writes = [lambda: _register(api, model, iris, role="viewer"),
              lambda: viewer.set_alias("iris", "champion", 1),
              lambda: viewer.delete_alias("iris", "champion"),
              lambda: viewer.set_status("iris/1", "staging"),
              lambda: viewer.trust("iris/1", "looks fine"),
              lambda: viewer.verify("iris/1")]
    for write in writes:
        with pytest.raises(AccessDeniedError):
            write()
    assert len(api.workspace.models.versions("iris")) == 1
    assert api.workspace.models.aliases("iris") == []


# -- errors ----------------------------------------------------------------------------------


def test_an_unknown_model_version_or_alias_answers_404(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    http, client = api.http("viewer"), api.client("developer")
    for path in ("/nope", "/nope/versions", "/nope/aliases", "/iris/versions/9",
                 "/iris/aliases/ghost", "/iris/versions/9/card"):
        answer = http.get(MODELS + path)
        assert answer.status_code == 404 and _error(answer)["code"] == "not_found", path
    with pytest.raises(NotFoundError):
        client.models.set_alias("iris", "champion", 9)
    with pytest.raises(NotFoundError):
        client.models.delete_alias("iris", "ghost")
    with pytest.raises(NotFoundError):
        client.models.set_status("nope/1", "staging")


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/iris/versions/1/status", {"status": "bogus"}, "status"),
    ("PUT", "/iris/aliases/123", {"version": 1}, "alias"),
    ("PUT", "/iris/aliases/latest", {"version": 1}, "alias"),
    ("PUT", "/iris/aliases/champion", {"version": 0}, "version"),
    ("PUT", "/iris/aliases/champion", {"version": 1, "extra": 1}, "extra"),
    ("GET", "/iris/versions?status=bogus", None, "status"),
    ("GET", "/iris/versions/1/card?format=html", None, "format"),
    ("POST", "/bad%20name/versions/1/status", {"status": "staging"}, "model"),
    ("GET", "/iris/versions?status=staging%00", None, "status"),
    ("GET", "/iris/aliases/cham%00pion", None, "model"),
    ("DELETE", "/iris/aliases/cham%00pion", None, "alias"),
    ("GET", "/ir%00is/versions", None, "model"),
])
def test_a_bad_input_answers_422_naming_the_field(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame, method: str, path: str,
        body: Any, field: str) -> None:
    _register(api, model, iris)
    answer = api.http("developer").request(method, MODELS + path, json=body)
    assert answer.status_code == 422, answer.text
    assert _error(answer)["field"] == field
    with pytest.raises(InvalidArgumentError):
        api.client("developer").models.set_alias("iris", "7", 1)


def test_a_trust_without_a_reason_answers_422(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    answer = api.http("admin").post(f"{MODELS}/iris/versions/1/trust", json={"reason": " "})
    assert answer.status_code == 422 and _error(answer)["field"] == "reason"


# -- cards, environments, verify, bundles ----------------------------------------------------


def test_card_environment_and_verify_answer_as_the_local_registry_does(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame) -> None:
    _register(api, model, iris)
    ws, client = api.workspace, api.client("developer")
    for form in ("markdown", "json"):
        assert client.models.model_card("iris/1", form) == ws.models.model_card("iris/1", form)
    assert client.models.environment_lock("iris@latest") == ws.models.environment_lock("iris/1")
    assert client.models.environment_diff("iris/1") == ws.models.environment_diff("iris/1")
    # verify answers when the fresh process is done: wait longer than a client does by default
    patient = Client(api.url, api.secrets["developer"], timeout=300)
    try:
        remote = patient.models.verify("iris/1", timeout=240)
    finally:
        patient.close()
    local = ws.models.verify("iris/1", timeout=240)
    assert remote.passed and local.passed, remote.reasons
    assert (remote.uri, remote.rows, remote.reasons) == (local.uri, local.rows, local.reasons)
    assert _checks(remote) == _checks(local)


def test_a_bundle_imported_through_the_client_is_registered_on_the_server(
        api: ApiServer, model: LogisticRegression, iris: pd.DataFrame, tmp_path: Path) -> None:
    _register(api, model, iris)
    bundle = api.workspace.models.export("iris/1", tmp_path / "iris.zip")
    imported = api.client("developer").models.import_bundle(bundle.path, "iris-copy")
    assert imported.version == api.workspace.models.resolve("iris-copy/1")
    assert imported.version.artifact_digest == api.workspace.models.resolve(
        "iris/1").artifact_digest
    assert imported.version.created_by == "dev"
