"""Benchmark the model server (``loopline serve``) against a thin Starlette endpoint, in one run.

Prints one JSON document on stdout (progress goes to stderr). One seeded model, a
``RandomForestClassifier`` (20 trees, depth 8) on 8 numeric ``make_classification`` features:
its ``predict`` costs about the same for 1 row as for 32 (per-call overhead dominates), the
kind of model micro-batching is for. Measured on that one model:

    in_process       ``model.predict`` on a prebuilt 1-row and 32-row frame (the floor), and
                     the thin handler's work without HTTP (JSON -> DataFrame -> predict -> JSON)
    thin_reference   a bare Starlette endpoint as a user would write it (``await request.json()``,
                     ``pd.DataFrame(records)``, ``model.predict``, ``JSONResponse``)
    loopline         ``create_app(ws.serving_config(...))`` on ``POST /predict/{deployment}``,
                     inline (``batch_max_rows=0``, the default) and micro-batched (32 rows / 2 ms)

Every server runs in its own process on a 127.0.0.1 socket the script binds, with the settings
of ``loopline.serving.server.uvicorn_config`` (uvloop, httptools, one worker, no access log),
and is stopped with SIGTERM. Each is measured with the client in ``serving_load``: single-row
latency p50/p95/p99 at a fixed arrival rate in an open loop (from each request's due time, so
no coordinated omission), and throughput in a closed loop at concurrency 1, 8 and 32. Each
loopline server is then measured again while its deployment's primary is replaced a few times
(``ws.deployments.replace``, in a thread of this process): errors, p99 in the swap window
against the steady window before it, and how long each swap took to answer. A server that
returns canned bytes measures the client's own ceiling. The workspace is SQLite in a
temporary folder: the request path never reads the store, so PostgreSQL is not needed.

Run ``make bench`` or ``.venv/bin/python benchmarks/serving.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import sklearn
import starlette
import uvicorn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from bench_common import check, elapsed, machine, max_rss_mib, progress, ratio
from loopline.app import Workspace
from loopline.core.deployments import Route, RouteRole, Strategy
from loopline.core.models import ModelVersion
from serving_load import Schedule, build_request, closed_loop, open_loop, percentiles

FEATURES = 8
DISTINCT_ROWS = 64
CONCURRENCY = (1, 8, 32)
MODEL_NAME = "bench-forest"
START_TIMEOUT = 60.0
DEFAULTS: dict[str, Any] = {"rate": 100.0, "open_seconds": 8.0, "closed_seconds": 4.0,
                            "warmup_seconds": 1.0, "swaps": 4, "swap_interval": 1.5,
                            "steady_seconds": 3.0, "trees": 20, "rows": 5000,
                            "floor_repeat": 2000}
QUICK: dict[str, Any] = {"rate": 100.0, "open_seconds": 1.0, "closed_seconds": 0.5,
                         "warmup_seconds": 0.2, "swaps": 2, "swap_interval": 1.0,
                         "steady_seconds": 0.75, "trees": 20, "rows": 2000,
                         "floor_repeat": 200}
TARGET_P50_OVERHEAD_MS = 0.5
TARGET_BATCHED_C32_VS_THIN = 3.0  # "several times"


@dataclass(frozen=True, slots=True)
class Settings:
    """Load shape, durations and model size."""

    rate: float
    open_seconds: float
    closed_seconds: float
    warmup_seconds: float
    swaps: int
    swap_interval: float
    steady_seconds: float
    trees: int
    rows: int
    floor_repeat: int
    batch_rows: int
    batch_wait_ms: float
    seed: int
    tmpdir: str | None
    quick: bool


@dataclass(frozen=True, slots=True)
class Subject:
    """The fitted model, the rows requests carry and their expected predictions."""

    model: RandomForestClassifier
    frame: pd.DataFrame
    rows: list[dict[Any, Any]]
    expected: list[Any]


@dataclass(frozen=True, slots=True)
class Running:
    """A server process listening on ``port``."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.port}"


# -- the model and what it costs in process ------------------------------------------------------


