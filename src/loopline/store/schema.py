"""Schema revisions: upgrade, inspect and check the metadata database against the code.

A database is usable only at the code's head revision. An empty, older or newer database is
refused with a message that names what to run. Upgrades run in one transaction, so a crash
mid-migration leaves the schema wholly old or wholly new (DDL is transactional on both
PostgreSQL and SQLite).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from loopline.core.errors import SchemaVersionError
from loopline.store.engine import WRITE_OPTION

VERSION_TABLE = "loopline_schema_version"
SCHEMA_LOCK_KEY = 0x6C6F6F70736368  # "loopsch": serialises schema upgrades on PostgreSQL
SCRIPT_LOCATION = "loopline.store:migrations"


class SchemaState(StrEnum):
    """How a database's revision relates to the code's head."""

    EMPTY = "empty"
    BEHIND = "behind"
    CURRENT = "current"
    AHEAD = "ahead"


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """A database's revision, the code's head, and how they relate."""

    current: str | None
    head: str
    state: SchemaState
    upgraded_from: str | None = None  # set by ``upgrade``: the revision before it ran
    changed: bool = False  # set by ``upgrade``: whether this call moved the revision


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """One revision shipped with the code."""

    revision: str
    down_revision: str | None
    message: str


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    """Return the revisions shipped with the code, loaded once per process.

    Alembic executes every revision file to read its identifiers; they cannot change while
    the process runs, and loading them on each store open and upgrade cost more than the
    rest of opening a store.
    """
    script = ScriptDirectory.from_config(_config())
    script.get_current_head()  # builds the revision map now, not under concurrent callers
    return script


def head_revision() -> str:
    """Return the revision the code expects."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaVersionError("no schema revisions are installed", None, "")
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the database's revision, or None when loopline's tables were never created."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        )
        return context.get_current_revision()


def status(engine: Engine) -> SchemaStatus:
    """Compare the database's revision with the code's head."""
    current = current_revision(engine)
    head = head_revision()
    if current is None:
        state = SchemaState.EMPTY
    elif current == head:
        state = SchemaState.CURRENT
    elif _is_known(current):
        state = SchemaState.BEHIND
    else:
        state = SchemaState.AHEAD
    return SchemaStatus(current, head, state)


def _is_known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def ensure_current(engine: Engine) -> SchemaStatus:
    """Return the status when the database is at head, else refuse with the fix named.

    Raises:
        SchemaVersionError: when the database is empty, behind or ahead of the code.
    """
    found = status(engine)
    if found.state is SchemaState.EMPTY:
        raise SchemaVersionError(
            "the metadata database has no loopline schema; run `loopline init` for a new"
            " workspace or `loopline db upgrade` for a new database",
            None, found.head,
        )
    if found.state is SchemaState.BEHIND:
        raise SchemaVersionError(
            f"the metadata database is at revision {found.current}, older than this loopline"
            f" ({found.head}); run `loopline db upgrade`",
            found.current, found.head,
        )
    if found.state is SchemaState.AHEAD:
        raise SchemaVersionError(
            f"the metadata database is at revision {found.current}, which is newer than this"
            f" loopline knows (head {found.head}); upgrade loopline instead",
            found.current, found.head,
        )
    return found


def upgrade(engine: Engine, target: str = "head",
            on_version_apply: Callable[..., None] | None = None) -> SchemaStatus:
    """Upgrade the database to ``target`` in a single transaction and return the new status.

    Raises:
        SchemaVersionError: when the database is newer than the code.
    """
    if status(engine).state is SchemaState.AHEAD:
        ensure_current(engine)
    with engine.connect() as connection:
        connection = connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Concurrent `init`s on one database: the first migrates, the rest find it done.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": SCHEMA_LOCK_KEY})
            before = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
            config = _config(connection)
            config.attributes["on_version_apply"] = on_version_apply
            _run_upgrade(config, target)
    after = status(engine)
    return replace(after, upgraded_from=before, changed=before != after.current)


def _run_upgrade(config: Config, target: str) -> None:
    """Run the revisions up to ``target`` on the shared revision map.

    This is ``alembic.command.upgrade`` (which loads every revision file anew) without the
    loading; ``_upgrade_revs`` is what that command calls.
    """
    script = _script()

    def steps(revision: Any, _: MigrationContext) -> Any:
        return script._upgrade_revs(target, revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev=target):
        script.run_env()


def history() -> list[RevisionInfo]:
    """List the revisions shipped with the code, oldest first."""
    revisions = list(_script().walk_revisions())
    revisions.reverse()
    return [
        RevisionInfo(
            revision=rev.revision,
            down_revision=rev.down_revision if isinstance(rev.down_revision, str) else None,
            message=(rev.doc or "").strip(),
        )
        for rev in revisions
    ]
