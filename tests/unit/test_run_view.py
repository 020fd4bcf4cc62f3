"""The live run view: what it shows as task updates arrive."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from loopline.cli.run_view import RunView
from loopline.core.runs import TaskState
from loopline.pipelines import TaskUpdate

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _update(key: str, state: TaskState, error: str | None = None) -> TaskUpdate:
    return TaskUpdate("run-1", key, state, 1, NOW, error)


def test_the_view_counts_finished_tasks_and_names_running_and_failed_ones() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    view = RunView(console, "train", total=3)
    view(_update("load", TaskState.RUNNING))
    view(_update("load", TaskState.SUCCEEDED))
    view(_update("fit", TaskState.RUNNING))
    view(_update("score", TaskState.RUNNING))
    view(_update("score", TaskState.FAILED, "ValueError: bad rows"))
    console.print(view._render())
    text = out.getvalue()
    assert "2/3" in text  # load succeeded and score failed: both final
    assert "fit" in text and "running" in text
    assert "score" in text and "ValueError: bad rows" in text


def test_off_a_terminal_the_view_prints_nothing() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with RunView(console, "train", total=1) as view:
        view(_update("load", TaskState.SUCCEEDED))
    assert out.getvalue() == ""
