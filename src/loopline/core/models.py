"""Registered models, their versions, aliases and lifecycle statuses, and model URIs.

Pure: no I/O. A registered model is a name; each registration adds version 1, 2, 3, ... with
no gaps. An alias (``champion``, ``challenger``) points at one version and moves; ``latest``
is reserved and always means the highest version. A model is named by a URI:
``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (the ``models:/`` prefix may be left out).
Aliases follow the rule for names but are never all digits, so ``NAME@7`` cannot be read as
a version. In lineage a model is ``model:NAME`` and a version ``model_version:NAME@VERSION``.

Status transitions (anything else raises ``InvalidTransitionError``; moving to the status a
version already has changes nothing)::

    candidate   → staging | production | archived | quarantined
    staging     → candidate | production | archived | quarantined
    production  → staging | archived | quarantined
    archived    → candidate                  (restored, and reviewed again from the start)
    quarantined → candidate | archived       (released after review, or retired)

Quarantine is reachable from every live status, so a playbook can always pull a bad model;
nothing leaves quarantine or the archive straight into service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from loopline.core.canonical import canonical_json, is_digest, json_safe
from loopline.core.errors import InvalidArgumentError, InvalidTransitionError
from loopline.core.lineage import NodeKind, NodeRef, validate_ref
from loopline.core.names import validate_name

MODELS_SCHEME = "models:/"
LATEST = "latest"
MAX_VERSION = 2_147_483_647  # a 32-bit INTEGER column on every backend
URI_FORMS = "expected models:/NAME/VERSION or models:/NAME@ALIAS"
_VERSION_TEXT = re.compile(r"^[1-9][0-9]{0,18}$")  # larger: refused by validate_version
_FLAVOR = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_DATASET_REF = re.compile(r"^(?P<name>[^@]+)@(?P<version>[1-9][0-9]{0,9})$")


class ModelStatus(StrEnum):
    """Where a model version stands in its lifecycle."""

    CANDIDATE = "candidate"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    QUARANTINED = "quarantined"


def parse_status(value: str, field: str = "status") -> ModelStatus:
    """Return ``value`` as a status.

    Raises:
        InvalidArgumentError: naming ``field`` and the statuses there are otherwise.
    """
    try:
        return ModelStatus(value)
    except ValueError as exc:
        choices = ", ".join(s.value for s in ModelStatus)
        raise InvalidArgumentError(field, f"{value!r} is not a status ({choices})") from exc


_S = ModelStatus
TRANSITIONS: Mapping[ModelStatus, frozenset[ModelStatus]] = {
    _S.CANDIDATE: frozenset({_S.STAGING, _S.PRODUCTION, _S.ARCHIVED, _S.QUARANTINED}),
    _S.STAGING: frozenset({_S.CANDIDATE, _S.PRODUCTION, _S.ARCHIVED, _S.QUARANTINED}),
    _S.PRODUCTION: frozenset({_S.STAGING, _S.ARCHIVED, _S.QUARANTINED}),
    _S.ARCHIVED: frozenset({_S.CANDIDATE}),
    _S.QUARANTINED: frozenset({_S.CANDIDATE, _S.ARCHIVED}),
}


def can_transition(source: ModelStatus, target: ModelStatus) -> bool:
    """Tell whether a version may move from ``source`` to ``target`` (same status: yes)."""
    return source == target or target in TRANSITIONS[source]


def check_transition(uri: str, source: ModelStatus, target: ModelStatus) -> None:
    """Return when the move is allowed.

    Raises:
        InvalidTransitionError: naming the version ``uri`` and both statuses otherwise.
    """
    if not can_transition(source, target):
        raise InvalidTransitionError("model version", uri, str(source), str(target))


def version_uri(name: str, version: int) -> str:
    """Return ``models:/NAME/VERSION``."""
    return f"{MODELS_SCHEME}{name}/{version}"


def alias_uri(name: str, alias: str) -> str:
    """Return ``models:/NAME@ALIAS``."""
    return f"{MODELS_SCHEME}{name}@{alias}"


def model_node(name: str) -> NodeRef:
    """Return a registered model's lineage node, ``model:NAME``."""
    return NodeRef(NodeKind.MODEL, name)


def model_version_node(name: str, version: int) -> NodeRef:
    """Return a model version's lineage node, ``model_version:NAME@VERSION``."""
    return NodeRef(NodeKind.MODEL_VERSION, f"{name}@{version}")


def validate_alias(value: str, field: str = "alias") -> str:
    """Return ``value`` when it is a valid alias: a valid name that is not all digits.

    Raises:
        InvalidArgumentError: naming ``field`` otherwise.
    """
    validate_name(value, field)
    if value.isdigit():
        raise InvalidArgumentError(field, f"{value!r} is all digits, which would read as a "
                                          "version number; use a name such as 'champion'")
    return value


def validate_version(value: int, field: str = "version") -> int:
    """Return ``value`` when it is a version number (1 to ``MAX_VERSION``).

    Raises:
        InvalidArgumentError: naming ``field`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise InvalidArgumentError(field, f"{value!r} must be a whole number from 1 to "
                                          f"{MAX_VERSION}")
    return value


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A named model; ``latest_version`` is its highest version (0 before the first)."""

    name: str
    created_at: datetime
    created_by: str
    description: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    latest_version: int = 0


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version: its artifact, how to load it, and what it was made from.

    ``datasets`` are dataset snapshot refs (``NAME@VERSION``); ``extra`` holds later
    additions (the holdout sample digest, say) without a schema change.
    """

    name: str
    version: int
    artifact_digest: str
    flavor: str
    status: ModelStatus
    created_at: datetime
    created_by: str
    signature: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    datasets: tuple[str, ...] = ()
    code_version: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The version's URI, ``models:/NAME/VERSION``."""
        return version_uri(self.name, self.version)


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """A mutable name for one version of a model."""

    name: str
    alias: str
    version: int
    updated_at: datetime
    updated_by: str

    @property
    def uri(self) -> str:
        """The alias's URI, ``models:/NAME@ALIAS``."""
        return alias_uri(self.name, self.alias)