def fit_subject(settings: Settings) -> Subject:
    """Fit the forest on seeded data; pick the distinct rows the requests carry."""
    features, target = make_classification(n_samples=settings.rows, n_features=FEATURES,
                                           n_informative=6, random_state=settings.seed)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(FEATURES)])
    model = RandomForestClassifier(n_estimators=settings.trees, max_depth=8,
                                   random_state=settings.seed).fit(frame, target)
    picked = np.random.default_rng(settings.seed).choice(len(frame), DISTINCT_ROWS,
                                                         replace=False)
    rows = frame.iloc[picked].to_dict("records")
    expected = model.predict(pd.DataFrame(rows)).tolist()
    return Subject(model, frame, rows, expected)


def thin_handler(model: Any, body: bytes) -> bytes:
    """Do the thin endpoint's work without HTTP: JSON -> DataFrame -> predict -> JSON."""
    records = json.loads(body)["records"]
    return json.dumps({"predictions": model.predict(pd.DataFrame(records)).tolist()}).encode()


def timed(action: Any, repeat: int) -> dict[str, float]:
    """Return the percentiles of ``repeat`` timed calls of ``action`` (after 20 warm calls)."""
    for _ in range(20):
        action()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def in_process(subject: Subject, settings: Settings) -> dict[str, Any]:
    """Time the floor: predict on 1 and 32 prebuilt rows, and the thin handler without HTTP."""
    one = subject.frame.head(1)
    batch = subject.frame.head(32)
    body = orjson.dumps({"records": subject.rows[:1]})
    check(json.loads(thin_handler(subject.model, body))["predictions"] == subject.expected[:1],
          "the thin handler predicts otherwise")
    repeat = settings.floor_repeat
    figures: dict[str, Any] = {
        "predict_1_row": timed(lambda: subject.model.predict(one), repeat),
        "predict_32_rows": timed(lambda: subject.model.predict(batch), repeat),
        "thin_handler_1_row": timed(lambda: thin_handler(subject.model, body), repeat)}
    figures["predict_32_rows_per_row_ms"] = round(figures["predict_32_rows"]["p50_ms"] / 32, 4)
    return figures


def prepare_workspace(folder: Path, subject: Subject) -> tuple[Workspace, list[ModelVersion]]:
    """Create a SQLite workspace with two versions of the model and two deployments."""
    ws = Workspace.init(folder / "ws")
    example = subject.frame.head(50)
    first = ws.models.register(subject.model, MODEL_NAME, input_example=example)
    second_model = pickle.loads(pickle.dumps(subject.model))
    second_model.bench_round_ = 2  # new artifact bytes, the same predictions
    second = ws.models.register(second_model, MODEL_NAME, input_example=example)
    for name in ("inline", "batched"):
        ws.deployments.create(f"bench-{name}", [Route(MODEL_NAME, first.version, 100.0,
                                                      RouteRole.PRIMARY)], Strategy.REPLACE)
    return ws, [first, second]


# -- server processes ----------------------------------------------------------------------------


@contextmanager
def server_process(role: str, *arguments: str) -> Iterator[Running]:
    """Start ``role`` in a child process on a socket bound here; stop it with SIGTERM."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    if role == "trivial":  # a light script: no model or loopline imports
        command = [sys.executable, str(Path(__file__).with_name("serving_load.py")),
                   str(sock.fileno())]
    else:
        command = [sys.executable, __file__, "--role", role, "--fd", str(sock.fileno()),
                   *arguments]
    process = subprocess.Popen(command, pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL)
    sock.close()
    try:
        yield Running(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(running: Running, path: str, any_status: bool = False) -> None:
    """Poll ``path`` until it answers 200, or anything with ``any_status`` (or fail)."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(base_url=running.url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            check(running.process.poll() is None, f"the server on {running.url} exited")
            try:
                if client.get(path).status_code == 200 or any_status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"the server on {running.url} did not become ready")


def check_answers(running: Running, path: str, subject: Subject,
                  versions: set[str] | None) -> None:
    """Check that every distinct row is answered with the in-process prediction."""
    with httpx.Client(base_url=running.url, timeout=10.0) as client:
        for row, expected in zip(subject.rows, subject.expected, strict=True):
            response = client.post(path, content=orjson.dumps({"records": [row]}),
                                   headers={"content-type": "application/json"})
            check(response.status_code == 200, f"{path}: {response.status_code} {response.text}")
            check(response.json()["predictions"] == [expected], f"{path} predicts otherwise")
            if versions is not None:
                check(response.headers["x-model-version"] in versions, "unknown model version")


