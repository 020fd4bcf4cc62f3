"""Paginated listings: one ``Page`` shape and the ``limit``/``cursor`` query parameters.

A cursor is opaque to clients (today the offset of the next item, as text). Services list
whole (bounded) result sets; this layer slices them, so every listing pages the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from loopline.core.errors import InvalidArgumentError

__all__ = ["MAX_LIMIT", "Page", "PageRequest", "Paging", "paginate"]

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


class Page(BaseModel, Generic[T]):
    """One page of a listing; ``next_cursor`` fetches the next one (null on the last)."""

    items: list[T]
    next_cursor: str | None = None


class PageRequest(BaseModel):
    """Which page a caller asked for."""

    limit: int
    offset: int

    def window(self, cap: int | None = None) -> int:
        """Return how many rows to fetch: this page and one more (is there a next page?).

        Raises:
            InvalidArgumentError: naming ``cursor`` when the page starts past ``cap``, the
                most rows the listing reaches.
        """
        if cap is not None and self.offset >= cap:
            raise InvalidArgumentError("cursor", f"this listing reaches its first {cap} rows; "
                                                 "narrow it with its filters")
        wanted = self.offset + self.limit + 1
        return wanted if cap is None else min(wanted, cap)


def page_request(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")
                         ] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(
            pattern=r"^[0-9]{1,9}$", description="The next_cursor of the previous page.")
        ] = None,
) -> PageRequest:
    """Read ``limit`` and ``cursor`` from the query.

    Raises:
        InvalidArgumentError: naming ``cursor`` when it is not one this API handed out.
    """
    # The pattern admits ASCII digits only (``str.isdigit`` would admit '²', which int()
    # refuses); nine of them bound the offset.
    return PageRequest(limit=limit, offset=0 if cursor is None else int(cursor))


Paging = Annotated[PageRequest, Depends(page_request)]


def paginate(items: Sequence[T], request: PageRequest) -> Page[T]:
    """Return the page ``request`` names of ``items``."""
    end = request.offset + request.limit
    chunk = list(items[request.offset:end])
    return Page[T](items=chunk, next_cursor=str(end) if end < len(items) else None)
