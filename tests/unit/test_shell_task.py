"""Command tasks: placeholders as single arguments, files kept, logs recorded, failures named."""

from __future__ import annotations

import json
import os
import pickle
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError, NotFoundError, PathEscapeError
from loopline.core.runs import TaskState
from loopline.pipelines import build_plan
from loopline.pipelines.context import TaskContext, reset_current, set_current
from loopline.pipelines.graph import Node
from loopline.pipelines.outputs import code_hash
from loopline.pipelines.shell import (
    KILL_GRACE,
    CommandCall,
    CommandFailedError,
    MissingOutputError,
    read_output_file,
    shell_task,
)
from loopline.pipelines.shell_process import ProcessOptions, run_process

PY = sys.executable

ECHO_ARGS = """
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
(out / "args.json").write_text(json.dumps(sys.argv[2:]))
(out / "nested").mkdir()
(out / "nested" / "note.txt").write_text("hello")
print("to stdout")
print("to stderr", file=sys.stderr)
"""


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "artifacts")


@contextmanager
def running(blobs: ContentAddressedStore) -> Iterator[TaskContext]:
    context = TaskContext("run-1", "task", 1, blobs)
    token = set_current(context)
    try:
        yield context
    finally:
        reset_current(token)


def script(tmp_path: Path, body: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def gone(pid: int) -> bool:
    """Tell whether ``pid`` no longer runs (a zombie nobody reaped counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_each_placeholder_fills_one_argument_verbatim_and_no_shell_runs(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, ECHO_ARGS)
    evil = "a b; rm -rf / $(touch pwned) `id` | cat > x && echo"
    command = shell_task([PY, job, "{out}", "{text}", "--n={n}", "{flag}", "{ratio}", "{items}",
                          "{{literal}}", "{text}"], name="echo")
    with running(blobs):
        output = command(text=evil, n=3, flag=True, ratio=0.5, items={"b": [1, "x"]})
        received = json.loads(read_output_file(output, "args.json"))
    assert received == [evil, "--n=3", "true", "0.5", '{"b":[1,"x"]}', "{literal}", evil]
    assert not (tmp_path / "pwned").exists()
    assert output["exit_code"] == 0
    assert sorted(output["files"]) == ["args.json", "nested/note.txt"]
    assert output["files"]["nested/note.txt"]["size"] == 5


def test_a_string_command_is_split_like_a_shell_would_but_values_are_not(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, ECHO_ARGS, "echo args.py")
    command = shell_task(f"{PY} '{job}' {{out}} 'two words' {{value}}", name="echo")
    with running(blobs):
        output = command(value="x 'y' \"z\"")
        assert json.loads(read_output_file(output, "args.json")) == ["two words", "x 'y' \"z\""]


def test_bytes_arrive_as_a_file_and_are_removed_after_the_attempt(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, """
        import pathlib, shutil, sys
        shutil.copy(sys.argv[1], pathlib.Path(sys.argv[2]) / "copy.bin")
        pathlib.Path(sys.argv[3]).write_text(sys.argv[1])
    """)
    seen = tmp_path / "seen.txt"
    command = shell_task([PY, job, "{data}", "{out}", str(seen)], name="copy")
    with running(blobs):
        output = command(data=b"\x00\x01binary")
        assert read_output_file(output, "copy.bin") == b"\x00\x01binary"
        with pytest.raises(NotFoundError, match="copy.bin"):
            read_output_file(output, "other.bin")
    assert not Path(seen.read_text()).exists(), "the temporary folder is removed"


def test_stdout_and_stderr_are_recorded_on_the_attempt_on_success_and_on_failure(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, ECHO_ARGS)
    failing = script(tmp_path, """
        import sys
        print("partial work")
        sys.exit("it broke")
    """, "fail.py")
    with running(blobs) as context:
        shell_task([PY, job, "{out}"], name="ok")()
        assert context.logs["stdout"]["tail"] == "to stdout\n"
        assert context.logs["stderr"]["tail"] == "to stderr\n"
        assert blobs.get_bytes(context.logs["stdout"]["digest"]) == b"to stdout\n"
    with running(blobs) as context, pytest.raises(CommandFailedError):
        shell_task([PY, failing], name="bad")()
    assert context.logs["stdout"]["tail"] == "partial work\n"
    assert context.logs["stderr"]["tail"] == "it broke\n"


def test_capture_keeps_only_the_tail_and_says_it_was_truncated(tmp_path: Path) -> None:
    job = script(tmp_path, """
        import sys
        sys.stdout.write("x" * 100_000 + "THE-END")
        sys.stderr.write("short")
    """)
    result = run_process([PY, job], ProcessOptions(limit=1000))
    assert result.stdout.endswith(b"x" * 993 + b"THE-END")
    assert result.stdout.startswith(b"[loopline: output truncated; the first 99007 bytes")
    assert result.stderr == b"short"
    assert result.returncode == 0


def test_a_non_zero_exit_fails_with_the_code_and_the_tail_of_stderr(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, """
        import sys
        sys.stderr.write("noise " * 2000 + "the real reason")
        sys.exit(3)
    """)
    with running(blobs), pytest.raises(CommandFailedError) as caught:
        shell_task([PY, job], name="train")()
    error = caught.value
    assert error.exit_code == 3
    assert "'train' exited with code 3" in str(error)
    assert str(error).endswith("the real reason")
    assert len(error.stderr_tail) == 2000
    again = pickle.loads(pickle.dumps(error))
    assert (again.exit_code, str(again)) == (3, str(error))


def test_a_command_killed_by_a_signal_fails_naming_the_signal(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    with running(blobs), pytest.raises(CommandFailedError, match="killed by SIGTERM"):
        shell_task([PY, job], name="doomed")()


def test_a_timeout_kills_the_whole_process_group_and_is_retryable(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    pids = tmp_path / "pids.txt"
    job = script(tmp_path, """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(sys.argv[1], "w") as f:
            f.write(f"{__import__('os').getpid()} {child.pid}")
        time.sleep(60)
    """)
    command = shell_task([PY, job, str(pids)], name="slow", timeout=1.0, retries=1)
    assert command.options.timeout == 1.0 + KILL_GRACE, "the engine's timeout is a backstop"
    assert command.options.retry.retries_after(TimeoutError(), 1)
    started = time.monotonic()
    with running(blobs), pytest.raises(TimeoutError, match="timeout of 1 s"):
        command()
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    numbers = [int(pid) for pid in pids.read_text().split()]
    while not all(gone(pid) for pid in numbers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in numbers), "the command and what it started are killed"


def test_a_program_that_cannot_start_fails_naming_it(blobs: ContentAddressedStore) -> None:
    with running(blobs), pytest.raises(FileNotFoundError, match="cannot start 'no-such-prog'"):
        shell_task(["no-such-prog", "x"], name="ghost")()


def test_a_declared_output_the_command_did_not_write_fails_naming_it(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    job = script(tmp_path, ECHO_ARGS)
    command = shell_task([PY, job, "{out}"], name="echo",
                         outputs=["args.json", "model/weights.bin"])
    with running(blobs), pytest.raises(MissingOutputError) as caught:
        command()
    assert caught.value.missing == ("model/weights.bin",)
    assert "model/weights.bin" in str(caught.value)
    assert "args.json" in str(caught.value), "the message says what was written instead"


@pytest.mark.parametrize("make", [
    "os.symlink('/etc/passwd', out / 'secret')",
    "os.symlink('/etc', out / 'etc')",
])
def test_a_link_under_out_fails_the_task_instead_of_being_followed(
        tmp_path: Path, blobs: ContentAddressedStore, make: str) -> None:
    job = script(tmp_path, f"import os, pathlib, sys\nout = pathlib.Path(sys.argv[1])\n{make}\n")
    with running(blobs), pytest.raises(PathEscapeError):
        shell_task([PY, job, "{out}"], name="sneaky")()


def test_an_upstream_command_output_arrives_as_a_folder_of_its_files(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    producer = script(tmp_path, ECHO_ARGS)
    consumer = script(tmp_path, """
        import pathlib, sys
        source, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
        (out / "upper.txt").write_text((source / "nested" / "note.txt").read_text().upper())
    """, "consume.py")
    with running(blobs):
        first = shell_task([PY, producer, "{out}"], name="make")()
        second = shell_task([PY, consumer, "{made}", "{out}"], name="use")(made=first)
        assert read_output_file(second, "upper.txt") == b"HELLO"


@pytest.mark.parametrize(("command", "field"), [
    ([PY, "{0}"], "command"), ([PY, "{a.b}"], "command"), ([PY, "{a!r}"], "command"),
    ([PY, "{a:>5}"], "command"), ([PY, "{"], "command"), ([PY, "}"], "command"),
    (["{program}", "x"], "command"), ([], "command"), ("python 'unclosed", "command"),
    ([PY, 3], "command"), ([PY, "a\x00b"], "command"),
])
def test_bad_commands_and_placeholders_are_refused_when_the_task_is_defined(
        command: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        shell_task(command, name="bad")
    assert caught.value.field == field


@pytest.mark.parametrize(("options", "field"), [
    ({"outputs": ["../escape"]}, "outputs[0]"), ({"outputs": ["/abs"]}, "outputs[0]"),
    ({"outputs": ["a", "a"]}, "outputs"), ({"outputs": "a.txt"}, "outputs"),
    ({"env": {"A=B": "x"}}, "env"), ({"env": {"A": 1}}, "env.A"), ({"retries": -1}, "retries"),
    ({"timeout": 0}, "timeout"), ({"name": "bad name"}, "name"), ({"cwd": 3}, "cwd"),
])
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any],
                                                    field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        shell_task([PY, "-c", "pass"], **{"name": "t", **options})
    assert caught.value.field == field


def test_a_placeholder_without_a_value_is_refused_when_the_pipeline_is_planned() -> None:
    command = shell_task([PY, "-c", "pass", "{rows}", "{out}"], name="prepare")

    @pipeline
    def forgetful(rows: int = 3) -> Any:
        return command(row=rows)

    with pytest.raises(InvalidArgumentError, match=r"\{rows\}.*pass rows=") as caught:
        build_plan(forgetful)
    assert "placeholder {rows}" in caught.value.field

    @pipeline
    def positional(rows: int = 3) -> Any:
        return command(rows)

    with pytest.raises(InvalidArgumentError, match="keyword arguments only"):
        build_plan(positional)


def test_the_cache_identity_follows_the_command_text_and_the_call_pickles_by_value() -> None:
    def node(definition: Any) -> Node:
        return Node("t", definition, (), {}, ())

    one = shell_task([PY, "-c", "print(1)"], name="t", timeout=5)
    same = shell_task([PY, "-c", "print(1)"], name="t", timeout=50)
    other = shell_task([PY, "-c", "print(2)"], name="t")
    moved = shell_task([PY, "-c", "print(1)"], name="t", cwd="/tmp")
    assert code_hash(node(one)) == code_hash(node(same)), "a timeout does not change results"
    assert len({code_hash(node(d)) for d in (one, other, moved)}) == 3
    assert isinstance(one.fn, CommandCall)
    assert pickle.loads(pickle.dumps(one.fn)) == one.fn
    assert one.fn.cache_identity() in repr(one.fn)


@task
def read_note(made: dict[str, Any]) -> str:
    return read_output_file(made, "nested/note.txt").decode()


def test_command_tasks_run_end_to_end_with_logs_on_the_attempt(
        ws: Workspace, tmp_path: Path) -> None:
    job = script(tmp_path, ECHO_ARGS)
    make = shell_task([PY, job, "{out}", "{label}"], name="make", outputs=["args.json"])

    @pipeline
    def wrapped(label: str = "x y") -> Any:
        return read_note(made=make(label=label))

    result = ws.pipelines.run(wrapped, {"label": "; rm -rf ~"})
    result.raise_for_failure()
    assert result.result == "hello"
    assert sorted(result.outputs["make"]["files"]) == ["args.json", "nested/note.txt"]
    attempts = ws.pipelines.runs.attempts(result.run.id, "make")
    assert attempts[-1].logs is not None
    assert attempts[-1].logs["stdout"]["tail"] == "to stdout\n"
    again = ws.pipelines.run(wrapped, {"label": "; rm -rf ~"})
    states = {t.task_key: t.state for t in ws.pipelines.runs.tasks(again.run.id)}
    assert states["make"] is TaskState.CACHED


def test_a_failing_command_fails_its_run_naming_the_exit_code(
        ws: Workspace, tmp_path: Path) -> None:
    job = script(tmp_path, "import sys\nsys.stderr.write('disk full')\nsys.exit(7)\n")
    broken = shell_task([PY, job], name="broken")

    @pipeline
    def failing() -> Any:
        return broken()

    result = ws.pipelines.run(failing)
    assert not result.succeeded
    assert result.run.error is not None
    assert "exited with code 7" in result.run.error
    assert "disk full" in result.run.error
