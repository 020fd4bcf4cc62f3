"""Reads of the model registry: models, versions, aliases, trust, and URI resolution.

The query side of ``store/model_registry.py``. ``resolve`` turns any model URI
(``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME@latest``) into the version
it names, or raises ``NotFoundError`` saying what does exist.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.errors import NotFoundError
from loopline.core.models import (
    ModelAlias,
    ModelStatus,
    ModelURI,
    ModelVersion,
    RegisteredModel,
    TrustDecision,
    alias_uri,
    parse_status,
    version_uri,
)
from loopline.store.errors import translated
from loopline.store.models import (
    MODEL_ALIASES,
    MODEL_TRUST_DECISIONS,
    MODEL_VERSIONS,
    REGISTERED_MODELS,
)

LIST_MODELS = "list models with `loopline models list`"


def to_model(row: RowMapping) -> RegisteredModel:
    """Return the entity of a ``registered_models`` row."""
    return RegisteredModel(name=row["name"], created_at=row["created_at"],
                           created_by=row["created_by"], description=row["description"],
                           tags=row["tags"] or {}, latest_version=row["latest_version"])


def to_version(row: RowMapping) -> ModelVersion:
    """Return the entity of a ``model_versions`` row."""
    return ModelVersion(
        name=row["name"], version=row["version"], artifact_digest=row["artifact_digest"],
        flavor=row["flavor"], status=ModelStatus(row["status"]), created_at=row["created_at"],
        created_by=row["created_by"], signature=row["signature"], metrics=row["metrics"] or {},
        params=row["params"] or {}, tags=row["tags"] or {}, run_id=row["run_id"],
        datasets=tuple(row["datasets"] or ()), code_version=row["code_version"],
        environment=row["environment"], description=row["description"],
        extra=row["extra"] or {})


def to_alias(row: RowMapping) -> ModelAlias:
    """Return the entity of a ``model_aliases`` row."""
    return ModelAlias(name=row["name"], alias=row["alias"], version=row["version"],
                      updated_at=row["updated_at"], updated_by=row["updated_by"])


def to_trust(row: RowMapping) -> TrustDecision:
    """Return the entity of a ``model_trust_decisions`` row."""
    return TrustDecision(name=row["name"], version=row["version"],
                         decided_by=row["decided_by"], decided_at=row["decided_at"],
                         reason=row["reason"])


def missing_model(name: str) -> NotFoundError:
    """Return the error for a model that is not registered."""
    return NotFoundError("model", name, f"no model is registered under that name; "
                                        f"{LIST_MODELS}")


def latest_number(connection: Connection, name: str) -> int | None:
    """Return the model's highest version number (0 before any), or None when it is absent."""
    value = connection.execute(sa.select(REGISTERED_MODELS.c.latest_version)
                               .where(REGISTERED_MODELS.c.name == name)).scalar()
    return None if value is None else int(value)


def missing_version(connection: Connection, name: str, version: int) -> NotFoundError:
    """Return the error for a version that does not exist, saying which ones do."""
    latest = latest_number(connection, name)
    if latest is None:
        hint = f"no model {name!r} is registered; {LIST_MODELS}"
    elif latest == 0:
        hint = f"model {name!r} has no versions yet"
    else:
        hint = f"model {name!r} has versions 1 to {latest}"
    return NotFoundError("model version", version_uri(name, version), hint)


def version_row(connection: Connection, name: str, version: int,
                lock: bool = False) -> RowMapping:
    """Return the ``model_versions`` row, locked for this transaction when ``lock``.

    Raises:
        NotFoundError: naming ``models:/NAME/VERSION`` and the versions that exist.
    """
    query = sa.select(MODEL_VERSIONS).where(MODEL_VERSIONS.c.name == name,
                                            MODEL_VERSIONS.c.version == version)
    row = connection.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise missing_version(connection, name, version)
    return row


