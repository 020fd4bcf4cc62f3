"""Code version (git) and environment provenance: states, hashes, and failing without raising."""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.core.canonical import hash_canonical
from loopline.data import provenance
from loopline.data.provenance import (
    CodeVersion,
    clear_environment_cache,
    code_version,
    environment,
    normalise_name,
    requirements_lock,
)

PIN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*==\S+$")


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Tester", "-c", "user.email=tester@example.com",
               "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args]
    done = subprocess.run(command, cwd=repo, shell=False, capture_output=True, check=True,
                          timeout=30, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit holding ``train.py`` and a ``.gitignore``."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "train.py", ".gitignore")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_clean_repository_gives_commit_and_branch_and_no_diff_hash(repo: Path) -> None:
    version = code_version(repo)
    assert version == CodeVersion(repo.resolve(), git(repo, "rev-parse", "HEAD"), "main",
                                  dirty=False, diff_sha256=None, reason=None)
    assert json.loads(json.dumps(version.as_dict()))["repo"] == str(repo.resolve())


def test_modified_file_makes_tree_dirty_and_each_change_hashes_differently(repo: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    first = code_version(repo)
    assert first.dirty and first.diff_sha256 is not None and first.reason is None
    assert code_version(repo).diff_sha256 == first.diff_sha256
    (repo / "train.py").write_text("print('v3')\n")
    assert code_version(repo).diff_sha256 not in (None, first.diff_sha256)
    (repo / "train.py").write_text("print('v1')\n")
    assert code_version(repo) == code_version(repo) and not code_version(repo).dirty
    assert code_version(repo).diff_sha256 is None


def test_staged_change_counts_as_uncommitted(repo: Path) -> None:
    (repo / "train.py").write_text("print('staged')\n")
    git(repo, "add", "train.py")
    assert code_version(repo).dirty


def test_untracked_file_path_and_content_change_the_hash_and_ignored_files_do_not(
        repo: Path) -> None:
    (repo / "debug.log").write_text("ignored\n")
    assert not code_version(repo).dirty
    (repo / "notes.txt").write_text("a\n")
    with_a = code_version(repo).diff_sha256
    (repo / "notes.txt").write_text("b\n")
    with_b = code_version(repo).diff_sha256
    (repo / "notes.txt").rename(repo / "other.txt")
    renamed = code_version(repo).diff_sha256
    assert None not in (with_a, with_b, renamed)
    assert len({with_a, with_b, renamed}) == 3


def test_untracked_file_over_the_limit_contributes_only_its_path_and_size(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "MAX_UNTRACKED_BYTES", 8)
    big = repo / "weights.bin"
    big.write_bytes(b"0123456789")
    first = code_version(repo).diff_sha256
    big.write_bytes(b"abcdefghij")
    assert code_version(repo).diff_sha256 == first
    big.write_bytes(b"abcdefghijk")
    assert code_version(repo).diff_sha256 not in (None, first)


def test_untracked_symlink_fifo_and_nested_repository_are_hashed_without_being_opened(
        repo: Path) -> None:
    (repo / "link").symlink_to("/nonexistent/target")
    with_link = code_version(repo)
    assert with_link.dirty and with_link.reason is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(repo / "pipe")  # opening it would block until a writer came
        assert stat.S_ISFIFO((repo / "pipe").lstat().st_mode)
        assert code_version(repo) == with_link  # git lists no FIFOs: nothing changes
    git(repo, "init", "-q", "nested")  # listed as "nested/": a directory, not a file
    with_nested = code_version(repo)
    assert with_nested.reason is None
    assert with_nested.diff_sha256 not in (None, with_link.diff_sha256)


def test_subdirectory_reports_the_whole_repository(repo: Path) -> None:
    sub = repo / "pkg"
    sub.mkdir()
    (repo / "top.txt").write_text("outside pkg\n")
    (sub / "inner.txt").write_text("inside pkg\n")
    from_root = code_version(repo)
    from_sub = code_version(sub)
    assert from_sub.repo == repo.resolve()
    assert from_sub.diff_sha256 == from_root.diff_sha256 is not None
    assert code_version(repo / "train.py").repo == repo.resolve()  # a file: its directory


def test_detached_head_has_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    version = code_version(repo)
    assert version.branch is None and version.commit == git(repo, "rev-parse", "HEAD")


def test_repository_without_commits_has_no_commit_but_hashes_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git(tmp_path, "init", "-q", "fresh")
    fresh = tmp_path / "fresh"
    empty = code_version(fresh)
    assert (empty.repo, empty.commit, empty.dirty, empty.diff_sha256) == (
        fresh.resolve(), None, False, None)
    assert empty.reason is None
    (fresh / "a.py").write_text("x = 1\n")
    untracked = code_version(fresh)
    git(fresh, "add", "a.py")
    staged = code_version(fresh)
    assert untracked.dirty and staged.dirty
    assert None not in (untracked.diff_sha256, staged.diff_sha256)
    assert untracked.diff_sha256 != staged.diff_sha256


def test_directory_outside_git_gives_no_repo_and_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    version = code_version(plain)
    assert version.repo is None and version.commit is None and not version.dirty
    assert version.reason is not None and "not inside a git work tree" in version.reason


def test_missing_directory_gives_a_reason(tmp_path: Path) -> None:
    version = code_version(tmp_path / "absent")
    assert version.repo is None and version.reason is not None
    assert "not a directory" in version.reason


def test_missing_git_binary_gives_a_reason_instead_of_raising(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    version = code_version(repo)
    assert version == CodeVersion(None, reason="git executable not found on PATH")


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script fake git")
def test_failing_git_gives_its_error_as_the_reason(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "git"
    fake.write_text("#!/bin/sh\necho 'fatal: broken on purpose' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    version = code_version(repo)
    assert version.repo is None
    assert version.reason == "git rev-parse failed: fatal: broken on purpose"


def test_environment_describes_this_interpreter_and_its_packages() -> None:
    env = environment()
    assert env.python_version == platform.python_version()
    assert env.python_implementation == platform.python_implementation()
    assert env.sys_platform == sys.platform and env.machine == platform.machine()
    names = [pin.partition("==")[0] for pin in env.packages]
    assert {"loopline", "sqlalchemy"} <= set(names)
    assert list(env.packages) == sorted(env.packages) and len(names) == len(set(names))
    assert env.digest == hash_canonical(env.content())
    assert json.loads(json.dumps(env.as_dict()))["digest"] == env.digest


def test_environment_digest_is_stable_across_calls_and_rescans() -> None:
    first = environment()
    assert environment() is first  # cached per process
    clear_environment_cache()
    rescanned = environment()
    assert rescanned is not first and rescanned == first


def test_requirements_lock_has_a_header_and_one_pin_per_package() -> None:
    env = environment()
    text = requirements_lock(env)
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    pins = [line for line in lines if not line.startswith("#")]
    assert env.python_version in header[0] and env.platform in header[0]
    assert env.digest in header[1]
    assert pins == list(env.packages) and all(PIN.fullmatch(pin) for pin in pins)
    assert text.endswith("\n")


@pytest.mark.parametrize(("name", "normal"), [
    ("SQLAlchemy", "sqlalchemy"), ("typing_extensions", "typing-extensions"),
    ("zope.interface", "zope-interface"), ("a-_.b", "a-b")])
def test_distribution_names_are_normalised_as_pep_503_says(name: str, normal: str) -> None:
    assert normalise_name(name) == normal


def test_folders_added_to_sys_path_at_run_time_do_not_change_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopline.data.provenance import clear_environment_cache, environment

    clear_environment_cache()
    before = environment()
    vendored = tmp_path / "vendored" / "foo_vendored-1.0.dist-info"
    vendored.mkdir(parents=True)
    (vendored / "METADATA").write_text("Metadata-Version: 2.1\nName: foo-vendored\n"
                                       "Version: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "vendored"))  # as Ray does on import
    clear_environment_cache()
    try:
        after = environment()
    finally:
        clear_environment_cache()
    assert "foo-vendored==1.0" not in after.packages
    assert after.digest == before.digest
