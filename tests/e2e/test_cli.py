"""The command line end to end: the entry points, ``--debug`` and the demo in subprocesses as a
user runs them; the other commands in this process (``cli.main.run``), which runs the same
code for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import InProcessCli, run_console

import loopline


@pytest.mark.e2e
def test_version_is_printed_by_both_entry_points(tmp_path: Path) -> None:
    assert run_console(tmp_path, "--version").stdout.strip() == f"loopline {loopline.__version__}"
    script = Path(sys.executable).with_name("loopline")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          check=True, timeout=60)
    assert loopline.__version__ in done.stdout


def test_init_put_list_verify_round_trip(tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "model.bin").write_bytes(b"\x00weights" * 1000)
    put = run_cli(tmp_path, "artifacts", "put", "model.bin", "--json")
    assert put.returncode == 0, put.stderr
    digest = json.loads(put.stdout)["digest"]
    listed = json.loads(run_cli(tmp_path, "artifacts", "list", "--json").stdout)
    assert [o["digest"] for o in listed] == [digest]
    assert run_cli(tmp_path, "artifacts", "get", digest, "copy.bin").returncode == 0
    assert (tmp_path / "copy.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert run_cli(tmp_path, "artifacts", "verify").returncode == 0
    audit = json.loads(run_cli(tmp_path, "audit", "log", "--json").stdout)
    assert audit[0]["action"] == "artifact.put" and audit[0]["actor"] == "cli-tester"
    later = run_cli(tmp_path, "audit", "log", "--since", "2999-01-01", "--json")
    assert later.returncode == 0 and json.loads(later.stdout) == []
    events = json.loads(run_cli(tmp_path, "events", "list", "--json").stdout)
    assert events[-1]["type"] == "artifact.stored"
    status = run_cli(tmp_path, "status", "--json")
    assert status.returncode == 0 and all(c["healthy"] for c in json.loads(status.stdout))


def test_tampered_artifact_fails_verify_naming_it(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    put = run_cli(tmp_path, "artifacts", "put", "data.csv", "--json")
    digest = json.loads(put.stdout)["digest"]
    stored = next((tmp_path / ".loopline" / "artifacts" / "objects").rglob(f"{digest}*"))
    stored.write_bytes(b"a,b\n1,3\n")
    verify = run_cli(tmp_path, "artifacts", "verify")
    assert verify.returncode != 0
    assert digest in verify.stderr
    get = run_cli(tmp_path, "artifacts", "get", digest, "out.csv")
    assert get.returncode != 0 and not (tmp_path / "out.csv").exists()


@pytest.mark.e2e
def test_errors_are_one_line_and_tracebacks_need_debug(tmp_path: Path) -> None:
    missing = run_console(tmp_path, "status")
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0
    assert "loopline init" in missing.stderr and "Traceback" not in missing.stderr
    debug = run_console(tmp_path, "--debug", "status")  # the entry point prints it
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_bad_input_exits_non_zero_with_the_field_named(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    bad_digest = run_cli(tmp_path, "artifacts", "get", "../../etc/passwd", "out")
    assert bad_digest.returncode != 0 and "digest" in bad_digest.stderr
    assert run_cli(tmp_path, "artifacts", "put", "no-such-file").returncode == 2
    bad_url = run_cli(tmp_path, "--db-url", "mysql://x/y", "status")
    assert bad_url.returncode != 0 and "db_url" in bad_url.stderr


def test_settings_file_errors_name_the_field(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    config = tmp_path / ".loopline" / "loopline.toml"
    config.write_text(config.read_text() + "\ncolour = 'blue'\n")
    result = run_cli(tmp_path, "status")
    assert result.returncode != 0 and "colour" in result.stderr


def test_db_commands_report_the_revision(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    current = json.loads(run_cli(tmp_path, "db", "current", "--json").stdout)
    assert current["state"] == "current" and current["current"] == current["head"]
    history = json.loads(run_cli(tmp_path, "db", "history", "--json").stdout)
    assert history[-1]["revision"] == current["head"]
    assert run_cli(tmp_path, "db", "upgrade").returncode == 0


def test_encrypted_workspace_round_trips_and_rotates_keys(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    old = run_cli(tmp_path, "artifacts", "generate-key").stdout.strip()
    new = run_cli(tmp_path, "artifacts", "generate-key").stdout.strip()
    run_cli(tmp_path, "init", env={"LOOPLINE_ENCRYPTION_KEY": old})
    (tmp_path / "secret.txt").write_text("the weights are secret")
    put = run_cli(tmp_path, "artifacts", "put", "secret.txt", "--json",
                  env={"LOOPLINE_ENCRYPTION_KEY": old})
    info = json.loads(put.stdout)
    assert info["key_id"]
    rotate = run_cli(tmp_path, "artifacts", "rotate-key",
                     env={"LOOPLINE_ENCRYPTION_KEY": f"{new},{old}"})
    assert rotate.returncode == 0, rotate.stderr
    got = run_cli(tmp_path, "artifacts", "get", info["digest"], "back.txt",
                  env={"LOOPLINE_ENCRYPTION_KEY": new})
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.txt").read_text() == "the weights are secret"
    wrong = run_cli(tmp_path, "artifacts", "get", info["digest"], "nope.txt",
                    env={"LOOPLINE_ENCRYPTION_KEY": old})
    assert wrong.returncode != 0 and "key" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "nope.txt").exists()


@pytest.mark.e2e
def test_demo_runs_end_to_end(tmp_path: Path) -> None:  # `make demo`, as a new user runs it
    # --quick: the closed loop on its small setting (tests/e2e/test_demo_loop.py checks it)
    result = run_console(tmp_path, "demo", "--dir", str(tmp_path / "demo"), "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chain verified" in result.stdout and "edited" in result.stdout
    assert (tmp_path / "demo" / ".loopline" / "loopline.db").is_file()
    assert "ALERT accuracy-drop" in result.stdout and "promoted to 100%" in result.stdout
    assert "time to detect" in result.stdout and "time to recover" in result.stdout


def test_brackets_in_names_and_paths_print_as_text(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    (tmp_path / "w.bin").write_bytes(b"w")
    put = run_cli(tmp_path, "--user", "[/x]", "artifacts", "put", "w.bin", "--json")
    assert put.returncode == 0, put.stderr
    log = run_cli(tmp_path, "audit", "log")
    assert log.returncode == 0 and "[/x]" in log.stdout, log.stderr
    digest = json.loads(put.stdout)["digest"]
    bad = run_cli(tmp_path, "artifacts", "get", digest, "[/x]/y")
    assert bad.returncode != 0 and "[/x]/y" in bad.stderr and "Traceback" not in bad.stderr


def test_init_honours_the_workspace_flag(tmp_path: Path, run_cli: InProcessCli) -> None:
    target = tmp_path / "elsewhere"
    assert run_cli(tmp_path, "--workspace", str(target), "init").returncode == 0
    assert (target / ".loopline" / "loopline.toml").is_file()
    assert not (tmp_path / ".loopline").exists()
