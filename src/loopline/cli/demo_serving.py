"""The serving part of ``loopline demo``: deploy the governed model and answer requests.

It creates the ``refunds`` deployment from ``models:/refunds@production``, starts the real
server (uvicorn on a free loopback port, in a thread), asks it once through each protocol
— the native ``/predict``, the Open Inference Protocol v2 and MLflow's ``/invocations`` —
and once with a bad request, then stops it and shows the requests in the prediction log.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from loopline.app import Workspace
from loopline.cli.output import console
from loopline.core.deployments import Route, Strategy
from loopline.core.predictions import PredictionWindow
from loopline.serving.app import create_app
from loopline.serving.server import ThreadedServer

ROW = {"amount": 42.0, "items": 2}
START_TIMEOUT = 30.0


def _requests(client: httpx.Client) -> list[tuple[str, httpx.Response]]:
    v2 = {"inputs": [{"name": name, "shape": [1], "datatype": "FP64", "data": [value]}
                     for name, value in ROW.items()]}
    return [
        ("POST /predict/refunds", client.post("/predict/refunds", json={"records": [ROW]})),
        ("POST /v2/models/refunds/infer", client.post("/v2/models/refunds/infer", json=v2)),
        ("POST /invocations", client.post("/invocations", json={"dataframe_records": [ROW]},
                                          headers={"X-Loopline-Deployment": "refunds"})),
        ("POST /predict/refunds (bad)", client.post(
            "/predict/refunds", json={"records": [{"amount": "lots", "items": 2}]})),
    ]


def _describe(response: httpx.Response) -> str:
    body: Any = response.json()
    shown = body.get("error") or body.get("predictions") or body.get("outputs")
    return f"{response.status_code} {response.headers.get('x-model-version', '')} {shown}"


def serve_requests(workspace: Workspace) -> None:
    """Deploy the production model, answer four requests on a real server, stop it."""
    model, version = workspace.deployments.resolve("models:/refunds@production")
    workspace.deployments.create("refunds", [Route(model, version, 100.0)], Strategy.REPLACE)
    console.print(f"   deployment refunds: models:/{model}/{version} takes 100% (gated, audited)")
    server = ThreadedServer(create_app(workspace.serving_config(poll_seconds=0.2)),
                            start_timeout=START_TIMEOUT)
    try:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            deadline = time.monotonic() + START_TIMEOUT
            while client.get("/v2/health/ready").status_code != 200:
                if time.monotonic() > deadline or not server.alive:
                    raise RuntimeError("the demo server did not become ready")
                time.sleep(0.05)
            console.print(f"   serving on {server.url} (uvicorn, uvloop, httptools)")
            for what, response in _requests(client):
                console.print(f"   {what:30} → {_describe(response)}")
    finally:
        server.stop()
    logged = workspace.predictions.read(PredictionWindow(deployment="refunds")).num_rows
    console.print(f"   {logged} answers in the prediction log, each with its request id "
                  "and model version")
