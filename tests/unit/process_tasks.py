"""Task functions for the process invoker tests: top-level, so a spawned worker imports them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from loopline.pipelines.context import current_task


def add(a: int, b: int) -> int:
    return a + b


def repeat_bytes(data: bytes, times: int) -> bytes:
    return data * times


def worker_pid() -> int:
    return os.getpid()


def spin_forever() -> None:
    while True:
        time.sleep(0.05)


def sleep_forever() -> None:
    time.sleep(3600)


def fail_with_value_error() -> None:
    raise ValueError("bad")


def exit_hard(code: int) -> None:
    os._exit(code)


def kill_own_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def task_identity() -> list[object]:
    context = current_task()
    return [context.run_id, context.task_key, context.attempt]


def record_stdout(text: str) -> None:
    current_task().record_log("stdout", text.encode("utf-8"))


def meet_at_barrier(directory: str, parties: int, wait_seconds: float) -> int:
    """Arrive at a file barrier in ``directory`` and return this process's pid once all did."""
    folder = Path(directory)
    (folder / f"{os.getpid()}.arrived").write_text("")
    deadline = time.monotonic() + wait_seconds
    while len(list(folder.glob("*.arrived"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.glob('*.arrived')))} of {parties} "
                               "calls ran at the same time")
        time.sleep(0.02)
    return os.getpid()


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()
