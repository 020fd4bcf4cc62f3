"""``GET /whoami``: which user and role the presented token acts as."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from loopline.api.auth import CurrentCaller, Reader

router = APIRouter(tags=["tokens"])


class WhoAmI(BaseModel):
    """The caller as the server sees it."""

    user: str
    role: str
    token_id: str


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: CurrentCaller, _: Reader) -> WhoAmI:
    """Return the token's user, role and id."""
    return WhoAmI(user=caller.token.user, role=str(caller.token.role),
                  token_id=caller.token.id)
