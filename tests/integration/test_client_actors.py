"""The client's acting user, its warning about tokens in clear, and how it sends payloads.

Changes whose local method takes the ``actor`` first take it remotely too; any actor other
than the token's user is refused naming ``actor`` before anything is sent (only ``GET
/whoami`` is, once per client), and with the right actor a change through the client is the
one a local call makes (on each backend). A plain ``http://`` URL to a host that is not
loopback is logged as a warning when the client is made. File payloads are streamed, and
``verify`` waits as long as the check it asks for. The checks without a server go through
``httpx.MockTransport``.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import ApiServer

from loopline.client import Client
from loopline.client.models import VERIFY_MARGIN
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.governance import Role
from loopline.core.models import NewModelVersion
from loopline.registry.registration import Payload
from loopline.store import AuditFilter

GUARD = textwrap.dedent("""\
    kind: gate_policy
    name: prod-guard
    applies_to: {models: ["fraud"], gates: [alias], targets: [production]}
    rules:
      - {id: one-approver, kind: approvals, count: 1}
    """)
MONITOR: dict[str, Any] = {"rules": [{"name": "errors", "signal": "error_rate",
                                      "deployment": "web", "window": "5m",
                                      "threshold": 0.05}]}
MISSING = {"error": {"code": "not_found", "message": "no such thing", "field": None}}


@dataclass
class Recorder:
    """A fake server: answers ``/whoami`` as ``user``, 404 to the rest, and keeps requests."""

    user: str = "ada"
    sent: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        self.bodies.append(request.read())
        if request.url.path == "/api/v1/whoami":
            return httpx.Response(200, json={"user": self.user, "role": "admin",
                                             "token_id": "t1"})
        return httpx.Response(404, json=MISSING)

    def calls(self) -> list[tuple[str, str]]:
        """Return the method and path of each request, in order."""
        return [(r.method, r.url.path) for r in self.sent]

    def client(self) -> Client:
        """Return a client whose requests this recorder answers."""
        return Client("http://127.0.0.1:9", "llt_secret",
                      transport=httpx.MockTransport(self))


Change = Callable[[Client, str], Any]
CHANGES: dict[str, Change] = {
    "grant": lambda c, who: c.access.grant(who, "eve", "viewer"),
    "revoke": lambda c, who: c.access.revoke(who, "eve", "viewer"),
    "add_identity": lambda c, who: c.access.add_identity(who, "eve"),
    "disable": lambda c, who: c.access.disable(who, "eve"),
    "enable": lambda c, who: c.access.enable(who, "eve"),
    "policies.apply": lambda c, who: c.policies.apply(who, {"guard.yaml": GUARD}),
    "monitor_configs.apply": lambda c, who: c.monitor_configs.apply(who, MONITOR),
    "monitor_configs.apply_yaml": lambda c, who: c.monitor_configs.apply_yaml(who, "rules: []"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_actor_other_than_the_tokens_user_is_refused_before_anything_is_sent(
        change: str) -> None:
    server = Recorder()
    with server.client() as client:
        for _ in range(2):
            with pytest.raises(InvalidArgumentError) as refused:
                CHANGES[change](client, "bob")
            assert refused.value.field == "actor"
            assert "'bob'" in str(refused.value) and "'ada'" in str(refused.value)
    assert server.calls() == [("GET", "/api/v1/whoami")]  # asked once, nothing else sent


def test_the_tokens_user_is_asked_once_per_client_across_services() -> None:
    server = Recorder()
    with server.client() as client:
        for change in CHANGES.values():
            with pytest.raises(NotFoundError):  # the fake server knows nothing else
                change(client, "ada")
    calls = server.calls()
    assert calls.count(("GET", "/api/v1/whoami")) == 1 and len(calls) == len(CHANGES) + 1


def test_a_remote_policy_folder_without_policies_is_refused_naming_it_before_sending(
        tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no policy here")
    server = Recorder()
    with server.client() as client:
        with pytest.raises(InvalidArgumentError) as refused:
            client.policies.apply_dir("ada", tmp_path)
        assert refused.value.field == str(tmp_path)
        with pytest.raises(InvalidArgumentError) as default:
            client.policies.apply("ada", {})
        assert default.value.field == "the policy files"
    assert server.calls() == [("GET", "/api/v1/whoami")]


# -- the token in clear ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://models.example.com:8080", "http://10.0.0.7",
                                 "http://[fd00::1]:8443"])
def test_a_plain_http_url_to_another_host_is_logged_once_as_a_warning(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="loopline.client.transport"), \
            Client(url, "llt_secret", transport=httpx.MockTransport(Recorder())) as client:
        client.whoami()
        client.whoami()
    [record] = [r for r in caplog.records if r.name == "loopline.client.transport"]
    assert record.levelno == logging.WARNING
    assert "in clear" in record.getMessage() and url in record.getMessage()
    assert "llt_secret" not in caplog.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080",
                                 "http://[::1]:8080", "http://127.1.2.3",
                                 "https://models.example.com"])
def test_loopback_or_https_urls_log_no_warning(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="loopline.client.transport"):
        Client(url, "llt_secret", transport=httpx.MockTransport(Recorder())).close()
    assert [r for r in caplog.records if r.name == "loopline.client.transport"] == []


# -- payloads and verify ---------------------------------------------------------------------


def test_a_file_payload_is_streamed_with_its_length_and_digest(tmp_path: Path) -> None:
    member = tmp_path / "model.onnx"
    member.write_bytes(b"\x00\x01model bytes" * 100_000)
    server = Recorder()
    new = NewModelVersion(name="iris", artifact_digest="ab" * 32, flavor="onnx")
    with server.client() as client, pytest.raises(NotFoundError):
        client.models.record_version(new, [Payload("ab" * 32, "artifact", path=member)])
    upload = server.sent[0]
    assert (upload.method, upload.url.path) == ("POST", "/api/v1/models/iris/payloads/upload")
    assert upload.url.params["digest"] == "sha256:" + "ab" * 32
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert upload.headers["Content-Length"] == str(member.stat().st_size)
    assert server.bodies[0] == member.read_bytes()


def test_verify_waits_for_the_check_plus_a_margin_whatever_the_clients_timeout() -> None:
    server = Recorder()
    with Client("http://127.0.0.1:9", "llt_secret", timeout=5.0,
                transport=httpx.MockTransport(server)) as client:
        with pytest.raises(NotFoundError):
            client.models.verify("iris/1", timeout=900.0)
        with pytest.raises(NotFoundError):
            client.models.get("iris/1")
    verify, read = server.sent
    assert verify.url.path == "/api/v1/models/iris/versions/1/verify"
    assert verify.extensions["timeout"]["read"] == 900.0 + VERIFY_MARGIN
    assert read.extensions["timeout"]["read"] == 5.0


# -- through a server, on each backend -------------------------------------------------------


def _written(api: ApiServer) -> int:
    return len(api.workspace.audit.entries(AuditFilter(limit=1000)))


def test_a_wrong_actor_writes_nothing_on_the_server(api: ApiServer) -> None:
    ws = api.workspace
    before, identities = _written(api), ws.access.identities()
    client = api.client("admin")
    for change in CHANGES.values():
        with pytest.raises(InvalidArgumentError) as refused:
            change(client, "dev")
        assert refused.value.field == "actor"
    assert _written(api) == before
    assert ws.access.bindings() == [] and ws.access.identities() == identities
    assert ws.policies.current() is None and ws.monitor_configs.current() is None


def test_changes_with_the_tokens_user_as_actor_are_those_a_local_call_makes(
        api: ApiServer) -> None:
    ws, client = api.workspace, api.client("admin")
    binding = client.access.grant("ada", "ada", Role.ADMIN)
    assert [binding] == ws.access.bindings() and binding.created_by == "ada"
    assert client.access.grant("ada", "ada", "admin") == binding  # as locally: unchanged
    scoped = client.access.grant("ada", "dev", Role.DEVELOPER, "fraud-*")
    assert ws.access.bindings("dev") == [scoped]
    client.access.revoke("ada", "dev", Role.DEVELOPER, "fraud-*")
    assert ws.access.bindings("dev") == []

    applied = client.policies.apply("ada", {"guard.yaml": GUARD})
    assert applied.applied_by == "ada" and applied.policy_set == ws.policies.active()
    again = ws.policies.apply("ada", {"guard.yaml": GUARD})
    assert not again.changed and again.id == applied.id

    config = client.monitor_configs.apply("ada", MONITOR, source="monitor.yaml")
    local = ws.monitor_configs.current()
    assert local is not None and replace(config, changed=True, warnings=()) == local
    assert not ws.monitor_configs.apply("ada", MONITOR, source="monitor.yaml").changed

    actors = {e.action: e.actor for e in ws.audit.entries(AuditFilter(limit=1000))}
    assert {actors[a] for a in ("governance.role_granted", "governance.role_revoked",
                                "governance.policy_applied",
                                "monitoring.config_applied")} == {"ada"}
