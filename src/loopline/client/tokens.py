"""``client.tokens``: the workspace's ``Tokens`` service over HTTP (admin)."""

from __future__ import annotations

import builtins
from datetime import timedelta

from loopline.client.transport import Transport, decode, segment
from loopline.core.governance import Role
from loopline.core.tokens import ApiToken
from loopline.governance.durations import format_duration


class RemoteTokens:
    """Create, list, show and revoke API tokens, as ``Workspace.tokens`` does."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def create(self, user: str, role: Role | str, expires: str | timedelta | None = None,
               description: str | None = None) -> tuple[ApiToken, str]:
        """Create a token; return it and its secret (shown once). See ``Tokens.create``."""
        if isinstance(expires, timedelta):
            expires = format_duration(expires)
        body = self._http.post("/tokens", {"user": user, "role": str(role), "expires": expires,
                                           "description": description})
        return decode(ApiToken, body["token"]), str(body["secret"])

    def revoke(self, token_id: str) -> ApiToken:
        """Revoke the token ``token_id``. See ``Tokens.revoke``."""
        return decode(ApiToken, self._http.request("DELETE", f"/tokens/{segment(token_id)}"))

    def get(self, token_id: str) -> ApiToken:
        """Return the token ``token_id``. See ``Tokens.get``."""
        return decode(ApiToken, self._http.get(f"/tokens/{segment(token_id)}"))

    def list(self, user: str | None = None,
             include_revoked: bool = False) -> builtins.list[ApiToken]:
        """List tokens, newest first. See ``Tokens.list``."""
        return [decode(ApiToken, item) for item in self._http.items(
            "/tokens", {"user": user, "include_revoked": include_revoked})]
