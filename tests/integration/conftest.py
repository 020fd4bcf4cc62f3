"""Fixtures of the integration tests: the control-plane API over a workspace.

``api`` serves a SQLite workspace: the API layer is the same code whatever the store, and the
store's behaviour on PostgreSQL is what the contract suites prove. The tests that prove the
API itself on PostgreSQL too ask for ``api_on_each_backend`` (the OpenAPI walk for 401/403)
or build their own servers over the ``db_url``/``ws`` fixtures (schemathesis, client parity,
two server processes, per-resource tests that touch backend-specific behaviour).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ApiServer, serve_api

from loopline.app import Workspace


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    """The API served over a fresh SQLite workspace, with one token per role."""
    with Workspace.init(tmp_path / "api-ws") as workspace, serve_api(workspace) as running:
        yield running


@pytest.fixture
def api_on_each_backend(ws: Workspace) -> Iterator[ApiServer]:
    """The API served over the ``ws`` workspace (SQLite and PostgreSQL), with role tokens."""
    with serve_api(ws) as running:
        yield running
