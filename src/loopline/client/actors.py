"""Who acts through a client: the ``actor`` a caller names must be the token's user.

The local services take the acting subject first (``access.grant(actor, ...)``,
``policies.apply(actor, ...)``, ``monitor_configs.apply(actor, ...)``); the remote ones keep
that argument, so code runs unchanged against a workspace or a server. The server acts as
the token's user whatever a request would name, so a client refuses any other ``actor``
before sending the change, rather than record it under a name the caller did not give.
"""

from __future__ import annotations

from loopline.client.transport import Transport
from loopline.core.errors import InvalidArgumentError

__all__ = ["check_actor"]


def check_actor(transport: Transport, actor: str) -> None:
    """Return when ``actor`` is the user the server acts as for ``transport``'s token.

    The token's user is asked once per client (``GET /whoami``) and remembered.

    Raises:
        InvalidArgumentError: naming ``actor`` when it is another user (nothing is changed).
        AuthenticationError, BackendError: as ``Transport.request`` when asking who acts.
    """
    user = transport.token_user()
    if actor != user:
        raise InvalidArgumentError(
            "actor", f"{actor!r} is not the user this client's token acts as ({user!r}): "
                     f"the server records every change under {user!r}; pass {user!r}, or "
                     "connect with a token of the intended user")
