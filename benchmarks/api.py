"""Benchmark the control-plane API against the same calls on a local workspace, in one run.

Prints one JSON document on stdout (progress goes to stderr). One workspace on SQLite and,
when a URL is given, on PostgreSQL (a private schema ``lb_<hex>``, dropped afterwards); a
real ``loopline server --no-background`` process serves it on a free loopback port, and the
benchmark calls it with an admin token (authentication on, every request):

    read    model show: ``client.models.get("bench/1")`` (``GET /models/bench/versions/1``)
            one caller at a time, and from ``--concurrency`` threads at once (each with its own
            client), against ``ws.models.get("bench/1")`` on the local workspace
    write   register a small model: ``client.models.register(model, ...)`` (prepare locally,
            upload the artifact, record the version) against ``ws.models.register(...)``
    auth    ``GET /whoami`` (authentication and nothing else): the floor of any API call

Each figure is requests per second and latency percentiles (p50, p99) in milliseconds.
Ratios compare the API with the local call from the same run: ``p50_ratio`` is API p50 /
local p50 (1.0 = as fast, higher is slower) and ``rps_ratio`` API req/s / local req/s.
Nothing here asserts a timing.

Run ``make bench`` or ``.venv/bin/python benchmarks/api.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from bench_common import (
    add_common_arguments,
    check,
    elapsed,
    machine,
    on_postgres,
    progress,
    public_settings,
    ratio,
    scratch,
)
from loopline.app import Workspace
from loopline.client import Client

DEFAULTS: dict[str, Any] = {"reads": 2000, "writes": 40, "concurrency": 8}
QUICK: dict[str, Any] = {"reads": 100, "writes": 5, "concurrency": 4}
START_TIMEOUT = 60.0
NOTE = ("p50_ratio = API p50 / local p50 and rps_ratio = API req/s / local req/s from the "
        "same run; the API runs in its own process (`loopline server --no-background`) on "
        "loopback with an admin token on every request")


@dataclass(frozen=True, slots=True)
class Settings:
    """How many calls of each kind, and how many concurrent readers."""

    reads: int
    writes: int
    concurrency: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool


@dataclass(frozen=True, slots=True)
class Subject:
    """The small model registered, and the rows that type its signature."""

    model: Any
    example: pd.DataFrame


def subject(seed: int) -> Subject:
    """Return a logistic regression fitted on iris (shipped with scikit-learn)."""
    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=1000, random_state=seed).fit(features, target)
    return Subject(model, features.sample(20, random_state=seed))


def figures(seconds: list[float], wall: float | None = None) -> dict[str, float]:
    """Return req/s (by wall time when given, else by the sum), p50, p99 and max in ms."""
    ordered = np.sort(np.asarray(seconds))
    total = wall if wall is not None else float(ordered.sum())
    return {"requests": len(seconds), "rps": round(len(seconds) / total, 1),
            "p50_ms": round(float(np.percentile(ordered, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(ordered, 99)) * 1000, 3),
            "max_ms": round(float(ordered[-1]) * 1000, 3)}


def timed(action: Callable[[], Any], count: int) -> list[float]:
    """Call ``action`` ``count`` times; return each call's seconds."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return seconds


def concurrent_reads(url: str, token: str, count: int, threads: int) -> dict[str, float]:
    """Read from ``threads`` clients at once, ``count`` calls in all; return the figures."""
    clients = [Client(url, token) for _ in range(threads)]
    for client in clients:
        client.models.get("bench/1")  # connect and warm each client before timing

    def share(client: Client) -> list[float]:
        return timed(lambda: client.models.get("bench/1"), count // threads)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        seconds = [s for part in pool.map(share, clients) for s in part]
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return figures(seconds, wall)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server_process(root: Path, db_url: str) -> Iterator[str]:
    """Run ``loopline server --no-background`` over the workspace; yield its URL."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment["LOOPLINE_DB_URL"] = db_url
    process = subprocess.Popen(
        [sys.executable, "-m", "loopline", "--workspace", str(root), "server",
         "--no-background", "--port", str(port), "--log-level", "warning"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start: {process.stderr.read()}"
                                   if process.stderr else "the API server did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_backend(settings: Settings, root: Path, db_url: str) -> dict[str, Any]:
    """Measure reads and writes on one backend, API and local side by side."""
    model = subject(settings.seed)
    ws = Workspace.init(root, overrides={"db_url": db_url})
    try:
        ws.models.register(model.model, "bench", input_example=model.example)
        _, token = ws.tokens.create("bench-admin", "admin")
        with server_process(root, db_url) as url, Client(url, token) as client:
            check(client.models.get("bench/1") == ws.models.get("bench/1"),
                  "the API and the local workspace disagree on model show")
            progress(f"reads: {settings.reads} local and through the API")
            local_reads = timed(lambda: ws.models.get("bench/1"), settings.reads)
            api_reads = timed(lambda: client.models.get("bench/1"), settings.reads)
            auth_floor = timed(lambda: client.whoami(), settings.reads)
            parallel = concurrent_reads(url, token, settings.reads, settings.concurrency)
            progress(f"writes: {settings.writes} registrations local and through the API")
            local_writes = timed(lambda: ws.models.register(
                model.model, "bench-local", input_example=model.example), settings.writes)
            api_writes = timed(lambda: client.models.register(
                model.model, "bench-api", input_example=model.example), settings.writes)
            check(len(ws.models.versions("bench-api")) == settings.writes,
                  "every registration through the API recorded a version")
        read = {"local": figures(local_reads), "api": figures(api_reads),
                "api_concurrent": parallel, "auth_only_whoami": figures(auth_floor)}
        write = {"local": figures(local_writes), "api": figures(api_writes)}
        for section in (read, write):
            section["p50_ratio"] = ratio(section["api"]["p50_ms"], section["local"]["p50_ms"])
            section["p99_ratio"] = ratio(section["api"]["p99_ms"], section["local"]["p99_ms"])
            section["rps_ratio"] = ratio(section["api"]["rps"], section["local"]["rps"])
        read["concurrent_rps_ratio"] = ratio(parallel["rps"], read["local"]["rps"])
        return {"read_model_show": read, "write_register": write}
    finally:
        ws.close()


def parse(argv: list[str] | None = None) -> Settings:
    """Read the flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few calls only (CI smoke)")
    parser.add_argument("--reads", type=int, help="model show calls per side")
    parser.add_argument("--writes", type=int, help="registrations per side")
    parser.add_argument("--concurrency", type=int, help="concurrent API readers")
    add_common_arguments(parser, "where the workspaces go (default: the system temp)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    return Settings(reads=args.reads or base["reads"], writes=args.writes or base["writes"],
                    concurrency=args.concurrency or base["concurrency"], seed=args.seed,
                    postgres_url=None if args.no_postgres else args.postgres_url,
                    tmpdir=args.tmpdir, quick=args.quick)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON report."""
    settings = parse(argv)
    parent = Path(settings.tmpdir or tempfile.gettempdir())
    with scratch(parent, "bench-api") as folder:
        progress("SQLite")
        sqlite = measure_backend(settings, folder / "sqlite",
                                 f"sqlite:///{folder / 'sqlite.db'}")
        progress("PostgreSQL")
        postgres = on_postgres(settings.postgres_url, lambda url: measure_backend(
            settings, folder / "postgres", url))
    report = {"benchmark": "api", "settings": public_settings(settings),
              "machine": machine(httpx=httpx.__version__), "note": NOTE,
              "sqlite": sqlite, "postgresql": postgres, "elapsed_s": elapsed()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
