"""The body guard checks every state-changing body before anything reads it whole: chunked
bodies without a length or a media type included, before authentication."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from api_support import ApiServer

MIB = 1 << 20


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"[" * min(size, total - sent)
        sent += size


def test_a_chunked_body_without_media_type_is_refused_before_authentication(
        api: ApiServer) -> None:
    http = api.http(None)
    answer = http.post("/api/v1/runs", content=iter([b'{"pipeline": "x"}']))
    assert answer.status_code == 415
    assert answer.json()["error"]["field"] == "Content-Type"


def test_a_chunked_body_past_the_limit_is_refused_413_without_a_token(api: ApiServer) -> None:
    answer = api.http(None).post("/api/v1/runs", content=_chunks(4 * MIB),
                                 headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


def test_an_empty_chunked_body_and_no_body_pass_to_authentication(api: ApiServer) -> None:
    http = api.http(None)
    assert http.post("/api/v1/runs", content=iter([b""])).status_code == 401
    assert http.delete("/api/v1/tokens/0123456789abcdef0123456789abcdef").status_code == 401


def test_a_declared_length_of_another_media_type_is_refused_415(api: ApiServer) -> None:
    answer = api.http("admin").post("/api/v1/tokens", content=b"user=x",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 415


def test_an_alias_named_upload_is_an_ordinary_json_route(api: ApiServer) -> None:
    answer = api.http("developer").put("/api/v1/models/nope/aliases/upload", json={"version": 1})
    assert answer.status_code in {404, 422}  # not 415: only the two upload routes take bytes
    assert answer.json()["error"]["code"] != "unsupported_media_type"


def test_a_unicode_digit_cursor_is_refused_422_not_500(api: ApiServer) -> None:
    answer = api.http("admin").get("/api/v1/tokens", params={"cursor": "\u00b2"})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "cursor"


def test_the_guard_keeps_the_body_for_the_handler(api: ApiServer) -> None:
    made = api.http("admin").post("/api/v1/tokens", content=iter([b'{"user": "x", ',
                                                                  b'"role": "viewer"}']),
                                  headers={"Content-Type": "application/json"})
    assert made.status_code == 201, made.text
    assert made.json()["token"]["user"] == "x"
    assert httpx.get(f"{api.url}/api/v1/health").status_code == 200
