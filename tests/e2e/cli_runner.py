"""Running ``loopline`` for the end-to-end tests: in this process, or as a user runs it.

A ``python -m loopline`` process spends over a second importing loopline before it does
anything, so most tests call the CLI in this process (``cli.main.run``), which parses the
same arguments, runs the same commands and maps errors to the same exit codes and stderr
lines. Each test file keeps at least one test on ``run_console``, a real process, for what
only a process proves: the console entry point, the exit status the shell sees, what reaches
stderr, and anything read at process start.

Both runners take the same arguments and return the same ``Ran``. Each in-process call gets
what a fresh process would: no ``LOOPLINE_*`` variables but the ones given, ``COLUMNS`` wide
enough that rich does not wrap and no colours, the given current folder, no stdin to read,
and the root logger back as it was afterwards; a pipeline file's folder put on ``sys.path``
stays there only until the test ends.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from loopline.app import Workspace
from loopline.cli import output
from loopline.cli.main import run
from loopline.store import AuditFilter

COLUMNS = "200"
TIMEOUT = 120


class Ran(NamedTuple):
    """What one ``loopline`` invocation returned and printed."""

    returncode: int
    stdout: str
    stderr: str


def _environment(user: str | None, env: Mapping[str, str] | None) -> dict[str, str]:
    """Return the variables a run sees beyond the inherited ones without ``LOOPLINE_*``."""
    chosen = {"COLUMNS": COLUMNS}
    if user is not None:
        chosen["LOOPLINE_USER"] = user
    chosen.update(env or {})
    return chosen


def run_console(cwd: Path, *args: str, user: str | None = "cli-tester",
                env: Mapping[str, str] | None = None) -> Ran:
    """Run ``python -m loopline ARGS`` in a subprocess in ``cwd``, as a user would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment.update(_environment(user, env))
    done = subprocess.run([sys.executable, "-m", "loopline", *args], cwd=cwd, env=environment,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


class InProcessCli:
    """Runs ``loopline`` in this process (``cli.main.run``), capturing what it prints.

    The capture is ``capfd``, so output written to the file descriptors (by a child process
    the command starts, say) is caught as a subprocess run would catch it.
    """

    def __init__(self, capture: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self._capture, self._monkeypatch = capture, monkeypatch
        monkeypatch.setattr(sys, "path", list(sys.path))  # restored when the test ends

    def __call__(self, cwd: Path, *args: str, user: str | None = "cli-tester",
                 env: Mapping[str, str] | None = None) -> Ran:
        """Run ``loopline ARGS`` in ``cwd``; return its exit status and output."""
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        self._capture.readouterr()  # output from before this run is not the command's
        with self._monkeypatch.context() as patch:
            for name in list(os.environ):
                if name.startswith("LOOPLINE_"):
                    patch.delenv(name)
            for name, value in _environment(user, env).items():
                patch.setenv(name, value)
            patch.chdir(cwd)
            patch.setattr(sys, "stdin", io.StringIO())  # a prompt reads end of file
            for shared in (output.console, output.err_console):
                # Each console chose colours and maybe a width when loopline.cli was imported,
                # from the terminal pytest had then (``pytest -s``); a process piped to
                # ``run_console`` has none, so: no colours, the width from COLUMNS.
                patch.setattr(shared, "_color_system", None)
                patch.setattr(shared, "_width", None)
            try:
                with pytest.raises(SystemExit) as done:
                    run(list(args))
            finally:  # the CLI's logging.basicConfig must not outlive the run
                root.handlers[:] = handlers
                root.setLevel(level)
            captured = self._capture.readouterr()
        code = done.value.code
        if isinstance(code, str):  # sys.exit("text"): a process prints it and exits 1
            return Ran(1, captured.out, captured.err + code + "\n")
        return Ran(int(code or 0), captured.out, captured.err)


class WorkspaceCli:
    """Runs ``loopline`` in this process on one open workspace, as its actor, on its backend."""

    def __init__(self, ws: Workspace, db_url: str, run_cli: InProcessCli) -> None:
        self.ws, self.db_url, self._run = ws, db_url, run_cli

    def __call__(self, *args: str) -> Ran:
        """Run ``loopline --workspace ROOT --db-url URL ARGS``."""
        return self._run(self.ws.root, "--workspace", str(self.ws.root), "--db-url", self.db_url,
                         *args, user=self.ws.actor)

    def json(self, *args: str) -> Any:
        """Run ``ARGS --json``, which must succeed, and return what it printed."""
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    def written(self) -> tuple[int, int]:
        """Return how many audit entries and events the workspace holds."""
        store = self.ws.store
        return (len(store.audit.entries(AuditFilter(limit=10_000))),
                len(store.events.read_after(0, 10_000)))
