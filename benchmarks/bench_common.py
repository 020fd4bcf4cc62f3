"""What every benchmark script shares: progress lines, timing, ratios, a private PG schema."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import quote

T = TypeVar("T")

POSTGRES_ENV = "LOOPLINE_TEST_POSTGRES_URL"
_STARTED = time.perf_counter()


def elapsed() -> float:
    """Return the seconds since the benchmark started, rounded for the report."""
    return round(time.perf_counter() - _STARTED, 1)


def progress(message: str) -> None:
    """Write one progress line to stderr, prefixed with the elapsed time."""
    print(f"[{time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def measure(action: Callable[[], T]) -> tuple[T, float]:
    """Run ``action`` once; return its result and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def per_second(count: float, seconds: float) -> float:
    """Return ``count / seconds`` rounded for the report (0 when nothing was timed)."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ratio(value: float, baseline: float) -> float:
    """Return ``value / baseline`` rounded to 3 decimals (0 when the baseline is 0)."""
    return round(value / baseline, 3) if baseline > 0 else 0.0


@contextmanager
def postgres_schema(url: str) -> Iterator[tuple[str, str]]:
    """Create a private schema; yield (store URL, schema); drop it afterwards."""
    import psycopg

    schema = f"lb_{uuid.uuid4().hex[:16]}"
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options={quote(f'-csearch_path={schema}')}", schema
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
