"""The fresh process ``verify`` runs: load a version's artifact, score its holdout, write outputs.

Run as ``python -P -m loopline.registry.verify_worker`` with a JSON request on standard
input (the store's URL and keys travel there, never on the command line, where other users
could read them)::

    {"store": {"url": ..., "keys": [...]}, "artifact": SHA-256, "flavor": "sklearn",
     "trusted": false, "inputs": SHA-256, "layout": "frame", "output": "/tmp/.../out.parquet"}

It reads the artifact and the inputs through the verifying content store, loads the artifact
with the version's flavor and trust decision, scores the inputs with ``holdout_io.score`` and
writes the outputs to ``output``. It answers with one JSON line on standard output::

    {"ok": true, "stage": "done", "artifact_sha256": ..., "artifact_bytes": ..., "rows": ...,
     "pid": ..., "python": "3.11.9", "seconds": {"load": ..., "score": ...}}

or ``{"ok": false, "stage": "artifact" | "load" | "inputs" | "score", "error": {"type":
..., "message": ...}}``. Exit status 0 either way; 2 only for a malformed request.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.artifacts.store_address import StoreAddress
from loopline.registry.flavors import TrustContext, flavor_named
from loopline.registry.holdout_io import decode_inputs, encode_outputs, score

MAX_REQUEST = 1 << 20


class StageFailed(Exception):
    """A stage of the worker failed; carries the stage and the original error."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


@dataclass(frozen=True, slots=True)
class Request:
    """What the parent asked for, checked."""

    url: str
    keys: tuple[str, ...]
    artifact: str
    flavor: str
    trusted: bool
    inputs: str
    layout: str
    output: Path

    @classmethod
    def parse(cls, text: str) -> Request:
        """Return the request in ``text``.

        Raises:
            ValueError, KeyError, TypeError: when it is malformed.
        """
        raw = json.loads(text)
        store, keys = raw["store"], raw["store"]["keys"]
        texts = [store["url"], raw["artifact"], raw["flavor"], raw["inputs"], raw["layout"],
                 raw["output"]]
        if not all(isinstance(t, str) for t in texts) or not isinstance(raw["trusted"], bool):
            raise TypeError("the request's fields have the wrong types")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError("store.keys must be a list of strings")
        return cls(store["url"], tuple(keys), raw["artifact"], raw["flavor"],
                   raw["trusted"], raw["inputs"], raw["layout"], Path(raw["output"]))


def _stage(name: str, work: Any, *args: Any) -> Any:
    try:
        return work(*args)
    except Exception as exc:  # every failure is reported to the parent, named by stage
        raise StageFailed(name, exc) from exc


def run(request: Request) -> dict[str, Any]:
    """Load, score and write as ``request`` asks; return the answer (see the module doc).

    Raises:
        StageFailed: naming the stage that failed and the error.
    """
    blobs = _stage("artifact", StoreAddress(request.url, request.keys).open)
    data: bytes = _stage("artifact", blobs.get_bytes, request.artifact)
    started = time.perf_counter()
    model = _stage("load", lambda: flavor_named(request.flavor).load(
        data, TrustContext(trusted=request.trusted)))
    loaded = time.perf_counter()
    inputs = _stage("inputs", lambda: decode_inputs(blobs.get_bytes(request.inputs),
                                                    request.layout))
    scored = time.perf_counter()
    outputs = _stage("score", score, model, inputs)
    _stage("score", request.output.write_bytes, encode_outputs(outputs))
    done = time.perf_counter()
    return {"ok": True, "stage": "done", "artifact_sha256": hashlib.sha256(data).hexdigest(),
            "artifact_bytes": len(data), "rows": len(inputs), "pid": os.getpid(),
            "python": platform.python_version(),
            "seconds": {"load": loaded - started, "score": done - scored}}


def main() -> int:
    """Answer one request from standard input; return the exit status."""
    try:
        request = Request.parse(sys.stdin.read(MAX_REQUEST))
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"malformed request: {exc}\n")
        return 2
    try:
        answer = run(request)
    except StageFailed as failed:
        error = failed.error
        answer = {"ok": False, "stage": failed.stage, "python": platform.python_version(),
                  "error": {"type": type(error).__name__,
                            "message": getattr(error, "message", None) or str(error)}}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - run by verify in a fresh process
    sys.exit(main())