@dataclass(frozen=True, slots=True)
class TrustDecision:
    """An audited decision that a version's artifact may be loaded with code execution."""

    name: str
    version: int
    decided_by: str
    decided_at: datetime
    reason: str


def validate_json_mapping(value: Any, field: str, optional: bool = False) -> None:
    """Return when ``value`` is a JSON-serialisable mapping with string keys.

    None passes when ``optional``. Non-finite floats pass: they are stored by name
    (``json_safe``).

    Raises:
        InvalidArgumentError: naming ``field`` otherwise.
    """
    if value is None and optional:
        return
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgumentError(field, "must be a mapping with string keys")
    try:
        canonical_json(json_safe(dict(value)))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(field, f"must be JSON-serialisable: {exc}") from exc


def _dataset_refs(values: tuple[str, ...]) -> None:
    if not isinstance(values, tuple):
        raise InvalidArgumentError("datasets", "must be a tuple of snapshot refs NAME@VERSION")
    for value in values:
        match = _DATASET_REF.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidArgumentError("datasets", f"{value!r} must be a dataset snapshot ref "
                                                   "NAME@VERSION, e.g. 'iris@3'")
        validate_name(match["name"], "datasets")


@dataclass(frozen=True, slots=True)
class NewModelVersion:
    """What a registration records; the store gives it its number and ``candidate`` status.

    Raises:
        InvalidArgumentError: naming the field when the model name, the artifact digest
            (64 lowercase hex), the flavor, a dataset ref, the run id or a mapping is invalid.
    """

    name: str
    artifact_digest: str
    flavor: str
    signature: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    datasets: tuple[str, ...] = ()
    code_version: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name, "model")
        if not isinstance(self.artifact_digest, str) or not is_digest(self.artifact_digest):
            raise InvalidArgumentError("artifact_digest", f"{self.artifact_digest!r} must be "
                                                          "a SHA-256 digest (64 lowercase hex)")
        if not isinstance(self.flavor, str) or not _FLAVOR.fullmatch(self.flavor):
            raise InvalidArgumentError("flavor", f"{self.flavor!r} must be 1-64 lowercase "
                                                 "letters, digits, '.', '_' or '-'")
        if self.run_id is not None:
            validate_ref(self.run_id, "run_id")
        if self.description is not None and not isinstance(self.description, str):
            raise InvalidArgumentError("description", "must be text")
        _dataset_refs(self.datasets)
        for name in ("metrics", "params", "tags", "extra"):
            validate_json_mapping(getattr(self, name), name)
        for name in ("signature", "code_version", "environment"):
            validate_json_mapping(getattr(self, name), name, optional=True)


@dataclass(frozen=True, slots=True)
class ModelURI:
    """A reference to one model version: by number, or by alias (``latest`` included).

    Raises:
        InvalidArgumentError: naming ``model`` when the name, the version or the alias is
            invalid, or when not exactly one of version and alias is given.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.name, "model")
        if (self.version is None) == (self.alias is None):
            raise InvalidArgumentError("model", f"name a version or an alias of {self.name!r}"
                                                f", not both nor neither; {URI_FORMS}")
        if self.version is not None:
            validate_version(self.version, "model")
        if self.alias is not None:
            validate_alias(self.alias, "model")

    @classmethod
    def parse(cls, text: str) -> ModelURI:
        """Parse ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (the prefix is optional).

        Raises:
            InvalidArgumentError: naming ``model``, the text, the problem and the forms
                expected.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError("model", f"{text!r} is not text; {URI_FORMS}")
        rest = text.removeprefix(MODELS_SCHEME)
        if ":" in rest:  # names hold no ':', so this is another scheme or a typo of ours
            raise InvalidArgumentError("model", f"{text!r}: only the {MODELS_SCHEME!r} scheme "
                                                f"names a model; {URI_FORMS}")
        name, at, alias = rest.partition("@")
        version: int | None = None
        if not at:
            name, slash, number = rest.rpartition("/")
            if not slash or not _VERSION_TEXT.fullmatch(number):
                raise InvalidArgumentError(
                    "model", f"{text!r} names neither a version (a whole number from 1, "
                             f"without leading zeros) nor an alias; {URI_FORMS}")
            version = int(number)
        try:
            return cls(name, version, None if version is not None else alias)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError("model", f"{text!r}: {exc.problem}; {URI_FORMS}"
                                       ) from exc

    @classmethod
    def coerce(cls, value: str | ModelURI) -> ModelURI:
        """Return ``value`` as a URI, parsing text (see ``parse``)."""
        return value if isinstance(value, ModelURI) else cls.parse(value)

    @property
    def is_latest(self) -> bool:
        """Whether the URI means the model's highest version."""
        return self.alias == LATEST

    def __str__(self) -> str:
        if self.version is not None:
            return version_uri(self.name, self.version)
        return alias_uri(self.name, str(self.alias))
