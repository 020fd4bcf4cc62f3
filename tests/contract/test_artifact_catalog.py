"""The artifact catalogue on every backend: whether a put is new is decided with its audit
entry, so bytes stored by a put whose metadata write failed are recorded on the retry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopline.app import ArtifactService, Workspace
from loopline.core.errors import InvalidArgumentError


def test_a_put_whose_metadata_write_failed_is_recorded_on_the_retry(ws: Workspace) -> None:
    failing = ArtifactService(ws.artifacts.blobs, ws.store, actor="x" * 300)  # too long to audit
    with pytest.raises(InvalidArgumentError, match="actor"):
        failing.put_bytes(b"model weights")
    assert ws.store.audit.entries() == [] or all(
        e.action != "artifact.put" for e in ws.store.audit.entries())
    retried = ws.artifacts.put_bytes(b"model weights")
    assert retried.created
    puts = [e for e in ws.store.audit.entries() if e.action == "artifact.put"]
    assert [e.subject for e in puts] == [f"artifact:{retried.digest}"]
    assert not ws.artifacts.put_bytes(b"model weights").created
    assert [e.type for e in ws.store.events.read_after(0)].count("artifact.stored") == 1


def test_folders_and_fifos_are_refused_as_artifacts(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="regular file"):
        ws.artifacts.put_file(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgumentError, match="regular file"):
        ws.artifacts.put_file(fifo)
