"""The alert a playbook acts on, read from a ``monitoring.alert_fired`` event's payload.

Pure: no I/O. The payload is ``{alert_id, rule, scope, deployment, severity, playbook,
evaluation_id, value, threshold}``; ``scope`` is the rule's scope, as a mapping (``deployment``,
``model_version``, ``slice``, ``column``) or as its key text (``RuleScope.key``:
``deployment|model_version|slice|column`` with ``*`` for none). Every action of the alert
keeps this context (``as_record``) under ``result["alert"]``, so a worker in another process
acts on exactly what the event said, with the evaluation's window added, and ``fired_at``:
when the event occurred (the automation's age limit falls back on it when no alert row is
stored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.models import ModelURI
from loopline.core.names import validate_name

__all__ = ["AlertContext"]

_TEXT_FIELDS = ("alert_id", "rule", "deployment", "evaluation_id")


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidArgumentError(f"alert.{name}", f"{value!r} must be 1-256 characters")
    return value


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"alert.{name}", f"{value!r} must be a number")
    return float(value)


def _scope_version(scope: Any) -> str | None:
    """Return the model version URI a scope names, if any (mapping or key text)."""
    if isinstance(scope, Mapping):
        found = scope.get("model_version")
    elif isinstance(scope, str):
        parts = scope.split("|")
        found = parts[1] if len(parts) > 1 and parts[1] != "*" else None
    else:
        found = None
    return found if isinstance(found, str) else None


def _version_uri(value: Any) -> str | None:
    """Return ``value`` when it names one version (``models:/NAME/N``), else None.

    Anything else (an alias, text that is no URI) is not a version the actions can act on;
    it is dropped rather than the whole alert, whose other steps can still run.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = ModelURI.parse(value)
    except InvalidArgumentError:
        return None
    return value if parsed.version is not None else None


def _when(value: Any, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidArgumentError(f"alert.{name}", f"{value!r} is not an ISO time") from exc


@dataclass(frozen=True, slots=True)
class AlertContext:
    """What an action knows of its alert.

    ``model_version`` is the URI the rule's scope names (``models:/NAME/VERSION``) or None;
    ``window_start``/``window_end`` are the window of the evaluation that opened the alert,
    when it is stored; ``fired_at`` is when its ``alert_fired`` event occurred.
    """

    alert_id: str
    rule: str
    deployment: str
    evaluation_id: str
    playbook: str | None = None
    severity: str | None = None
    model_version: str | None = None
    value: float | None = None
    threshold: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    fired_at: datetime | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> AlertContext:
        """Read an ``alert_fired`` payload (or a stored ``as_record``).

        Raises:
            InvalidArgumentError: naming ``alert.<field>`` that is missing or malformed.
        """
        if not isinstance(payload, Mapping):
            raise InvalidArgumentError("alert", "the event payload is not a mapping")
        texts = {name: _text(payload, name) for name in _TEXT_FIELDS}
        validate_name(texts["deployment"], "alert.deployment")
        playbook = payload.get("playbook")
        if playbook is not None:
            validate_name(playbook, "alert.playbook")
        uri = _version_uri(payload.get("model_version")) or _version_uri(
            _scope_version(payload.get("scope")))
        severity = payload.get("severity")
        return cls(**texts, playbook=playbook,
                   severity=None if severity is None else str(severity), model_version=uri,
                   value=_number(payload, "value"), threshold=_number(payload, "threshold"),
                   window_start=_when(payload.get("window_start"), "window_start"),
                   window_end=_when(payload.get("window_end"), "window_end"),
                   fired_at=_when(payload.get("fired_at"), "fired_at"))

    def with_window(self, window: tuple[datetime, datetime] | None) -> AlertContext:
        """Return this context with the evaluation window set (unchanged when None)."""
        if window is None:
            return self
        return replace(self, window_start=window[0], window_end=window[1])

    def fired(self, at: datetime) -> AlertContext:
        """Return this context with ``fired_at`` set to ``at`` unless it says so already."""
        return self if self.fired_at is not None else replace(self, fired_at=at)

    def version(self) -> tuple[str, int] | None:
        """Return the (model, version) the scope names, or None."""
        if self.model_version is None:
            return None
        parsed = ModelURI.parse(self.model_version)
        return (parsed.name, parsed.version) if parsed.version is not None else None

    def as_record(self) -> dict[str, Any]:
        """Return the context as JSON-ready data (times as ISO text)."""
        return {"alert_id": self.alert_id, "rule": self.rule, "deployment": self.deployment,
                "evaluation_id": self.evaluation_id, "playbook": self.playbook,
                "severity": self.severity, "model_version": self.model_version,
                "value": self.value, "threshold": self.threshold,
                "window_start": None if self.window_start is None
                else self.window_start.isoformat(),
                "window_end": None if self.window_end is None else self.window_end.isoformat(),
                "fired_at": None if self.fired_at is None else self.fired_at.isoformat()}
