"""The end-to-end tests' runner of ``loopline`` in this process (see ``cli_runner``)."""

from __future__ import annotations

import pytest
from cli_runner import InProcessCli


@pytest.fixture
def run_cli(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcessCli:
    """Return a runner of ``loopline ARGS`` in this process, with ``run_console``'s signature."""
    return InProcessCli(capfd, monkeypatch)
