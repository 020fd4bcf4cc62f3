"""``loopline serve --workers 2`` as a user runs it: two processes on one port both answer,
``/metrics`` adds up both workers' series, both log to one prediction log, and SIGTERM drops
readiness before the listener closes, then stops every process and leaves no debris."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import deploy, make_workspace, primary, record, register_constant

from loopline.app import Workspace

START_SECONDS = 60.0
MAX_REQUESTS = 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until readiness answers 200 twenty times in a row, each on a new connection."""
    deadline = time.monotonic() + START_SECONDS
    in_a_row = 0
    while in_a_row < 20:
        assert time.monotonic() < deadline, "the workers did not become ready in time"
        assert process.poll() is None, "the server exited while starting"
        try:
            ready = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
        if not ready:
            time.sleep(0.1)


def _worker_pids(metrics_dir: Path) -> set[str]:
    """Processes that have answered a request (histogram series exist only after one)."""
    return {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("histogram_*.db")}


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "loopline_requests_total"
               and sample.labels.get("deployment") == "web")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, str, subprocess.Popen[bytes], Path]]:
    ws = make_workspace(tmp_path)
    deploy(ws, "web", [primary(register_constant(ws, "const", 3.0))])
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "loopline", "--workspace", str(ws.root), "--db-url",
         ws.settings.db_url, "serve", "--workers", "2", "--port", str(port),
         "--drain-seconds", "1.5"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield ws, f"http://127.0.0.1:{port}", process, metrics_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        log.close()
        ws.close()


def test_two_workers_share_the_port_the_metrics_and_the_log_and_drain_on_sigterm(
        served: tuple[Workspace, str, subprocess.Popen[bytes], Path]) -> None:
    ws, url, process, metrics_dir = served
    _wait_ready(url, process)

    def one(i: int) -> str:
        # a new connection per request, so the kernel hands them to either worker; a worker
        # still loading answers 503 with Retry-After, and a client retries
        deadline = time.monotonic() + 30
        while True:
            with httpx.Client(base_url=url, timeout=10) as client:
                response = client.post("/predict/web", json={"records": [record()]},
                                       headers={"X-Request-Id": f"req-{i}"})
            if response.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [3.0]
        return response.headers["x-request-id"]

    sent: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        while len(sent) < MAX_REQUESTS and len(_worker_pids(metrics_dir)) < 2:
            sent += pool.map(one, range(len(sent), len(sent) + 40))
    assert len(_worker_pids(metrics_dir)) == 2, "one worker answered every request"
    assert _requests_counted(url) == len(sent)  # whichever worker renders, both are summed

    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    ready = 200
    while ready == 200 and time.monotonic() < deadline:
        ready = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code
    assert ready == 503, "readiness did not drop while the listener was still open"
    assert process.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=2)

    logged = {row["request_id"] for row in ws.predictions.read().to_pylist()}
    assert logged == set(sent)  # both workers flushed their log on the way out
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))  # each worker left the sums
