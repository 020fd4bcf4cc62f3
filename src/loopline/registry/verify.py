"""``verify``: a version's artifact, loaded in a fresh Python process, reproduces its holdout.

The parent resolves the version and its holdout record (``registry.holdout``), then starts
``python -P -m loopline.registry.verify_worker`` (no shell; ``-P`` and a temporary working
folder keep the current folder off the import path) and hands it, on standard input, the
artifact store's URL and keys, the artifact digest, flavor and trust decision, and the
holdout inputs' digest. The worker reads both through the verifying content store, loads
the artifact, scores the inputs and writes the outputs to a file in the parent's temporary
folder. The parent then reports each check (a worker stage that never ran is left out)::

    worker            the fresh process started and answered within the timeout
    artifact          the bytes the worker loaded hash to the version's digest, which is the
                      digest the holdout was recorded with
    load              the flavor loaded them (a missing trust decision raises instead)
    holdout inputs    the sample was read and verified
    recorded outputs  the outputs stored at registration were read and verified
    score             the loaded model scored the sample
    predict, ...      each output agrees with the recorded one (``holdout_compare``)

A quarantined version can be verified: that is how one investigates it.

The store must be one another process can open: a ``memory://`` store cannot be verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    UntrustedModelError,
)
from loopline.core.models import ModelVersion
from loopline.core.ports import BlobStore
from loopline.registry.holdout import HoldoutRecord
from loopline.registry.holdout_compare import Check, compare, describe_policy
from loopline.registry.holdout_io import decode_outputs

DEFAULT_TIMEOUT = 300.0
WORKER = "loopline.registry.verify_worker"
STAGES = ("worker", "artifact", "load", "inputs", "score")  # in the order the worker runs them
_STDERR_TAIL = 2_000


def _address(blobs: BlobStore) -> StoreAddress:
    """Describe ``blobs`` for the worker process.

    Raises:
        ConfigurationError: when the store is not one another process can open.
    """
    address = StoreAddress.of(blobs) if isinstance(blobs, ContentAddressedStore) else None
    if address is None or address.in_memory:
        raise ConfigurationError("verify needs an artifact store another process can open (a "
                                 "folder or an object store URL), not an in-memory one")
    return address


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify`` compared and found; ``passed`` only when every check held.

    ``reasons`` are the details of the failed checks; ``worker`` holds the fresh process's
    pid, Python version and load and score times; ``seconds`` is the whole verification.
    """

    uri: str
    flavor: str
    artifact_digest: str
    rows: int
    tolerance: str
    passed: bool
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]
    seconds: float
    worker: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Job:
    address: StoreAddress
    version: ModelVersion
    record: HoldoutRecord
    trusted: bool
    timeout: float


def _failure(stage: str, kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "stage": stage, "error": {"type": kind, "message": message}}


def _run_worker(job: _Job, folder: Path) -> dict[str, Any]:
    """Run the worker in ``folder`` and return its answer (a failure answer if it broke)."""
    request = {"store": {"url": job.address.url, "keys": list(job.address.keys)},
               "artifact": job.version.artifact_digest, "flavor": job.version.flavor,
               "trusted": job.trusted, "inputs": job.record.inputs,
               "layout": job.record.layout, "output": str(folder / "outputs.parquet")}
    try:
        done = subprocess.run([sys.executable, "-P", "-m", WORKER], input=json.dumps(request),
                              capture_output=True, text=True, cwd=folder, env=dict(os.environ),
                              timeout=job.timeout, shell=False, check=False)
    except subprocess.TimeoutExpired:
        return _failure("worker", "TimeoutExpired",
                        f"the worker did not finish within {job.timeout:g} s")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return _failure("worker", "WorkerFailed", f"the worker exited with status "
                                                  f"{done.returncode}: "
                                                  f"{done.stderr[-_STDERR_TAIL:].strip()}")
    return answer


def _stage_check(answer: dict[str, Any], stage: str, name: str,
                 texts: tuple[str, str]) -> Check:
    """Return the check of one worker stage; ``texts`` are what it compared and its success."""
    compared, passed_text = texts
    if answer.get("stage") == stage and not answer.get("ok"):
        error = answer.get("error") or {}
        return Check(name, False, compared, "-",
                     f"{error.get('type')}: {error.get('message')}")
    return Check(name, True, compared, "-", passed_text)


def _timing(answer: dict[str, Any]) -> str:
    seconds = answer.get("seconds") or {}
    return (f"python {answer.get('python')}, load {seconds.get('load', 0):.2f} s, "
            f"score {seconds.get('score', 0):.2f} s")