def server_metrics(running: Running) -> dict[str, Any]:
    """Read the batch sizes and the dropped prediction-log records from ``/metrics``."""
    text = httpx.get(f"{running.url}/metrics", timeout=10.0).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("loopline_batch_rows_sum", "loopline_batch_rows_count",
                     "loopline_prediction_log_dropped"):
            if line.startswith(name):
                values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    calls = values.get("loopline_batch_rows_count", 0.0)
    return {"predict_calls": int(calls),
            "mean_rows_per_predict": round(values.get("loopline_batch_rows_sum", 0.0) / calls, 2)
            if calls else None,
            "prediction_log_dropped": int(values.get("loopline_prediction_log_dropped", 0.0))}


def run_role(args: argparse.Namespace) -> int:
    """Serve as one of the benchmark's servers (the child-process side of ``server_process``)."""
    from loopline.serving.server import DrainingServer, ServerOptions, uvicorn_config

    sock = socket.socket(fileno=args.fd)
    if args.role == "thin":
        with open(args.model_file, "rb") as handle:
            model = pickle.load(handle)  # the model this benchmark just fitted
        config = uvicorn_config(thin_app(model), ServerOptions())
        uvicorn.Server(config).run(sockets=[sock])
        return 0
    from loopline.serving.app import create_app

    ws = Workspace.open(args.workspace)
    try:
        app = create_app(ws.serving_config(deployments=[args.deployment],
                                           batch_max_rows=args.batch_rows,
                                           batch_wait_ms=args.batch_wait_ms))
        DrainingServer(uvicorn_config(app, ServerOptions()), 0.0).run(sockets=[sock])
    finally:
        ws.close()
    return 0


