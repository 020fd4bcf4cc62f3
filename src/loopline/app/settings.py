"""Settings, read once: CLI flags, then ``LOOPLINE_*`` variables, ``loopline.toml``, defaults.

Relative paths in ``loopline.toml`` are taken from the folder that holds it (``.loopline/``).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loopline.core.errors import ConfigurationError

WORKSPACE_DIRNAME = ".loopline"
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
    ray_address: str | None = None

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
    given = {key: value for key, value in (overrides or {}).items() if value is not None}

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


def resolve_paths(settings: Settings, workspace_dir: Path) -> Settings:
    """Fill defaults and make relative paths absolute against ``workspace_dir`` (``.loopline``)."""
    db_url = settings.db_url or f"sqlite:///{workspace_dir / DB_FILENAME}"
    if db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:////"):
        relative = db_url.removeprefix("sqlite:///")
        if relative and relative != ":memory:" and not Path(relative).is_absolute():
            db_url = f"sqlite:///{(workspace_dir / relative).resolve()}"
    root = settings.artifact_root or str(workspace_dir / ARTIFACTS_DIRNAME)
    if "://" not in root and not Path(root).expanduser().is_absolute():
        root = str((workspace_dir / root).resolve())
    key_file = settings.encryption_key_file
    if key_file is not None and not key_file.expanduser().is_absolute():
        key_file = (workspace_dir / key_file).resolve()
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


CONFIG_TEMPLATE = """\
# loopline workspace settings. LOOPLINE_* environment variables and CLI flags override these.
# Relative paths are taken from this folder.
#
# db_url = "postgresql+psycopg://user@host:5432/loopline"   # default: SQLite in loopline.db
# artifact_root = "s3://bucket/loopline"                    # default: ./artifacts
# encryption_key_file = "keys.txt"                          # enables AES-256-GCM at rest
# user = "alice"                                            # default: the OS user
"""
