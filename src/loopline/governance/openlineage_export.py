"""Where OpenLineage events go: a JSON Lines file, or an HTTP endpoint (Marquez, any consumer).

A file is written whole or not at all (a temporary file renamed into place). An endpoint
gets one POST per event, as the OpenLineage HTTP transport sends them, through the one
outbound client (``loopline.outbound``); the export stops at the first failure and says how
many events were sent before it, so a retry can tell what the consumer already has.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.outbound import OutboundClient, check_url, display_url

DEFAULT_ENDPOINT = "api/v1/lineage"  # Marquez's, and the OpenLineage HTTP transport's default


@dataclass(frozen=True, slots=True)
class ExportResult:
    """How many events went where; ``error`` says what stopped an export that failed."""

    sent: int
    target: str  # the file path, or the endpoint shown without secrets (_shown_endpoint)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every event was delivered."""
        return self.error is None


def _line(event: Mapping[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def export_to_file(events: Iterable[Mapping[str, Any]], path: str | os.PathLike[str],
                   ) -> ExportResult:
    """Write ``events`` to ``path`` as JSON Lines, one event per line, replacing the file.

    Raises:
        InvalidArgumentError: naming ``path`` when its directory does not exist or cannot
            be written, or ``path`` is a directory.
    """
    target = Path(path)
    if target.is_dir():
        raise InvalidArgumentError("path", f"{target} is a directory; name a file")
    directory = target.parent
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                             dir=directory)
    except OSError as exc:
        raise InvalidArgumentError(
            "path", f"cannot write in {directory}: {exc.strerror or exc}") from exc
    count = 0
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for event in events:
                out.write(_line(event))
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return ExportResult(count, str(target))


def endpoint_url(url: str, endpoint: str = DEFAULT_ENDPOINT) -> httpx.URL:
    """Return ``url`` with ``endpoint`` appended to its path (``""`` posts to ``url``).

    Raises:
        InvalidArgumentError: naming ``url`` when it may not be called (see
            ``outbound.check_url``), or ``endpoint`` when it is not a relative path.
    """
    base = check_url(url)
    cleaned = endpoint.strip("/")
    if "://" in endpoint or "?" in endpoint or "#" in endpoint or ".." in cleaned.split("/"):
        raise InvalidArgumentError(
            "endpoint", f"{endpoint!r} must be a relative path such as {DEFAULT_ENDPOINT!r}")
    if not cleaned:
        return base
    return base.copy_with(path=f"{base.path.rstrip('/')}/{cleaned}")


def _shown_endpoint(url: str, endpoint: str) -> str:
    """Return where events go, for results and messages, without secrets.

    The origin, ``/…`` for any path of the caller's URL (a webhook-style URL holds its
    secret in the path), then the endpoint; never the query string.
    """
    base = check_url(url)
    hidden = "/…" if base.path.strip("/") else ""
    cleaned = endpoint.strip("/")
    return f"{display_url(base)}{hidden}{'/' + cleaned if cleaned else ''}"


def _auth_headers(api_key: str | None) -> dict[str, str]:
    if api_key is None:
        return {}
    if not api_key.strip() or not api_key.isprintable():
        raise InvalidArgumentError(
            "api_key", "must be non-empty printable text (the key itself is not shown)")
    return {"Authorization": f"Bearer {api_key.strip()}"}


def export_to_url(events: Iterable[Mapping[str, Any]], url: str,
                  endpoint: str = DEFAULT_ENDPOINT, api_key: str | None = None,
                  client: OutboundClient | None = None) -> ExportResult:
    """POST each event as JSON to ``url`` + ``endpoint``; stop at the first failure.

    With ``api_key``, each request carries ``Authorization: Bearer <key>``. Without
    ``client``, one is made with the default limits and closed afterwards. A failed
    delivery does not raise: the result counts what was sent and carries the error.

    Raises:
        InvalidArgumentError: for a forbidden ``url``, a bad ``endpoint`` or ``api_key``
            (checked before any event is read).
    """
    target = endpoint_url(url, endpoint)
    headers = _auth_headers(api_key)
    shown = _shown_endpoint(url, endpoint)
    outbound = client or OutboundClient()
    sent = 0
    try:
        for event in events:
            try:
                outbound.post_json(str(target), event, headers)
            except LooplineError as exc:
                return ExportResult(sent, shown, exc.message)
            sent += 1
    finally:
        if client is None:
            outbound.close()
    return ExportResult(sent, shown)
