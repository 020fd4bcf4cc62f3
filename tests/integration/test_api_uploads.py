"""Upload folders a dead server left behind are swept when a server starts; fresh ones stay."""

from __future__ import annotations

import os
import time

from loopline.api.uploads import sweep_stale, uploads_root
from loopline.app import Workspace


def test_stale_upload_folders_are_swept_and_fresh_ones_kept(ws: Workspace) -> None:
    root = uploads_root(ws)
    stale, fresh = root / "upload-stale", root / "upload-fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "body").write_bytes(b"x" * 10)
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    assert sweep_stale(ws) == 1
    assert not stale.exists() and (fresh / "body").exists()
    assert sweep_stale(ws) == 0
