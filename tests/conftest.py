"""Shared fixtures: every store test runs on SQLite and, when configured, on PostgreSQL.

PostgreSQL tests read ``LOOPLINE_TEST_POSTGRES_URL`` and each gets its own schema, created
here and dropped afterwards, so no run depends on what another left behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from loopline.app import Workspace
from loopline.store import MetadataStore

POSTGRES_URL = os.environ.get("LOOPLINE_TEST_POSTGRES_URL")
NO_POSTGRES = "LOOPLINE_TEST_POSTGRES_URL is not set (CI sets it)"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[
        pytest.mark.postgres, pytest.mark.skipif(POSTGRES_URL is None, reason=NO_POSTGRES)]),
]


SHARED_SCOPES = {"class", "module", "package"}


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture built once for several tests of its module."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(definition.scope in SHARED_SCOPES
               for definitions in info.name2fixturedefs.values() for definition in definitions)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for ``pytest -n N --dist loadgroup`` (what ``make test`` runs).

    Every test that needs Ray runs on one worker, so a single local Ray starts per run, as
    ``ray_runtime`` promises; a module's tests that share a module-scoped fixture (a server,
    a workspace with models) run on one worker, so it is built once; the rest go wherever a
    worker is free.
    """
    for item in items:
        if item.get_closest_marker("ray") or "ray_runtime" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own LOOPLINE_* settings out of the tests."""
    for name in list(os.environ):
        if name.startswith("LOOPLINE_") and not name.startswith("LOOPLINE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOOPLINE_USER", "tester")


def _postgres_schema_url() -> Iterator[str]:
    import psycopg

    assert POSTGRES_URL is not None
    schema = f"lt_{uuid.uuid4().hex[:16]}"
    conninfo = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL schema (tests using it are marked to skip without PostgreSQL)."""
    yield from _postgres_schema_url()


@pytest.fixture
def ws(db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace initialised on each backend."""
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": db_url})
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    """A metadata store migrated to head."""
    opened = MetadataStore.open(db_url, check_schema=False)
    opened.upgrade()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    """A local Ray with two CPUs, started once per session for the tests marked ``ray``."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'loopline[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
