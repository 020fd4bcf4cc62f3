"""Pipeline files: command tasks in TOML or YAML, run end to end, refused whole when wrong."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from loopline.app import Workspace
from loopline.core.errors import InvalidArgumentError
from loopline.core.runs import TaskState
from loopline.pipelines import build_plan
from loopline.pipelines.pipeline_file import load_pipeline_file
from loopline.pipelines.shell import CommandCall

PY = json.dumps(sys.executable)  # a TOML and YAML string literal

PREPARE = """
import pathlib, sys
rows, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "data.csv").write_text("\\n".join(str(i) for i in range(rows)))
print(f"prepared {rows} rows")
"""

TRAIN = """
import json, pathlib, sys
data, out, label = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
rows = (data / "data.csv").read_text().splitlines()
(out / "model.json").write_text(json.dumps({"rows": len(rows), "label": label}))
"""

TOML = f"""
name = "nightly"

[parameters]
rows = 4
label = "x"
verbose = false

[[tasks]]
name = "prepare"
command = "{{python}} prepare.py {{rows}} {{out}}"
retries = 2
timeout = 60
outputs = ["data.csv"]

[[tasks]]
name = "train-model"
command = [{PY}, "jobs/train.py", "{{prepare}}", "{{out}}", "{{label}}"]
needs = ["prepare"]
env = {{ SEED = "7" }}
""".replace("{python}", sys.executable)

YAML = f"""
name: nightly
parameters:
  rows: 4
  label: x
tasks:
  - name: prepare
    command: [{PY}, prepare.py, "{{rows}}", "{{out}}"]
    outputs: [data.csv]
  - name: train-model
    command: [{PY}, jobs/train.py, "{{prepare}}", "{{out}}", "{{label}}"]
    needs: [prepare]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "jobs").mkdir(parents=True)
    write(folder, "prepare.py", PREPARE)
    write(folder / "jobs", "train.py", TRAIN)
    return folder


@pytest.mark.parametrize(("filename", "text"), [("nightly.toml", TOML), ("nightly.yaml", YAML)])
def test_a_pipeline_file_runs_its_tasks_in_needs_order_end_to_end(
        ws: Workspace, project: Path, filename: str, text: str) -> None:
    definition = load_pipeline_file(write(project, filename, text))
    assert definition.name == "nightly"
    plan = build_plan(definition, {"rows": 3})
    assert plan.order == ("prepare", "train-model")
    assert plan.nodes["train-model"].upstream == ("prepare",)
    assert dict(plan.nodes["prepare"].kwargs) == {"rows": 3}, "only the parameters it uses"

    result = ws.pipelines.run(definition, {"rows": 3, "label": "a b; rm -rf ~"})
    result.raise_for_failure()
    files = result.outputs["train-model"]["files"]
    model = json.loads(ws.pipelines.blobs.get_bytes(files["model.json"]["digest"]))
    assert model == {"rows": 3, "label": "a b; rm -rf ~"}
    logs = ws.pipelines.runs.attempts(result.run.id, "prepare")[-1].logs
    assert logs is not None
    assert logs["stdout"]["tail"] == "prepared 3 rows\n"

    again = ws.pipelines.run(definition, {"rows": 3, "label": "a b; rm -rf ~"})
    states = {t.task_key: t.state for t in ws.pipelines.runs.tasks(again.run.id)}
    assert set(states.values()) == {TaskState.CACHED}


def test_a_wrongly_typed_parameter_is_refused_at_run_time_naming_it(
        ws: Workspace, project: Path) -> None:
    definition = load_pipeline_file(write(project, "nightly.toml", TOML))
    with pytest.raises(InvalidArgumentError) as caught:
        ws.pipelines.run(definition, {"rows": "many"})
    assert caught.value.field == "parameters.rows"
    with pytest.raises(InvalidArgumentError) as caught:
        ws.pipelines.run(definition, {"verbose": 1})
    assert caught.value.field == "parameters.verbose"
    with pytest.raises(InvalidArgumentError) as caught:
        ws.pipelines.run(definition, {"colour": "red"})
    assert caught.value.field == "parameters.colour"


def test_a_failing_command_fails_the_run_and_skips_what_needs_it(
        ws: Workspace, project: Path) -> None:
    text = f"""
        name = "broken"
        [[tasks]]
        name = "first"
        command = [{PY}, "-c", "import sys; sys.exit(4)"]
        [[tasks]]
        name = "second"
        command = [{PY}, "-c", "pass"]
        needs = ["first"]
    """
    result = ws.pipelines.run(load_pipeline_file(write(project, "broken.toml", text)))
    assert not result.succeeded
    assert result.run.error is not None
    assert "exited with code 4" in result.run.error
    states = {t.task_key: t.state for t in ws.pipelines.runs.tasks(result.run.id)}
    assert states == {"first": TaskState.FAILED, "second": TaskState.UPSTREAM_FAILED}


