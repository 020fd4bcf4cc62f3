"""What every benchmark script shares: progress, timing, ratios, flags, a private PG schema."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
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


def check(condition: bool, message: str) -> None:
    """Stop the benchmark when a sanity check fails: a wrong result makes timings moot."""
    if not condition:
        raise RuntimeError(f"benchmark sanity check failed: {message}")


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


def summary(seconds: list[float]) -> dict[str, float]:
    """Return median (p50), p95 and max of ``seconds``, in milliseconds."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(p95 * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3)}


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


def on_postgres(url: str | None, action: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Run ``action(store_url)`` in a private schema, or say why PostgreSQL was skipped."""
    if not url:
        return {"skipped": f"no PostgreSQL URL (pass --postgres-url or set {POSTGRES_ENV})"}
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg is not installed (pip install 'loopline[postgres]')"}
    from loopline.core.errors import LooplineError

    try:
        with postgres_schema(url) as (store_url, schema):
            return {"schema": schema, **action(store_url)}
    except (psycopg.Error, LooplineError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


@contextmanager
def scratch(parent: Path, name: str) -> Iterator[Path]:
    """Yield a fresh folder under ``parent`` and remove it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def max_rss_mib() -> float:
    """Return the process's peak resident set size so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 << 20 if sys.platform == "darwin" else 1 << 10
    return round(peak * scale / (1 << 20), 1)


def machine(**libraries: str) -> dict[str, Any]:
    """Describe the interpreter, the machine, and any libraries a benchmark compares with."""
    import loopline

    return {"python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "loopline": loopline.__version__, **libraries}


def public_settings(settings: Any) -> dict[str, Any]:
    """Return a settings dataclass for the report, the database URL shown only as given or not.

    The URL may hold a password; the report says only whether PostgreSQL was measured.
    """
    shown: dict[str, Any] = dataclasses.asdict(settings)
    shown["postgres_url"] = bool(settings.postgres_url)
    return shown


def add_common_arguments(parser: argparse.ArgumentParser, tmpdir_help: str) -> None:
    """Add the flags every benchmark takes: seed, PostgreSQL URL or none, temp folder."""
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--postgres-url", default=os.environ.get(POSTGRES_ENV),
                        help=f"postgresql+psycopg:// URL (default ${POSTGRES_ENV})")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--tmpdir", help=tmpdir_help)
