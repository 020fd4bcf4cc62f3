"""Rendering for the CLI: rich tables for people, ``--json`` for programs, one-line errors.

Console markup is off: names, paths and messages come from users and the database, and a
``[/x]`` in an actor name must print as text, never be parsed (or crash the printer).
Styling is applied with ``style=`` and ``Text`` instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)


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
        # Fold rather than crop: a digest or path must stay whole enough to copy.
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell))
                       for cell in row))
    console.print(view)


def ok_or_fail(healthy: bool) -> Text:
    """Return a green ``ok`` or a red ``FAIL`` table cell."""
    return Text("ok", style="green") if healthy else Text("FAIL", style="bold red")


def error(message: str) -> None:
    """Print one error line on standard error."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def success(message: str) -> None:
    """Print one success line."""
    console.print(Text.assemble(("✓ ", "green"), message))
