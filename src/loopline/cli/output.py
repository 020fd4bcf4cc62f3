"""Rendering for the CLI: rich tables for people, ``--json`` for programs, one-line errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` (dataclasses, mappings, lists) as JSON on standard output."""
    print(json.dumps(_plain(value), indent=2, sort_keys=True, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table."""
    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(view)


def error(message: str) -> None:
    """Print one error line on standard error."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def success(message: str) -> None:
    """Print one success line."""
    console.print(f"[green]✓[/] {message}", highlight=False)
