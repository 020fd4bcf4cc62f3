"""A control-plane API served on a free loopback port over a test workspace, with tokens.

``ApiServer`` holds the workspace, the server's URL and one token per role (users ``ada``
admin, ``dev`` developer, ``app`` approver, ``vic`` viewer; the workspace is open, so each
token's role is what its user may do). ``http(role)`` is a raw ``httpx.Client`` with that
token; ``client(role)`` a ``loopline.client.Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from loopline.api import ApiOptions, create_api
from loopline.api.run_starter import starter_of
from loopline.app import Workspace
from loopline.client import Client
from loopline.pipelines import PipelineDefinition
from loopline.serving.server import ThreadedServer

USERS = {"admin": "ada", "developer": "dev", "approver": "app", "viewer": "vic"}


@dataclass
class ApiServer:
    """A running API and the tokens to call it with."""

    workspace: Workspace
    url: str
    secrets: dict[str, str]
    _opened: list[httpx.Client | Client] = field(default_factory=list)

    def http(self, role: str | None = "admin") -> httpx.Client:
        """Return an HTTP client with ``role``'s token (no token for None)."""
        headers = {} if role is None else {"Authorization": f"Bearer {self.secrets[role]}"}
        opened = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)
        self._opened.append(opened)
        return opened

    def client(self, role: str = "admin") -> Client:
        """Return a loopline client with ``role``'s token."""
        opened = Client(self.url, self.secrets[role])
        self._opened.append(opened)
        return opened

    def close(self) -> None:
        for opened in self._opened:
            opened.close()


@contextmanager
def serve_api(workspace: Workspace, options: ApiOptions | None = None, *,
              pipelines: Sequence[PipelineDefinition] = (),
              wrap: Callable[[Any, dict[str, str]], Any] | None = None) -> Iterator[ApiServer]:
    """Serve the API over ``workspace`` until the block ends.

    ``pipelines`` are the ones runs may be started of; ``wrap(app, secrets)`` returns the
    ASGI app actually served (a test's recorder around the API, say). At the end every run
    started over the API must have ended.
    """
    secrets = {role: workspace.tokens.create(user, role)[1] for role, user in USERS.items()}
    app = create_api(workspace, options or ApiOptions(auth_failures_per_minute=0),
                     pipelines=pipelines)
    server = ThreadedServer(app if wrap is None else wrap(app, secrets))
    api = ApiServer(workspace, server.url, secrets)
    try:
        yield api
    finally:
        try:
            assert starter_of(app.state).join(60), "a run started over the API did not end"
        finally:
            api.close()
            server.stop()
