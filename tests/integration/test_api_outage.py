"""When the metadata database is unreachable the API answers 503 with ``Retry-After`` at
once (health included), never a hang, a 500 or a stack trace."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from loopline.api import ApiOptions, create_api
from loopline.app import Workspace
from loopline.serving.server import ThreadedServer

pytest.importorskip("psycopg")
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


def test_an_unreachable_store_is_answered_503_with_retry_after_quickly(tmp_path: Path) -> None:
    Workspace.init(tmp_path).close()
    cut_off = Workspace.open(tmp_path, overrides={"db_url": UNREACHABLE}, check_schema=False)
    server = ThreadedServer(create_api(cut_off, ApiOptions(auth_failures_per_minute=0)))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for path, headers in [("/api/v1/health", {}), (
                    "/api/v1/models", {"Authorization": "Bearer llt_" + "A" * 43})]:
                start = time.monotonic()
                answer = http.get(path, headers=headers)
                assert time.monotonic() - start < 5.0, path
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["Retry-After"] == "2"
                assert "Traceback" not in answer.text
            assert http.get("/api/v1/models", headers={
                "Authorization": "Bearer llt_" + "A" * 43}).json()["error"]["code"] == \
                "backend_unavailable"
    finally:
        server.stop()
        cut_off.close()
