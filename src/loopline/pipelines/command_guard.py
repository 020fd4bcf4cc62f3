"""Run as a script between the engine and a command task: nothing outlives the runner.

``python command_guard.py PARENT_PID -- PROGRAM ARGS...`` leads the command's session (the
engine starts it with ``start_new_session``), runs the command in that same process group
and waits for it. When the process that started it dies (a runner killed with ``kill -9``
cannot clean up), the guard is handed to another parent, notices within half a second and
kills the whole group, so a resumed run never finds the old attempt still running beside
the new one. The guard exits as the command did: with its code, or by the same signal.

Standard library only, and started with ``-E -S``: it must not depend on the environment the
command is given.
"""

import os
import signal
import subprocess
import sys
import threading

CHECK_SECONDS = 0.5
CANNOT_START = 127


def _kill_group() -> None:
    os.killpg(0, signal.SIGKILL)  # the guard is the group's leader: this ends it too


def _watch_parent(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(CHECK_SECONDS):
        if os.getppid() != parent:
            _kill_group()


def main(args: list[str]) -> int:
    """Run the command after ``--`` while the process ``args[0]`` lives; return its code."""
    parent, separator, argv = int(args[0]), args[1], args[2:]
    if separator != "--" or not argv:
        sys.stderr.write("usage: command_guard.py PARENT_PID -- PROGRAM [ARGS...]\n")
        return 2
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        child = subprocess.Popen(argv)  # an argument list, never a shell
    except OSError as exc:
        sys.stderr.write(f"cannot start {argv[0]!r}: {exc.strerror}\n")
        return CANNOT_START
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: _kill_group())
    code = child.wait()
    if code < 0:  # end as the command ended: killed by the same signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
