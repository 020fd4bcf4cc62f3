"""``/tokens``: create (the secret answered once), list, show and revoke API tokens (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from loopline.api.auth import Admin
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText
from loopline.core.governance import Role
from loopline.core.tokens import ApiToken

router = APIRouter(prefix="/tokens", tags=["tokens"])
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A token id.")]


class NewToken(BaseModel):
    """What a new token is: whose, which role, and for how long."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=256)
    role: Role
    expires: str | None = Field(default=None, max_length=32,
                                description="A duration from now: 90d, 12h, 30m, 2w.")
    description: str | None = Field(default=None, max_length=2000)


class CreatedToken(BaseModel):
    """The new token and its secret: shown in this answer and never again."""

    token: ApiToken
    secret: str


@router.post("", status_code=201, response_model=CreatedToken)
def create_token(body: NewToken, ws: Admin) -> CreatedToken:
    """Create a token; the answer holds its secret, which is stored only as a hash."""
    token, secret = ws.tokens.create(body.user, body.role, body.expires, body.description)
    return CreatedToken(token=token, secret=secret)


@router.get("", response_model=Page[ApiToken])
def list_tokens(ws: Admin, paging: Paging,
                user: Annotated[FilterText | None, Query(max_length=256)] = None,
                include_revoked: bool = False) -> Page[ApiToken]:
    """List tokens, newest first (never their secrets)."""
    return paginate(ws.tokens.list(user, include_revoked), paging)


@router.get("/{token_id}", response_model=ApiToken)
def show_token(token_id: TokenId, ws: Admin) -> ApiToken:
    """Show one token (never its secret)."""
    return ws.tokens.get(token_id)


@router.delete("/{token_id}", response_model=ApiToken)
def revoke_token(token_id: TokenId, ws: Admin) -> ApiToken:
    """Revoke a token: requests made with it are refused from now on."""
    return ws.tokens.revoke(token_id)
