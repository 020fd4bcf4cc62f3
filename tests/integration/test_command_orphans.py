"""A command task never outlives the runner that started it, even one killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

DRIVER = '''
import sys
from loopline import Workspace, pipeline, shell_task

pid_file = sys.argv[2]
sleeper = shell_task([sys.executable, "-c",
                      "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                      "time.sleep(120)", pid_file], name="sleeper", cache=False)

@pipeline
def hangs():
    sleeper()

with Workspace.init(sys.argv[1]) as ws:
    ws.pipelines.run(hangs)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (no init to reap it in a container) counts as gone
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_a_command_dies_with_a_runner_killed_with_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    pid_file = tmp_path / "command.pid"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ws"),
                               str(pid_file)], env=environment)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert driver.poll() is None, "the driver ended before the command started"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        command = int(pid_file.read_text())
        assert _alive(command)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 10
        while _alive(command) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(command), "the command outlived its runner"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
