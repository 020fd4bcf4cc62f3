"""Crash test: a writer killed mid-put leaves no visible object, and reopening sweeps its temp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import loopline
from loopline.artifacts import ContentAddressedStore

WRITER = """
import sys, time
from loopline.artifacts import ContentAddressedStore

store = ContentAddressedStore.from_url(sys.argv[1], chunk_size=65536)

def chunks():
    for _ in range(100_000):
        yield b"x" * 65536
        time.sleep(0.005)

store.put_stream(chunks())
"""


def _temp_files(root: Path) -> list[Path]:
    folder = root / "tmp"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _wait_for_partial_temp(root: Path, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        files = _temp_files(root)
        if files and files[0].stat().st_size > 1 << 20:
            return
        if child.poll() is not None:
            pytest.fail(f"writer exited early with {child.returncode}")
        time.sleep(0.02)
    pytest.fail("writer never started writing its temp file")


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_writer_killed_mid_put_leaves_no_object_and_reopening_empties_tmp(tmp_path: Path) -> None:
    root = tmp_path / "store"
    src = str(Path(loopline.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env)
    try:
        _wait_for_partial_temp(root, child)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = ContentAddressedStore.from_url(root, sweep_on_open=False)
    assert list(store.iter_objects()) == []
    assert not (root / "objects").exists() or not any((root / "objects").rglob("*"))
    assert len(_temp_files(root)) == 1

    ContentAddressedStore.from_url(root)
    assert _temp_files(root) == []
