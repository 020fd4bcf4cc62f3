"""What commands that run locally or through ``--server`` need beyond the shared surface.

A session is the local ``Workspace`` or a server's ``Client`` (``context.open_session``).
Their services mirror each other, down to the ``actor`` a change names first: commands pass
``actor_of(session)``, the workspace's actor locally and the token's user through a server
(the only actor a client accepts).
"""

from __future__ import annotations

from loopline.app import Workspace
from loopline.client import Client

Session = Workspace | Client

__all__ = ["Session", "actor_of"]


def actor_of(session: Session) -> str:
    """Return who acts: the workspace's actor, or the user the server's token acts as.

    Raises:
        AuthenticationError: when the server refuses the token.
        BackendError: when the server cannot be reached.
    """
    if isinstance(session, Client):
        return session.whoami()["user"]
    return session.actor
