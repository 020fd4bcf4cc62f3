"""Database engines for the metadata store: SQLite tuned for durability, PostgreSQL pooled.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit survives a crash),
foreign keys on and a busy timeout. Write transactions begin ``IMMEDIATE`` so two writers
queue on the lock instead of failing when a read lock cannot be upgraded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from loopline.core.errors import ConfigurationError
from loopline.core.redaction import redact_text

WRITE_OPTION = "loopline_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 2


def parse_url(url: str) -> URL:
    """Parse a database URL, refusing schemes loopline does not support.

    Raises:
        ConfigurationError: naming ``db_url`` when the URL is malformed or unsupported.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"invalid db_url {redact_text(url)!r}: "
                                 f"{redact_text(str(exc))}") from exc
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigurationError(
            f"invalid db_url: backend {parsed.get_backend_name()!r} is not supported;"
            " use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        raise ConfigurationError(
            f"invalid db_url: driver {parsed.drivername!r} is not supported; use"
            " postgresql+psycopg:// (pip install 'loopline[postgres]')"
        )
    return parsed


def create_engine(url: str) -> Engine:
    """Create an engine for ``url`` with loopline's durability settings applied.

    Raises:
        ConfigurationError: when the URL is unusable or the driver is not installed.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return _postgres_engine(parsed)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:":
        parent = Path(database).expanduser().parent
        if not parent.is_dir():
            raise ConfigurationError(
                f"invalid db_url: folder {str(parent)!r} does not exist; run `loopline init`"
            )
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Take transaction control from pysqlite so BEGIN/COMMIT are ours (and DDL is
    # transactional, which keeps a crashed migration wholly old or wholly new).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def _postgres_engine(url: URL) -> Engine:
    try:
        import psycopg  # noqa: F401 - fail early with an install hint
    except ImportError as exc:
        raise ConfigurationError(
            "PostgreSQL needs the psycopg driver: pip install 'loopline[postgres]'"
        ) from exc
    engine = sa.create_engine(
        url,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
    )
    sa.event.listen(engine, "connect", _postgres_on_connect)
    return engine


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # A server, database or role default of synchronous_commit=off would silently break the
    # promise that an acknowledged write survives a crash; this session insists on it.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO on")
    dbapi_connection.commit()


def redacted(url: str) -> str:
    """Return ``url`` with any password hidden, for display and logs."""
    return parse_url(url).render_as_string(hide_password=True)
