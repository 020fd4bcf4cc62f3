"""Fixtures of the integration tests: the control-plane API over each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import ApiServer, serve_api

from loopline.app import Workspace


@pytest.fixture
def api(ws: Workspace) -> Iterator[ApiServer]:
    """The API served over the ``ws`` workspace (SQLite and PostgreSQL), with role tokens."""
    with serve_api(ws) as running:
        yield running