def thin_app(model: Any) -> Any:
    """Return the thin reference: a bare Starlette endpoint calling ``model.predict``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route as Path_

    async def predict(request: Request) -> JSONResponse:
        records = (await request.json())["records"]
        frame = pd.DataFrame(records)
        return JSONResponse({"predictions": model.predict(frame).tolist()})

    return Starlette(routes=[Path_("/predict", predict, methods=["POST"])])


# -- measuring ------------------------------------------------------------------------------------


async def load_figures(running: Running, requests: list[bytes], settings: Settings,
                       open_figures: bool = True) -> dict[str, Any]:
    """Warm up, then measure the open-loop latency and closed-loop throughput of a server."""
    pid = running.process.pid
    await closed_loop(running.port, requests, 8, settings.warmup_seconds)
    figures: dict[str, Any] = {}
    if open_figures:
        run = await open_loop(running.port, requests,
                              Schedule(settings.rate, settings.open_seconds), pid)
        figures["open_loop"] = run.summary(settings.rate)
    figures["closed_loop"] = {
        f"c{c}": await closed_loop(running.port, requests, c, settings.closed_seconds, pid)
        for c in CONCURRENCY}
    return figures


async def swap_figures(running: Running, requests: list[bytes], settings: Settings,
                       ws: Workspace, deployment: str, versions: list[ModelVersion]
                       ) -> dict[str, Any]:
    """Replace the primary ``settings.swaps`` times under steady open-loop load."""
    loop = asyncio.get_running_loop()
    seconds = settings.steady_seconds + (settings.swaps + 1) * settings.swap_interval
    started = time.perf_counter()
    run_task = asyncio.create_task(open_loop(running.port, requests,
                                             Schedule(settings.rate, seconds, read_version=True),
                                             running.process.pid))
    await asyncio.sleep(settings.steady_seconds)
    swaps: list[tuple[float, float, str]] = []
    for number in range(settings.swaps):
        target = versions[(number + 1) % len(versions)]
        began = time.perf_counter()
        await loop.run_in_executor(None, partial(ws.deployments.replace, deployment,
                                                 target.name, target.version,
                                                 reason="benchmark swap"))
        swaps.append((began, time.perf_counter(), target.uri))
        await asyncio.sleep(max(0.0, began + settings.swap_interval - time.perf_counter()))
    run = await run_task
    answered = {sample.version for sample in run.samples if sample.status == 200}
    check(answered <= {v.uri for v in versions}, f"answers from unknown versions {answered}")
    pickups = []
    for began, returned, uri in swaps:
        first = next((s.done for s in run.samples
                      if s.done > began and s.version == uri), None)
        pickups.append(None if first is None else round((first - returned) * 1000, 1))
    first_swap = swaps[0][0] if swaps else float("inf")
    steady, window = run.latency(end=first_swap), run.latency(start=first_swap)
    return {"rate_per_s": settings.rate, "requests": len(run.samples), "errors": run.errors(),
            "swaps": len(swaps), "steady_window": steady, "swap_window": window,
            "swap_vs_steady_p99": ratio(window.get("p99_ms", 0.0), steady.get("p99_ms", 0.0)),
            "replace_call_ms": [round((r - b) * 1000, 1) for b, r, _ in swaps],
            "replace_to_first_answer_ms": pickups,
            "answers_per_version": {uri: sum(s.version == uri for s in run.samples)
                                    for uri in sorted(answered, key=str)},
            "seconds": round(time.perf_counter() - started, 2), **run.cpu}


# -- the run --------------------------------------------------------------------------------------


async def measure_all(subject: Subject, settings: Settings, folder: Path) -> dict[str, Any]:
    """Start each server in turn and measure it."""
    body = [orjson.dumps({"records": [row]}) for row in subject.rows]
    model_file = folder / "model.pkl"
    model_file.write_bytes(pickle.dumps(subject.model))
    ws, versions = prepare_workspace(folder, subject)
    report: dict[str, Any] = {}
    try:
        progress("client ceiling: a server that returns canned bytes")
        with server_process("trivial") as running:
            requests = [build_request("/predict", b, "127.0.0.1") for b in body]
            wait_ready(running, "/", any_status=True)
            report["client_ceiling"] = await load_figures(running, requests, settings)
        progress("thin reference: a bare Starlette endpoint")
        with server_process("thin", "--model-file", str(model_file)) as running:
            requests = [build_request("/predict", b, "127.0.0.1") for b in body]
            wait_ready(running, "/predict", any_status=True)
            check_answers(running, "/predict", subject, None)
            report["thin_reference"] = await load_figures(running, requests, settings)
        uris = {v.uri for v in versions}
        for mode, rows in (("inline", 0), ("batched", settings.batch_rows)):
            deployment = f"bench-{mode}"
            progress(f"loopline serve, {mode} (batch_max_rows={rows})")
            with server_process("loopline", "--workspace", str(folder / "ws"), "--deployment",
                                deployment, "--batch-rows", str(rows), "--batch-wait-ms",
                                str(settings.batch_wait_ms)) as running:
                path = f"/predict/{deployment}"
                requests = [build_request(path, b, "127.0.0.1") for b in body]
                wait_ready(running, "/v2/health/ready")
                check_answers(running, path, subject, uris)
                figures = await load_figures(running, requests, settings)
                progress(f"loopline serve, {mode}: {settings.swaps} swaps under load")
                figures["swap"] = await swap_figures(running, requests, settings, ws,
                                                     deployment, versions)
                figures["server_metrics"] = server_metrics(running)
            report[f"loopline_{mode}"] = {"batch_max_rows": rows,
                                          "batch_wait_ms": settings.batch_wait_ms, **figures}
    finally:
        ws.close()
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Compare with the issue's targets: p50 within 0.5 ms of thin, c=32 batched several x."""
    def p50(section: str) -> float:
        value: float = report[section]["open_loop"]["latency_from_due"]["p50_ms"]
        return value

    def rps(section: str) -> float:
        value: float = report[section]["closed_loop"]["c32"]["requests_per_s"]
        return value

    overhead = round(p50("loopline_inline") - p50("thin_reference"), 3)
    batched_overhead = round(p50("loopline_batched") - p50("thin_reference"), 3)
    speedup = ratio(rps("loopline_batched"), rps("thin_reference"))
    ceiling = rps("client_ceiling")
    return {
        "p50_overhead_ms": overhead, "p50_overhead_ms_max": TARGET_P50_OVERHEAD_MS,
        "p50_met": overhead <= TARGET_P50_OVERHEAD_MS,
        "p50_overhead_batched_ms": batched_overhead,
        "batched_c32_vs_thin_c32": speedup,
        "batched_c32_vs_thin_c32_min": TARGET_BATCHED_C32_VS_THIN,
        "throughput_met": speedup >= TARGET_BATCHED_C32_VS_THIN,
        "inline_c32_vs_thin_c32": ratio(rps("loopline_inline"), rps("thin_reference")),
        "client_ceiling_c32_vs_batched_c32": ratio(ceiling, rps("loopline_batched")),
        "swap_errors": sum(report[f"loopline_{m}"]["swap"]["errors"]
                           for m in ("inline", "batched")),
    }


