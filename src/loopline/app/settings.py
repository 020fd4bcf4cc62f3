"""Settings, read once: CLI flags, then ``LOOPLINE_*`` variables, ``loopline.toml``, defaults.

Relative paths in ``loopline.toml`` are taken from the folder that holds it (``.loopline/``).
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loopline.core.errors import ConfigurationError, InvalidArgumentError
from loopline.pipelines.faults import parse_faults

WORKSPACE_DIRNAME = ".loopline"
MIN_WEBHOOK_SECRET = 16
CONFIG_FILENAME = "loopline.toml"
DB_FILENAME = "loopline.db"
ARTIFACTS_DIRNAME = "artifacts"


class Settings(BaseSettings):
    """Everything loopline can be told; each field is also ``LOOPLINE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="forbid",
                                      validate_default=True)

    db_url: str | None = None
    artifact_root: str | None = None
    user: str | None = None
    encryption_key: SecretStr | None = None
    encryption_key_file: Path | None = None
    webhook_secret: SecretStr | None = None  # signs playbook notify webhooks (HMAC-SHA256)
    ray_address: str | None = None
    executor: Literal["thread", "process", "ray"] = "thread"  # where pipeline tasks run
    max_workers: int = Field(default=4, ge=1, le=256)  # tasks of one run at a time
    faults: str | None = None  # "task=p,...": fault injection for tests and evaluation

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, value: str | None) -> str | None:
        if value:
            try:
                parse_faults(value)
            except InvalidArgumentError as exc:
                raise ValueError(exc.problem) from exc
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_WEBHOOK_SECRET:
            raise ValueError(f"must be at least {MIN_WEBHOOK_SECRET} characters")
        return value

    @field_validator("user")
    @classmethod
    def _user_is_an_actor(cls, value: str | None) -> str | None:
        if value is not None and not (0 < len(value) <= 256 and value.isprintable()):
            raise ValueError("must be 1-256 printable characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read flags, then the environment, then the workspace's TOML file (no dotenv)."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read settings with ``overrides`` (CLI flags) first and ``config_file`` last.

    Raises:
        ConfigurationError: naming the field and the problem when a value is invalid,
            unknown, or the TOML file cannot be parsed.
    """
    given = {key: absolute(key, value, Path.cwd())
             for key, value in (overrides or {}).items() if value is not None}
    for key in PATH_FIELDS:  # relative paths from the environment mean the current folder too
        from_env = os.environ.get(f"LOOPLINE_{key.upper()}")
        if key not in given and from_env:
            given[key] = absolute(key, from_env, Path.cwd())

    class WorkspaceSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    try:
        settings: Settings = WorkspaceSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings ({config_file or 'environment'}): "
                                 f"{problems}") from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigurationError(f"cannot parse {config_file}: {exc}") from exc
    return settings


PATH_FIELDS = ("db_url", "artifact_root", "encryption_key_file")


def absolute(key: str, value: Any, base: Path) -> Any:
    """Make a local path setting absolute against ``base``; other values pass through.

    Flags and environment variables are taken from the current folder, ``loopline.toml``
    values from the folder that holds it.
    """
    if key == "db_url" and isinstance(value, str) and value.startswith("sqlite:///"):
        relative = value.removeprefix("sqlite:///")
        if relative and relative != ":memory:" and not Path(relative).expanduser().is_absolute():
            return f"sqlite:///{(base / relative).resolve()}"
        return value
    if key == "artifact_root" and isinstance(value, str) and "://" not in value:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    if key == "encryption_key_file" and isinstance(value, str | Path):
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    return value


def resolve_paths(settings: Settings, workspace_dir: Path) -> Settings:
    """Fill defaults and make relative paths absolute against ``workspace_dir`` (``.loopline``)."""
    db_url = absolute("db_url", settings.db_url or f"sqlite:///{workspace_dir / DB_FILENAME}",
                      workspace_dir)
    root = absolute("artifact_root",
                    settings.artifact_root or str(workspace_dir / ARTIFACTS_DIRNAME),
                    workspace_dir)
    key_file = settings.encryption_key_file
    if key_file is not None:
        key_file = absolute("encryption_key_file", key_file, workspace_dir)
    return settings.model_copy(update={"db_url": db_url, "artifact_root": root,
                                       "encryption_key_file": key_file})


def actor_of(settings: Settings) -> str:
    """Return who acts: ``LOOPLINE_USER`` (or the flag), else the operating-system user."""
    if settings.user:
        return settings.user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def config_text(given: dict[str, Any]) -> str:
    """Return the text of a new ``loopline.toml``: the template and the locations given.

    Raises:
        ConfigurationError: when a given database URL embeds a password (it would be stored
            in plain text; use LOOPLINE_DB_URL or a PostgreSQL password file instead).
    """
    lines = [CONFIG_TEMPLATE]
    for key in ("db_url", "artifact_root"):
        value = given.get(key)
        if value is None:
            continue
        if key == "db_url" and _has_password(str(value)):
            raise ConfigurationError(
                "refusing to write a database password into loopline.toml; set "
                "LOOPLINE_DB_URL in the environment or use a PostgreSQL password file")
        lines.append(f"{key} = {json.dumps(str(value))}\n")
    return "".join(lines)


def _has_password(url: str) -> bool:
    authority = url.partition("://")[2].partition("/")[0]
    return "@" in authority and ":" in authority.rpartition("@")[0]


CONFIG_TEMPLATE = """\
# loopline workspace settings. LOOPLINE_* environment variables and CLI flags override these.
# Relative paths are taken from this folder.
#
# db_url = "postgresql+psycopg://user@host:5432/loopline"   # default: SQLite in loopline.db
# artifact_root = "s3://bucket/loopline"                    # default: ./artifacts
# encryption_key_file = "keys.txt"                          # enables AES-256-GCM at rest
# user = "alice"                                            # default: the OS user
"""
