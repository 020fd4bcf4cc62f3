"""Settings precedence (flags > LOOPLINE_* > loopline.toml > defaults) and finding workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.app import Workspace, find_workspace, load_settings
from loopline.app.settings import resolve_paths
from loopline.core.errors import ConfigurationError, NotFoundError


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "loopline.toml"
    path.write_text(text)
    return path


def test_flags_beat_environment_beat_file_beat_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _toml(tmp_path, 'user = "from-file"\nartifact_root = "from-file"\n'
                             'ray_address = "from-file"\n')
    monkeypatch.setenv("LOOPLINE_USER", "from-env")
    monkeypatch.setenv("LOOPLINE_ARTIFACT_ROOT", "from-env")
    settings = load_settings(config, {"user": "from-flag", "artifact_root": None})
    assert settings.user == "from-flag"
    assert settings.artifact_root == str(Path.cwd() / "from-env")
    assert settings.ray_address == "from-file"
    assert settings.db_url is None


def test_relative_paths_in_the_file_are_taken_from_its_folder(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'artifact_root = "blobs"\ndb_url = "sqlite:///meta.db"\n'
                             'encryption_key_file = "keys.txt"\n')
    settings = resolve_paths(load_settings(config), tmp_path)
    assert settings.artifact_root == str(tmp_path.resolve() / "blobs")
    assert settings.db_url == f"sqlite:///{tmp_path.resolve() / 'meta.db'}"
    assert settings.encryption_key_file == tmp_path.resolve() / "keys.txt"


def test_remote_locations_are_kept_as_given(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'artifact_root = "s3://bucket/loop"\n')
    assert resolve_paths(load_settings(config), tmp_path).artifact_root == "s3://bucket/loop"


@pytest.mark.parametrize(("text", "needle"), [
    ("colour = 'blue'\n", "colour"),
    ("ray_address = [1, 2]\n", "ray_address"),
    ("user = \n", "cannot parse"),
    ("webhook_secret = 'short'\n", "webhook_secret.*16 characters"),
])
def test_bad_settings_files_are_refused_naming_the_problem(
        tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_settings(_toml(tmp_path, text))


def test_workspace_is_found_upwards_like_git(tmp_path: Path) -> None:
    Workspace.init(tmp_path).close()
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert find_workspace(deep) == tmp_path.resolve()
    with Workspace.open(deep) as workspace:
        assert workspace.root == tmp_path.resolve()
        assert workspace.actor == "tester"


def test_missing_workspace_names_loopline_init(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="loopline init"):
        find_workspace(tmp_path)


def test_init_is_idempotent_and_audits_only_the_first_time(tmp_path: Path) -> None:
    with Workspace.init(tmp_path) as first:
        head = first.store.audit.head()
        assert [e.action for e in first.store.audit.entries()] == ["db.upgrade",
                                                                   "workspace.init"]
    with Workspace.init(tmp_path) as second:
        assert second.store.audit.head() == head
    assert (tmp_path / ".loopline" / "loopline.toml").is_file()
    assert (tmp_path / ".loopline" / "loopline.db").is_file()
    assert (tmp_path / ".loopline" / "artifacts").is_dir()


def test_init_refuses_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    with pytest.raises(ConfigurationError, match="not a folder"):
        Workspace.init(target)


def test_environment_moves_the_workspace_to_another_database_and_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("LOOPLINE_DB_URL", f"sqlite:///{elsewhere / 'team.db'}")
    monkeypatch.setenv("LOOPLINE_ARTIFACT_ROOT", "memory://loopline-env-test")
    with Workspace.init(tmp_path / "ws") as workspace:
        info = workspace.artifacts.put_bytes(b"moved")
        assert workspace.artifacts.get_bytes(info.digest) == b"moved"
    assert (elsewhere / "team.db").is_file()
    assert not (tmp_path / "ws" / ".loopline" / "loopline.db").exists()


def test_unsupported_database_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        Workspace.init(tmp_path, overrides={"db_url": "mysql://root@localhost/x"})
    with pytest.raises(ConfigurationError, match="psycopg"):
        Workspace.init(tmp_path, overrides={"db_url": "postgresql://u@localhost/x"})


def test_relative_flags_and_environment_mean_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOPLINE_ENCRYPTION_KEY_FILE", "keys.txt")
    settings = resolve_paths(load_settings(None, {"artifact_root": "mystore"}),
                             tmp_path / "ws" / ".loopline")
    assert settings.artifact_root == str(tmp_path / "mystore")
    assert settings.encryption_key_file == tmp_path / "keys.txt"


def test_init_writes_the_given_locations_into_the_settings_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Workspace.init(tmp_path / "ws", overrides={"artifact_root": "shared-blobs"}).close()
    with Workspace.open(tmp_path / "ws") as workspace:  # no flag this time
        assert workspace.settings.artifact_root == str(tmp_path / "shared-blobs")
    with pytest.raises(ConfigurationError, match="password"):
        Workspace.init(tmp_path / "other",
                       overrides={"db_url": "postgresql+psycopg://u:secret@db/x"})


def test_an_unusable_user_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="user"):
        Workspace.init(tmp_path, overrides={"user": "x" * 300})


def test_fault_injection_is_read_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_FAULTS", "train=2")
    with pytest.raises(ConfigurationError, match="faults"):
        Workspace.init(tmp_path)
    assert not (tmp_path / ".loopline").exists(), "bad settings must create nothing"
    monkeypatch.setenv("LOOPLINE_FAULTS", "train=0.25")
    with Workspace.init(tmp_path) as workspace:
        assert workspace.pipelines.options.faults is not None