def error_count(report: dict[str, Any]) -> int:
    """Return the failed requests in every measured run."""
    total = 0
    for section in ("client_ceiling", "thin_reference", "loopline_inline", "loopline_batched"):
        figures = report[section]
        total += figures["open_loop"]["errors"]
        total += sum(run["errors"] for run in figures["closed_loop"].values())
        total += figures.get("swap", {}).get("errors", 0)
    return total


# -- command line ---------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the ``--role`` flags are the child processes')."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, help="open-loop requests per second (100)")
    parser.add_argument("--open-seconds", type=float, help="open-loop run length (8)")
    parser.add_argument("--closed-seconds", type=float, help="each closed-loop run (4)")
    parser.add_argument("--swaps", type=int, help="primary replacements under load (4)")
    parser.add_argument("--trees", type=int, help="trees in the forest (20)")
    parser.add_argument("--batch-rows", type=int, default=32, help="micro-batch rows (32)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="micro-batch wait (2)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--tmpdir", help="folder for temporary files (default: system temp)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs and few swaps: for a smoke test")
    for hidden in ("--role", "--fd", "--workspace", "--deployment", "--model-file"):
        parser.add_argument(hidden, help=argparse.SUPPRESS,
                            type=int if hidden == "--fd" else str)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Return the settings: ``--quick`` or the defaults, then the flags given."""
    base = dict(QUICK if args.quick else DEFAULTS)
    for name in ("rate", "open_seconds", "closed_seconds", "swaps", "trees"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    if base["rate"] <= 0 or base["open_seconds"] <= 0 or base["closed_seconds"] <= 0 \
            or base["swaps"] < 1 or base["trees"] < 1 or args.batch_rows < 2:
        raise SystemExit("rates and durations must be positive, --swaps and --trees at "
                         "least 1, --batch-rows at least 2")
    return Settings(**base, batch_rows=args.batch_rows, batch_wait_ms=args.batch_wait_ms,
                    seed=args.seed, tmpdir=args.tmpdir, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    """Measure every server, print the JSON report; exit 1 when any request failed."""
    args = parse_arguments(argv)
    if args.role:
        return run_role(args)
    settings = settings_from(args)
    import uvloop

    load_before = os.getloadavg()
    progress(f"fitting the forest ({settings.trees} trees, seed {settings.seed})")
    subject = fit_subject(settings)
    progress(f"in-process floor: {settings.floor_repeat} predictions each")
    floor = in_process(subject, settings)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        measured = uvloop.run(measure_all(subject, settings, Path(tmp)))
    report = {
        "benchmark": "loopline model server",
        "machine": machine(scikit_learn=sklearn.__version__, uvicorn=uvicorn.__version__,
                           starlette=starlette.__version__,
                           uvloop=getattr(uvloop, "__version__", "?")),
        "settings": dataclasses.asdict(settings),
        "store": "SQLite in a temporary folder; PostgreSQL is not measured: the request path "
                 "never reads the store (deployment changes are polled off the request path)",
        "model": {"kind": f"RandomForestClassifier(n_estimators={settings.trees}, "
                          "max_depth=8)", "features": FEATURES, "train_rows": settings.rows,
                  "distinct_request_rows": DISTINCT_ROWS},
        "client": "raw asyncio HTTP/1.1 over uvloop, keep-alive, one request in flight per "
                  "connection; open loop paced by a thread, latency from each request's due "
                  "time; closed loop: one connection per concurrent request",
        "note": "latencies in ms; throughput in requests (single-row) per second; cpu shares "
                "are CPU seconds per wall second of the client and the server process",
        "load_average_1min": {"before": round(load_before[0], 2),
                              "after": round(os.getloadavg()[0], 2),
                              "note": "other work on the machine skews every figure; compare "
                                      "runs made with a load well under cpu_count"},
        "in_process": floor,
        **measured,
        "targets": targets(measured),
        "process_max_rss_mib": max_rss_mib(),
        "elapsed_s": elapsed(),
    }
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if error_count(measured) else 0


if __name__ == "__main__":
    sys.exit(main())
