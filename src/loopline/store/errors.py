"""Database errors turned into loopline's error tree, in one place, with one-line messages.

A driver error says what failed on several lines (and sometimes the URL); callers get a
``BackendError`` for an unreachable or failing database, a ``ConfigurationError`` for a file
that is not a database, and a ``ConflictError`` for a constraint another writer won.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from loopline.core.errors import BackendError, ConfigurationError, ConflictError

P = ParamSpec("P")
R = TypeVar("R")


def first_line(exc: sa.exc.SQLAlchemyError) -> str:
    """Return the driver's own message, first line only (no SQL, no URL, no hint lines)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate SQLAlchemy errors raised inside the block.

    Raises:
        ConfigurationError: when the SQLite file is not a database.
        ConflictError: when a uniqueness or foreign-key constraint refused the write.
        BackendError: for any other database failure (unreachable, timed out, broken).
    """
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise ConflictError(f"the database refused a conflicting write: {first_line(exc)}"
                            ) from exc
    except sa.exc.DatabaseError as exc:
        line = first_line(exc)
        if "file is not a database" in line:
            raise ConfigurationError(f"the metadata database file is not a SQLite database "
                                     f"({line}); check db_url") from exc
        raise BackendError(f"metadata database error: {line}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"metadata database error: {first_line(exc)}") from exc


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store method so database errors leave it as loopline errors."""
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with database_errors():
            return method(*args, **kwargs)
    return wrapper
