"""The live view of a run in the terminal: a progress bar, the running tasks, the failures.

It is the runner's observer: updates arrive from the runner's scheduling thread after each
commit, so what it shows is what is recorded. Off a terminal (CI, pipes) it stays silent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopline.core.runs import FINAL_TASK_STATES, TaskState
from loopline.pipelines import TaskUpdate

SHOWN_RUNNING = 8
SHOWN_FAILURES = 5


class RunView:
    """Show a run's tasks live while it executes (a context manager and an observer)."""

    def __init__(self, console: Console, pipeline: str, total: int) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._states: dict[str, TaskState] = {}
        self._started: dict[str, float] = {}
        self._failures: list[tuple[str, str]] = []
        self._progress = Progress(TextColumn(pipeline), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=console)
        self._bar = self._progress.add_task("", total=total)
        self._live = Live(self._render(), console=console, refresh_per_second=8,
                          get_renderable=self._render)

    def __enter__(self) -> RunView:
        if self._console.is_terminal:
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._console.is_terminal:
            self._live.stop()

    def __call__(self, update: TaskUpdate) -> None:
        """Take one task update (the runner's observer)."""
        with self._lock:
            self._states[update.task_key] = update.state
            if update.state is TaskState.RUNNING:
                self._started.setdefault(update.task_key, time.monotonic())
            elif update.state is TaskState.FAILED:
                self._failures.append((update.task_key, update.error or ""))
            done = sum(state in FINAL_TASK_STATES for state in self._states.values())
            counts = Counter(str(state) for state in self._states.values())
        summary = "  ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        self._progress.update(self._bar, completed=done, description=summary)

    def _render(self) -> Group:
        with self._lock:
            running = [key for key, state in self._states.items()
                       if state in (TaskState.RUNNING, TaskState.RETRYING)]
            failures = list(self._failures[-SHOWN_FAILURES:])
            now = time.monotonic()
            table = Table(show_header=True, header_style="bold", box=None)
            table.add_column("running")
            table.add_column("for", justify="right")
            for key in running[:SHOWN_RUNNING]:
                table.add_row(key, f"{now - self._started.get(key, now):.1f}s")
            if len(running) > SHOWN_RUNNING:
                table.add_row(f"... and {len(running) - SHOWN_RUNNING} more", "")
        parts: list[Table | Progress] = [self._progress]
        if running:
            parts.append(table)
        if failures:
            failed = Table(show_header=True, header_style="bold red", box=None)
            failed.add_column("failed")
            failed.add_column("error")
            for key, error in failures:
                failed.add_row(key, error[:100])
            parts.append(failed)
        return Group(*parts)