TASK = '[[tasks]]\nname = "{name}"\ncommand = ["python", "-c", "pass", {args}]\n{extra}\n'


def tasks_toml(*tasks: tuple[str, str, str], head: str = 'name = "p"\n') -> str:
    return head + "".join(TASK.format(name=n, args=a, extra=e) for n, a, e in tasks)


@pytest.mark.parametrize(("text", "field", "words"), [
    (tasks_toml(("a", "", "colour = 'red'")), "tasks[0].colour", "Extra inputs"),
    (tasks_toml(("a", "", ""), head='name = "p"\nowner = "me"\n'), "owner", "Extra inputs"),
    (tasks_toml(("a", "", ""), ("b", "", "needs = ['ghost']")), "tasks[1].needs[0]",
     "task 'b' needs unknown task 'ghost'"),
    (tasks_toml(("a", "", "needs = ['b']"), ("b", "", "needs = ['a']")), "tasks",
     "a, b form a cycle"),
    (tasks_toml(("a", "", "needs = ['a']")), "tasks", "a form a cycle"),
    (tasks_toml(("a", "", ""), ("a", "", "")), "tasks[1].name", "defined twice"),
    (tasks_toml(("a", "", "retries = 'two'")), "tasks[0].retries", "valid integer"),
    (tasks_toml(("a", "", "retries = 1000")), "tasks[0].retries", "task 'a'"),
    (tasks_toml(("a", "", "outputs = ['../x']")), "tasks[0].outputs[0]", "would leave"),
    (tasks_toml(("a", '"{ghost}"', "")), "tasks[0].command", "{ghost} of task 'a'"),
    (tasks_toml(("a", "", ""), ("b", '"{a}"', "")), "tasks[1].command", "add 'a' to its needs"),
    (tasks_toml(("a", '"{0}"', "")), "tasks[0].command", "plain name"),
    (tasks_toml(("bad name", "", "")), "tasks[0].name", "must be"),
    ('name = "p"\ntasks = []\n', "tasks", "at least 1"),
    ('tasks = []\n', "name", "Field required"),
    (tasks_toml(("a", "", ""), head='name = "p"\n[parameters]\nrows = [1]\n'),
     "parameters.rows", "integer, a finite number"),
    (tasks_toml(("a", "", ""), head='name = "p"\n[parameters]\na = 1\n'),
     "parameters.a", "also a task's name"),
    (tasks_toml(("a", "", ""), head='name = "p"\n[parameters]\nout = 1\n'),
     "parameters.out", "identifier"),
    ('name = "p"\n[[tasks]]\nname = "a"\ncommand = 3\n', "tasks[0].command",
     "string or a list of strings"),
])
def test_a_bad_file_is_refused_at_load_time_naming_the_field(
        tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(InvalidArgumentError) as caught:
        load_pipeline_file(path)
    assert caught.value.field == f"{path}: {field}"
    assert words in caught.value.problem


@pytest.mark.parametrize(("name", "text", "words"), [
    ("bad.yaml", "name: p\ntasks: [\n", "is not valid YAML"),
    ("bad.yml", "- just\n- a list\n", "valid dictionary"),
    ("bad.toml", "name = \n", "is not valid TOML"),
    ("bad.json", "{}", "must end in .toml"),
])
def test_a_file_that_is_not_a_pipeline_is_refused_naming_the_file(
        tmp_path: Path, name: str, text: str, words: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(InvalidArgumentError) as caught:
        load_pipeline_file(path)
    assert caught.value.field == str(path)
    assert words in caught.value.problem


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: p\ntasks:\n  - name: a\n   command: x\n")
    with pytest.raises(InvalidArgumentError, match="line 4"):
        load_pipeline_file(path)


def test_a_yaml_field_of_the_wrong_type_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\ntasks:\n  - name: a\n    command: [x]\n"
                                     "    needs: prepare\n")
    with pytest.raises(InvalidArgumentError) as caught:
        load_pipeline_file(path)
    assert caught.value.field == f"{path}: tasks[0].needs"
    assert "valid list" in caught.value.problem


def test_a_missing_or_oversized_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no such file"):
        load_pipeline_file(tmp_path / "absent.toml")
    big = write(tmp_path, "big.toml", "# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(InvalidArgumentError, match="the limit is"):
        load_pipeline_file(big)


def test_commands_run_in_the_files_folder_unless_cwd_says_otherwise(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    text = tasks_toml(("a", "", ""), ("b", "", "cwd = 'sub'"))
    definition = load_pipeline_file(write(tmp_path, "p.toml", text))
    calls = [node.task.fn for node in build_plan(definition).nodes.values()]
    assert all(isinstance(call, CommandCall) for call in calls)
    assert [getattr(call, "cwd", None) for call in calls] == [
        str(tmp_path.resolve()), str(tmp_path.resolve() / "sub")]