def _alias_target(connection: Connection, uri: ModelURI) -> int:
    """Return the version number an alias URI points at (``latest``: the highest)."""
    alias = str(uri.alias)
    if uri.is_latest:
        latest = latest_number(connection, uri.name)
        if latest is None:
            raise missing_model(uri.name)
        if latest == 0:
            raise NotFoundError("model version", alias_uri(uri.name, alias),
                                f"model {uri.name!r} has no versions yet")
        return latest
    number = connection.execute(
        sa.select(MODEL_ALIASES.c.version).where(MODEL_ALIASES.c.name == uri.name,
                                                 MODEL_ALIASES.c.alias == alias)).scalar()
    if number is not None:
        return int(number)
    if latest_number(connection, uri.name) is None:
        raise missing_model(uri.name)
    known = connection.execute(sa.select(MODEL_ALIASES.c.alias)
                               .where(MODEL_ALIASES.c.name == uri.name)
                               .order_by(MODEL_ALIASES.c.alias)).scalars().all()
    hint = (f"aliases of {uri.name!r}: {', '.join(known)}" if known
            else f"model {uri.name!r} has no aliases")
    raise NotFoundError("model alias", alias_uri(uri.name, alias),
                        f"{hint}; '@latest' names the highest version")


class ModelQueries:
    """Reads of registered models, versions, aliases and trust decisions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def model(self, name: str) -> RegisteredModel:
        """Return the registered model ``name``.

        Raises:
            NotFoundError: when there is none.
        """
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(REGISTERED_MODELS).where(
                REGISTERED_MODELS.c.name == name)).mappings().first()
        if row is None:
            raise missing_model(name)
        return to_model(row)

    @translated
    def models(self) -> list[RegisteredModel]:
        """List every registered model, by name."""
        with self._engine.connect() as connection:
            rows = connection.execute(sa.select(REGISTERED_MODELS)
                                      .order_by(REGISTERED_MODELS.c.name)).mappings().all()
        return [to_model(row) for row in rows]

    @translated
    def version(self, name: str, version: int) -> ModelVersion:
        """Return version ``version`` of model ``name``.

        Raises:
            NotFoundError: naming ``models:/NAME/VERSION`` and the versions that exist.
        """
        with self._engine.connect() as connection:
            return to_version(version_row(connection, name, version))

    @translated
    def versions(self, name: str, status: ModelStatus | None = None) -> list[ModelVersion]:
        """List the versions of model ``name`` (with ``status`` only, when given), oldest first.

        Raises:
            NotFoundError: when no model ``name`` is registered.
        """
        query = sa.select(MODEL_VERSIONS).where(MODEL_VERSIONS.c.name == name)
        if status is not None:
            query = query.where(MODEL_VERSIONS.c.status == str(parse_status(status)))
        with self._engine.connect() as connection:
            if latest_number(connection, name) is None:
                raise missing_model(name)
            rows = connection.execute(query.order_by(MODEL_VERSIONS.c.version)).mappings()
            return [to_version(row) for row in rows]

    @translated
    def aliases(self, name: str, version: int | None = None) -> list[ModelAlias]:
        """List the aliases of model ``name`` (of one version, when given), by alias.

        Raises:
            NotFoundError: when no model ``name`` is registered.
        """
        query = sa.select(MODEL_ALIASES).where(MODEL_ALIASES.c.name == name)
        if version is not None:
            query = query.where(MODEL_ALIASES.c.version == version)
        with self._engine.connect() as connection:
            if latest_number(connection, name) is None:
                raise missing_model(name)
            rows = connection.execute(query.order_by(MODEL_ALIASES.c.alias)).mappings()
            return [to_alias(row) for row in rows]

    @translated
    def resolve(self, uri: str | ModelURI) -> ModelVersion:
        """Return the version a URI names: by number, by alias, or ``@latest`` (the highest).

        Raises:
            InvalidArgumentError: naming ``model`` when the text is not a model URI.
            NotFoundError: naming the model, version or alias that does not exist, and what
                does.
        """
        parsed = ModelURI.coerce(uri)
        with self._engine.connect() as connection:
            number = parsed.version if parsed.version is not None else \
                _alias_target(connection, parsed)
            return to_version(version_row(connection, parsed.name, number))

    @translated
    def trust(self, name: str, version: int) -> TrustDecision | None:
        """Return the trust decision recorded for the version, if any."""
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(MODEL_TRUST_DECISIONS).where(
                *_trust_key(name, version))).mappings().first()
        return to_trust(row) if row is not None else None

    def is_trusted(self, name: str, version: int) -> bool:
        """Tell whether an audited trust decision lets the version load code-running flavors."""
        return self.trust(name, version) is not None


def _trust_key(name: str, version: int) -> tuple[Any, ...]:
    return (MODEL_TRUST_DECISIONS.c.name == name, MODEL_TRUST_DECISIONS.c.version == version)