def _artifact_check(job: _Job, answer: dict[str, Any]) -> Check:
    digest, recorded = job.version.artifact_digest, job.record.artifact_digest
    compared = f"sha256 {digest[:12]}…"
    if recorded != digest:
        return Check("artifact", False, compared, "sha256",
                     f"the holdout was recorded with artifact {recorded[:12]}…, but the version "
                     f"names {digest[:12]}…")
    failed = _stage_check(answer, "artifact", "artifact", ("", ""))
    if not failed.passed:
        return Check("artifact", False, compared, "sha256", failed.detail)
    loaded = answer.get("artifact_sha256")
    if answer.get("ok") and loaded != digest:
        return Check("artifact", False, compared, "sha256",
                     f"the worker loaded bytes hashing to {loaded}")
    return Check("artifact", True, compared, "sha256",
                 "read and hashed in the fresh process; the holdout was recorded with it")


def _stage_checks(job: _Job, answer: dict[str, Any]) -> list[Check]:
    """Return a check per worker stage, up to the one that failed (later ones never ran)."""
    record, version = job.record, job.version
    reached = len(STAGES) if answer.get("ok") else STAGES.index(answer.get("stage", "worker"))
    found = [
        _stage_check(answer, "worker", "worker", ("a fresh Python process", _timing(answer))),
        _artifact_check(job, answer),
        _stage_check(answer, "load", "load", (
            f"{version.flavor!r} artifact", "trusted here" if job.trusted else "loaded")),
        _stage_check(answer, "inputs", "holdout inputs", (
            f"sha256 {record.inputs[:12]}…",
            f"{record.rows} rows ({record.layout}), read and verified")),
        _stage_check(answer, "score", "score", (", ".join(record.methods),
                                                f"scored {record.rows} rows"))]
    return [check for index, check in enumerate(found)
            if index <= reached or (check.name == "artifact" and not check.passed)]


def _recorded(blobs: BlobStore, record: HoldoutRecord) -> tuple[dict[str, Any] | None, Check]:
    compared = f"sha256 {record.outputs[:12]}…"
    try:
        outputs = decode_outputs(blobs.get_bytes(record.outputs))
    except (IntegrityError, NotFoundError) as exc:
        return None, Check("recorded outputs", False, compared, "sha256", exc.message)
    return outputs, Check("recorded outputs", True, compared, "sha256", "read and verified")


def _raise_untrusted(job: _Job, answer: dict[str, Any]) -> None:
    error = answer.get("error") or {}
    if answer.get("stage") == "load" and error.get("type") == UntrustedModelError.__name__:
        uri = job.version.uri
        raise UntrustedModelError(
            job.version.flavor, f"{uri} cannot be verified: {error.get('message')} "
                                f"(`loopline models trust {uri} --reason ...`)")


def _output_checks(job: _Job, recorded: dict[str, Any] | None,
                   fresh: dict[str, Any] | None) -> list[Check]:
    if recorded is None or fresh is None:
        return []
    names = sorted(set(job.record.methods) | set(recorded) | set(fresh))
    return [compare(name, recorded.get(name), fresh.get(name), job.record.tolerance)
            for name in names]


def verify_version(blobs: BlobStore, version: ModelVersion, trusted: bool,
                   timeout: float = DEFAULT_TIMEOUT) -> VerifyReport:
    """Verify ``version`` against its holdout in a fresh process (see the module doc).

    Raises:
        NotFoundError: naming the version when it recorded no holdout sample.
        IntegrityError: when its holdout record is malformed.
        ConfigurationError: when the artifact store cannot be opened by another process.
        UntrustedModelError: when the flavor needs a trust decision the version lacks.
    """
    started = time.perf_counter()
    job = _Job(_address(blobs), version, HoldoutRecord.of(version), trusted, timeout)
    recorded, recorded_check = _recorded(blobs, job.record)
    with tempfile.TemporaryDirectory(prefix="loopline-verify-") as folder:
        answer = _run_worker(job, Path(folder))
        _raise_untrusted(job, answer)
        fresh = None
        if answer.get("ok"):
            try:
                fresh = decode_outputs((Path(folder) / "outputs.parquet").read_bytes())
            except (IntegrityError, OSError) as exc:
                answer = _failure("score", type(exc).__name__, str(exc))
    checks = [*_stage_checks(job, answer), *_output_checks(job, recorded, fresh)]
    checks.insert(min(4, len(checks)), recorded_check)
    failed = tuple(f"{c.name}: {c.detail}" for c in checks if not c.passed)
    return VerifyReport(
        uri=version.uri, flavor=version.flavor, artifact_digest=version.artifact_digest,
        rows=job.record.rows, tolerance=describe_policy(job.record.tolerance),
        passed=not failed, checks=tuple(checks), reasons=failed,
        seconds=time.perf_counter() - started,
        worker={key: answer.get(key) for key in ("pid", "python", "seconds", "stage")})
