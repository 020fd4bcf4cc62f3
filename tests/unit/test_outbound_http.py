"""The outbound HTTP client against a real local server: it posts JSON, refuses forbidden
targets before and after redirects, bounds time and reading, and never echoes a body."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.outbound import OutboundClient, OutboundLimits, check_url, display_url

SECRET_BODY = "INTERNAL-STACK-TRACE-WITH-PASSWORD-hunter2"
REDIRECTS = {  # path -> (status, Location)
    "/to-ftp": (302, "ftp://files.example.com/drop"),
    "/to-metadata": (307, "http://169.254.169.254/latest/meta-data/"),
    "/to-ok": (307, "/ok"),
    "/see-other": (303, "/ok"),
    "/loop": (307, "/loop"),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _answer(self, status: int, body: bytes = b"", location: str | None = None) -> None:
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.received.append({
            "method": self.command, "path": self.path, "headers": dict(self.headers),
            "body": self.rfile.read(length) if length else b""})

    def do_GET(self) -> None:
        self._record()
        self._answer(200 if self.path == "/ok" else 404)

    def do_POST(self) -> None:
        self._record()
        path = self.path.split("?")[0]
        if path in REDIRECTS:
            status, location = REDIRECTS[path]
            self._answer(status, location=location)
        elif path == "/ok":
            self._answer(201, b'{"ok": true}')
        elif path == "/fail":
            self._answer(500, SECRET_BODY.encode())
        elif path == "/big":
            self._answer(200, b"x" * (4 * 1024 * 1024))
        elif path == "/slow":
            time.sleep(2)
            self._answer(200)
        else:
            self._answer(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not hold up the test's end

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow handler writes to a client that gave up: expected, not news

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client() -> Iterator[OutboundClient]:
    with OutboundClient() as outbound:
        yield outbound


def test_post_json_sends_the_payload_and_returns_the_status(
        server: _Server, client: OutboundClient) -> None:
    status = client.post_json(f"{server.url}/ok", {"a": 1, "b": "é"},
                              headers={"Authorization": "Bearer k"})
    assert status == 201
    [request] = server.received
    assert json.loads(request["body"]) == {"a": 1, "b": "é"}
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"] == "Bearer k"
    assert request["headers"]["User-Agent"].startswith("loopline/")


def test_a_500_raises_a_backend_error_with_status_and_url_but_not_the_body_or_query(
        server: _Server, client: OutboundClient) -> None:
    with pytest.raises(BackendError) as caught:
        client.post_json(f"{server.url}/fail?token=s3cr3t", {"a": 1})
    message = str(caught.value)
    assert "500" in message and f"{server.url}/fail" in message
    assert SECRET_BODY not in message and "hunter2" not in message
    assert "s3cr3t" not in message and "token" not in message


def test_a_redirect_to_a_forbidden_scheme_is_refused_before_it_is_followed(
        server: _Server, client: OutboundClient) -> None:
    with pytest.raises(InvalidArgumentError, match="redirect from .* refused") as caught:
        client.post_json(f"{server.url}/to-ftp", {})
    assert caught.value.field == "url"
    assert [r["path"] for r in server.received] == ["/to-ftp"]


def test_a_redirect_to_the_metadata_address_is_refused(
        server: _Server, client: OutboundClient) -> None:
    with pytest.raises(InvalidArgumentError, match="link-local"):
        client.post_json(f"{server.url}/to-metadata", {})


def test_a_307_redirect_repeats_the_post_with_its_body(
        server: _Server, client: OutboundClient) -> None:
    assert client.post_json(f"{server.url}/to-ok", {"n": 7}) == 201
    assert [(r["method"], r["path"]) for r in server.received] == [
        ("POST", "/to-ok"), ("POST", "/ok")]
    assert json.loads(server.received[1]["body"]) == {"n": 7}


def test_a_303_redirect_turns_into_a_get_without_the_body(
        server: _Server, client: OutboundClient) -> None:
    assert client.post_json(f"{server.url}/see-other", {"n": 7}) == 200
    assert [(r["method"], r["body"]) for r in server.received][1] == ("GET", b"")


def test_more_than_three_redirects_fail(server: _Server, client: OutboundClient) -> None:
    with pytest.raises(BackendError, match="more than 3 redirects"):
        client.post_json(f"{server.url}/loop", {})
    assert len(server.received) == 4  # the first request and three hops


def test_a_slow_server_is_cut_off_at_the_timeout(server: _Server) -> None:
    limits = OutboundLimits(connect_timeout=0.5, timeout=0.5)
    started = time.monotonic()
    with OutboundClient(limits) as client, pytest.raises(BackendError, match="timed out"):
        client.post_json(f"{server.url}/slow", {})
    assert time.monotonic() - started < 1.5


def test_a_huge_response_is_read_only_up_to_the_limit(server: _Server) -> None:
    with OutboundClient(OutboundLimits(max_response_bytes=1024)) as client:
        assert client.post_json(f"{server.url}/big", {}) == 200


def test_a_refused_connection_is_a_backend_error(client: OutboundClient) -> None:
    probe = _Server()  # bind, note the port, release it: nothing listens there now
    url = probe.url
    probe.server_close()
    with pytest.raises(BackendError, match="failed: ConnectError"):
        client.post_json(f"{url}/ok", {})


def test_a_payload_that_is_not_json_is_refused(client: OutboundClient) -> None:
    with pytest.raises(InvalidArgumentError, match="payload"):
        client.post_json("http://127.0.0.1:9/ok", {"when": object()})


def test_authorization_is_dropped_on_a_redirect_to_another_origin() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "a.example":
            return httpx.Response(307, headers={"Location": "https://b.example/in"})
        return httpx.Response(202)

    with OutboundClient(transport=httpx.MockTransport(answer)) as client:
        assert client.post_json("https://a.example/x", {}, {"Authorization": "Bearer k"}) == 202
    assert "Authorization" in seen[0].headers and "Authorization" not in seen[1].headers


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://files.example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("not a url", "http:// or https://"),
    ("http:///only-a-path", "no host"),
    ("https://user:pw@example.com/", "user name or password"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata service"),
    ("http://METADATA.Google.Internal./x", "metadata service"),
])
def test_forbidden_urls_are_refused_naming_the_field(url: str, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem) as caught:
        check_url(url)
    assert caught.value.field == "url"


def test_refusals_never_show_the_query_string_or_password() -> None:
    for url in ("http://169.254.169.254/x?token=s3cr3t", "https://u:s3cr3t@example.com/?k=v"):
        with pytest.raises(InvalidArgumentError) as caught:
            check_url(url)
        assert "s3cr3t" not in str(caught.value)
    assert display_url("https://u:p@h.example:8443/a/b?q=1#f") == "https://h.example:8443/a/b"


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/api/v1/lineage",
                                 "https://marquez.internal/api", "http://[::1]:8080/"])
def test_loopback_and_ordinary_hosts_are_allowed(url: str) -> None:
    assert str(check_url(url)) == url


@pytest.mark.parametrize("limits", [
    {"timeout": 0}, {"connect_timeout": 0}, {"connect_timeout": 5, "timeout": 1},
    {"max_redirects": -1}, {"max_response_bytes": -1}])
def test_unusable_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        OutboundLimits(**limits)
