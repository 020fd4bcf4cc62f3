"""The outbound HTTP client against a real local server: it posts JSON, refuses forbidden
targets (numeric IPv4 spellings, IPv6 forms embedding IPv4, names resolving to link-local
addresses) before and after redirects, keeps the caller's headers to the first origin,
bounds time and reading, and never echoes a body, a URL path or a query string."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

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
        path, query = urlsplit(self.path)[2:4]
        if path in REDIRECTS:
            status, location = REDIRECTS[path]
            self._answer(status, location=location)
        elif path == "/redirect":  # 307 to the URL in ?to=
            self._answer(307, location=parse_qs(query)["to"][0])
        elif path == "/ok":
            self._answer(201, b'{"ok": true}')
        elif path.startswith("/fail"):
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


def test_a_500_raises_a_backend_error_with_status_and_origin_but_not_body_path_or_query(
        server: _Server, client: OutboundClient) -> None:
    with pytest.raises(BackendError) as caught:  # a Slack-style URL: the path is the secret
        client.post_json(f"{server.url}/fail/T0/B0/PATHSECRET?token=s3cr3t", {"a": 1})
    message = str(caught.value)
    assert "500" in message and server.url in message
    assert SECRET_BODY not in message and "hunter2" not in message
    assert "PATHSECRET" not in message and "/fail" not in message
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


CALLER_HEADERS = {"Authorization": "Bearer k", "X-Api-Key": "key-1", "Cookie": "session=c"}


def test_caller_headers_are_dropped_on_a_redirect_to_another_origin_and_stay_dropped() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "a.example" and request.url.path == "/x":
            return httpx.Response(307, headers={"Location": "https://b.example/in"})
        if request.url.host == "b.example":  # and back: the headers must not come back
            return httpx.Response(307, headers={"Location": "https://a.example/back"})
        return httpx.Response(202)

    with OutboundClient(transport=httpx.MockTransport(answer)) as client:
        assert client.post_json("https://a.example/x", {}, CALLER_HEADERS) == 202
    assert all(seen[0].headers[name] == value for name, value in CALLER_HEADERS.items())
    for later in seen[1:]:
        assert not {name.lower() for name in CALLER_HEADERS} & set(later.headers.keys())
        assert later.headers["Content-Type"] == "application/json"


@pytest.fixture
def other_server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_redirect_to_another_port_carries_only_content_type_of_the_callers_headers(
        server: _Server, other_server: _Server, client: OutboundClient) -> None:
    elsewhere = quote(f"{other_server.url}/ok", safe="")
    assert client.post_json(f"{server.url}/redirect?to={elsewhere}", {"n": 1},
                            CALLER_HEADERS) == 201
    [first] = server.received
    [second] = other_server.received
    assert {name: first["headers"][name] for name in CALLER_HEADERS} == CALLER_HEADERS
    assert not {name.lower() for name in CALLER_HEADERS} & {
        name.lower() for name in second["headers"]}
    assert second["headers"]["Content-Type"] == "application/json"
    assert json.loads(second["body"]) == {"n": 1}


def test_a_redirect_within_the_origin_keeps_the_callers_headers(
        server: _Server, client: OutboundClient) -> None:
    assert client.post_json(f"{server.url}/to-ok", {}, CALLER_HEADERS) == 201
    assert server.received[1]["headers"]["X-Api-Key"] == "key-1"
    assert server.received[1]["headers"]["Cookie"] == "session=c"


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


def test_refusals_never_show_the_path_query_string_or_password() -> None:
    for url in ("http://169.254.169.254/hook/s3cr3t?token=s3cr3t",
                "https://u:s3cr3t@example.com/?k=v", "http://2852039166/s3cr3t",
                "ftp://example.com/s3cr3t"):
        with pytest.raises(InvalidArgumentError) as caught:
            check_url(url)
        assert "s3cr3t" not in str(caught.value)
    assert display_url("https://u:p@h.example:8443/a/b?q=1#f") == "https://h.example:8443"
    assert display_url("http://[::1]/services/T0/B0/x") == "http://[::1]"


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/api/v1/lineage",
                                 "https://marquez.internal/api", "http://[::1]:8080/"])
def test_loopback_and_ordinary_hosts_are_allowed(url: str) -> None:
    assert str(check_url(url)) == url


@pytest.mark.parametrize(("limits", "field"), [
    ({"timeout": 0}, "limits.timeout"), ({"timeout": float("nan")}, "limits.timeout"),
    ({"connect_timeout": 0}, "limits.connect_timeout"),
    ({"connect_timeout": 5, "timeout": 1}, "limits.connect_timeout"),
    ({"max_redirects": -1}, "limits.max_redirects"),
    ({"max_redirects": 1.5}, "limits.max_redirects"),
    ({"max_response_bytes": -1}, "limits.max_response_bytes"),
    ({"max_response_bytes": True}, "limits.max_response_bytes")])
def test_unusable_limits_are_refused_naming_the_exact_field(
        limits: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        OutboundLimits(**limits)
    assert caught.value.field == field


METADATA_SPELLINGS = ["http://2852039166/latest/meta-data/", "http://0xa9fea9fe/",
                      "http://0xA9FEA9FE/", "http://169.254.43518/", "http://169.16689662/",
                      "http://0xa9.0xfe.0xa9.0xfe/", "http://0251.0376.0124776/"]
LOOPBACK_SPELLINGS = ["http://2130706433/", "http://0x7f000001/", "http://127.1/",
                      "http://0x7f.0.0.1/", "http://0177.1/"]
# Four decimal parts with leading zeros: httpx itself refuses to parse them.
UNPARSED_SPELLINGS = ["http://0251.0376.0251.0376/", "http://0177.0.0.1/"]


@pytest.mark.parametrize("url", METADATA_SPELLINGS + LOOPBACK_SPELLINGS + UNPARSED_SPELLINGS)
def test_numeric_ipv4_spellings_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_url(url)
    assert caught.value.field == "url"


@pytest.mark.parametrize("url", METADATA_SPELLINGS)
def test_numeric_spellings_of_the_metadata_address_say_what_they_mean(url: str) -> None:
    with pytest.raises(InvalidArgumentError,
                       match="non-standard spelling of 169.254.169.254; .*link-local"):
        check_url(url)


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_numeric_spellings_of_loopback_are_refused_asking_for_the_dotted_form(
        url: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"dotted decimal form \(127\.0\.0\.1\)"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://1.2.3.4.5/", "http://0x1.0x2.0x3.0x4.5/",
                                 "http://4294967296/"])
def test_a_host_that_looks_numeric_but_is_no_address_is_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="looks like an IP address"):
        check_url(url)


@pytest.mark.parametrize("url", [
    "http://[::169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/",
    "http://[0:0:0:0:0:ffff:169.254.169.254]/", "http://[64:ff9b::169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/",
    "http://[::ffff:100.100.100.200]/"])
def test_ipv6_forms_embedding_the_metadata_address_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="embeds .*link-local") as caught:
        check_url(url)
    assert caught.value.field == "url"


@pytest.mark.parametrize("url", ["http://0.0.0.0:8080/", "http://0.1.2.3/", "http://[::]/",
                                 "http://[::ffff:0.0.0.0]/", "http://0/"])
def test_unspecified_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="unspecified|non-standard"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://10.1.2.3/", "http://[::ffff:10.1.2.3]/",
                                 "http://[2002:0a01:0203::1]/", "http://localhost:5000/",
                                 "http://host123.example/", "http://1e100.net/"])
def test_private_addresses_and_names_with_digits_are_allowed(url: str) -> None:
    assert str(check_url(url)) == url


@pytest.mark.parametrize("target", [*METADATA_SPELLINGS, "http://2130706433/ok",
                                    "http://[64:ff9b::a9fe:a9fe]/", "http://0.0.0.0/"])
def test_a_redirect_to_a_numeric_or_embedded_forbidden_address_is_refused(
        server: _Server, client: OutboundClient, target: str) -> None:
    with pytest.raises(InvalidArgumentError, match="redirect from .* refused") as caught:
        client.post_json(f"{server.url}/redirect?to={quote(target, safe='')}", {})
    assert "/redirect" not in str(caught.value)
    assert len(server.received) == 1


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Make ``getaddrinfo`` answer ``answers`` for those names, the real resolver otherwise."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("addresses", [["169.254.169.254"], ["10.0.0.1", "169.254.169.254"],
                                       ["fe80::1"], ["0.0.0.0"]])
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_connecting(
        monkeypatch: pytest.MonkeyPatch, client: OutboundClient, addresses: list[str]) -> None:
    _fake_dns(monkeypatch, {"hooks.example": addresses})
    with pytest.raises(InvalidArgumentError, match="'hooks.example' resolves to") as caught:
        client.post_json("http://hooks.example/T0/PATHSECRET", {})
    assert caught.value.field == "url" and "PATHSECRET" not in str(caught.value)


def test_a_name_is_connected_to_a_checked_address_and_keeps_its_host_header(
        monkeypatch: pytest.MonkeyPatch, server: _Server, client: OutboundClient) -> None:
    port = server.server_address[1]
    # ::1 first, where nothing listens on this port: the next address is tried.
    _fake_dns(monkeypatch, {"lineage.example": ["::1", "127.0.0.1"]})
    assert client.post_json(f"http://lineage.example:{port}/ok", {"n": 1}) == 201
    [request] = server.received
    assert request["headers"]["Host"] == f"lineage.example:{port}"


def test_a_name_that_does_not_resolve_is_a_backend_error(
        monkeypatch: pytest.MonkeyPatch, client: OutboundClient) -> None:
    _fake_dns(monkeypatch, {"gone.example": []})
    with pytest.raises(BackendError, match="failed: ConnectError"):
        client.post_json("http://gone.example/x", {})


def test_localhost_is_resolved_checked_and_reached(server: _Server,
                                                   client: OutboundClient) -> None:
    assert client.post_json(f"http://localhost:{server.server_address[1]}/ok", {}) == 201
