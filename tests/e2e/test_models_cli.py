"""``loopline models`` end to end, on a workspace a user script filled. A failed verification
runs in subprocesses as a user runs it; the rest in this process (``cli.main.run``), which runs
the same code for a fraction of the cost (see ``cli_runner``). ``models verify`` starts its
own fresh process either way."""

from __future__ import annotations

import hashlib
import json
import runpy
import textwrap
from pathlib import Path

import pytest
from cli_runner import InProcessCli, run_console

REGISTER = '''
import loopline
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
with loopline.connect() as ws:
    for accuracy in (0.93, 0.96):
        ws.models.register(model, "iris", input_example=X,
                           metrics={"accuracy": accuracy, "recall": {"region=EU": 0.9}},
                           tags={"purpose": "sort iris flowers", "owner": "ann"})
'''


@pytest.fixture
def workspace(tmp_path: Path, run_cli: InProcessCli, monkeypatch: pytest.MonkeyPatch) -> Path:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "register.py").write_text(textwrap.dedent(REGISTER))
    with monkeypatch.context() as patch:  # `python register.py`, run here
        patch.chdir(tmp_path)
        patch.setenv("LOOPLINE_USER", "trainer")
        runpy.run_path(str(tmp_path / "register.py"), run_name="__main__")
    return tmp_path


def test_list_show_alias_and_card_a_registered_model(
        workspace: Path, run_cli: InProcessCli) -> None:
    listed = json.loads(run_cli(workspace, "models", "list", "--json").stdout)
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in listed] == [("iris", 2, {})]
    moved = run_cli(workspace, "models", "alias", "iris", "champion", "1")
    assert moved.returncode == 0 and "models:/iris@champion → version 1" in moved.stdout
    moved = run_cli(workspace, "models", "alias", "iris", "champion", "2", "--json")
    assert json.loads(moved.stdout) == {"uri": "models:/iris@champion", "from": 1, "to": 2}
    shown = json.loads(run_cli(workspace, "models", "show", "models:/iris@champion",
                               "--json").stdout)
    assert shown["version"]["version"] == 2 and shown["version"]["created_by"] == "trainer"
    assert [a["alias"] for a in shown["aliases"]] == ["champion"]
    table = run_cli(workspace, "models", "show", "iris/2")
    assert table.returncode == 0 and "accuracy" in table.stdout and "0.96" in table.stdout
    card = run_cli(workspace, "models", "card", "iris@champion")
    assert card.returncode == 0
    for text in ("# Model card: iris version 2", "sort iris flowers", "| accuracy | 0.96 |",
                 "| region=EU | 0.9 |", "| petal width (cm) | float64 |"):
        assert text in card.stdout, text
    assert json.loads(run_cli(workspace, "models", "card", "iris/1", "--json").stdout)[
        "metrics"]["overall"] == {"accuracy": 0.93}
    versions = json.loads(run_cli(workspace, "models", "versions", "iris", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2]
    audit = run_cli(workspace, "audit", "log", "--action", "model.alias_moved", "--json")
    assert [e["actor"] for e in json.loads(audit.stdout)] == ["cli-tester"] * 2


def test_status_trust_and_environment_commands(workspace: Path, run_cli: InProcessCli) -> None:
    staged = run_cli(workspace, "models", "status", "iris/1", "staging")
    assert staged.returncode == 0 and "candidate → staging" in staged.stdout
    assert run_cli(workspace, "models", "status", "iris/1", "candidate").returncode == 0
    refused = run_cli(workspace, "models", "status", "iris/1", "retired")
    assert refused.returncode == 5 and "'retired' is not a status" in refused.stderr
    trusted = run_cli(workspace, "models", "trust", "iris/1", "--reason", "reviewed")
    assert trusted.returncode == 0 and "trusted by cli-tester" in trusted.stdout
    lock = run_cli(workspace, "models", "env", "iris/1")
    assert lock.returncode == 0 and "scikit-learn==" in lock.stdout
    check = run_cli(workspace, "models", "env", "iris/1", "--check", "--strict")
    assert check.returncode == 0, check.stdout + check.stderr
    unalias = run_cli(workspace, "models", "unalias", "iris", "champion")
    assert unalias.returncode == 3 and "models:/iris@champion" in unalias.stderr


def test_bad_input_gives_one_line_errors_and_exit_codes(
        workspace: Path, run_cli: InProcessCli) -> None:
    for args, code, message in [
        (("show", "nope/1"), 3, "no model 'nope' is registered"),
        (("show", "iris"), 5, "expected models:/NAME/VERSION"),
        (("alias", "iris", "champion", "9"), 3, "models:/iris/9' not found"),
        (("alias", "iris", "champion", "two"), 5, "invalid VERSION"),
        (("versions", "nope"), 3, "loopline models list"),
    ]:
        done = run_cli(workspace, "models", *args)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


def test_verify_export_and_import_carry_a_version_to_another_workspace(
        workspace: Path, tmp_path_factory: pytest.TempPathFactory,
        run_cli: InProcessCli) -> None:
    verified = run_cli(workspace, "models", "verify", "iris/2")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for text in ("reproduces its recorded outputs in a fresh process", "predict_proba",
                 "150 holdout rows", "tolerance exact"):
        assert text in verified.stdout, text
    report = json.loads(run_cli(workspace, "models", "verify", "iris@latest", "--json").stdout)
    assert report["passed"] and report["rows"] == 150 and report["reasons"] == []
    exported = run_cli(workspace, "models", "export", "iris/2", "iris.bundle", "--json")
    assert exported.returncode == 0, exported.stderr
    bundle = workspace / "iris.bundle"
    assert json.loads(exported.stdout)["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    again = run_cli(workspace, "models", "export", "iris/2", "iris.bundle")
    assert again.returncode == 4 and "already exists" in again.stderr
    other = tmp_path_factory.mktemp("other")
    assert run_cli(other, "init").returncode == 0
    imported = run_cli(other, "models", "import", str(bundle), "--name", "iris-copy")
    assert imported.returncode == 0, imported.stderr
    assert "models:/iris/2 → models:/iris-copy/1" in imported.stdout
    assert "trust decisions are not carried over" in imported.stdout
    assert run_cli(other, "models", "verify", "iris-copy/1").returncode == 0
    tampered = other / "tampered.bundle"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    refused = run_cli(other, "models", "import", str(tampered))
    assert refused.returncode == 6 and "member '" in refused.stderr, refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert [m["name"] for m in json.loads(run_cli(other, "models", "list", "--json").stdout)] == [
        "iris-copy"]


@pytest.mark.e2e
def test_verify_exits_non_zero_and_says_why_when_the_artifact_changed(
        workspace: Path, run_cli: InProcessCli) -> None:
    shown = json.loads(run_cli(workspace, "models", "show", "iris/1", "--json").stdout)
    digest = shown["version"]["artifact_digest"]
    [stored] = (workspace / ".loopline" / "artifacts" / "objects").rglob(f"{digest}*")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    failed = run_console(workspace, "models", "verify", "iris/1")
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout and "failed verification: artifact:" in failed.stderr
    missing = run_cli(workspace, "models", "verify", "nope/1")
    assert missing.returncode == 3 and "no model 'nope' is registered" in missing.stderr
