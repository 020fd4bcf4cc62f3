"""Schedules (cron, time zone aware, with a catch-up policy) and event triggers of a pipeline.

Pure: no I/O (the time zone database aside). The scheduler in ``loopline.loop.scheduler``
asks a ``Schedule`` which slots are due and a ``Trigger`` whether an event concerns it and
with which parameters; both are checked when made, so a typo fails at decoration time.

Catch-up policies, for the slots that passed while nobody fired them:

- ``"all"``: every slot after the last one fired, at most ``max_catchup`` (the newest ones;
  older missed slots are skipped for good);
- ``"latest"`` (the default): only the newest missed slot;
- ``"none"``: only a slot at most ``grace`` seconds old; slots missed while the scheduler
  was down longer than that are skipped.

A schedule that never fired counts its slots from ``first_seen`` (inclusive): nothing is
backfilled from before. Cron fields are read as wall-clock time in the schedule's time zone:
a time skipped by a daylight-saving jump fires at the first instant after the jump, and a
time repeated when clocks go back fires once (at its first occurrence) unless the hour
field starts with ``*`` (``*/30 * * * *`` keeps every half hour of real time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from loopline.core.canonical import canonical_json, hash_canonical
from loopline.core.errors import InvalidArgumentError
from loopline.core.events import Event, EventType
from loopline.core.names import validate_name

CatchUp = Literal["latest", "all", "none"]
MAX_CATCHUP = 10_000
CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}
# Any dotted lower-case name: loopline's own types (``EventType``) and any other area's.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
EVENT_ALIASES = {"alert.fired": str(EventType.ALERT_FIRED)}
PATH_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _aware(value: datetime, field_name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgumentError(field_name, f"must be a time zone aware datetime, not "
                                               f"{value!r}")
    return value.astimezone(UTC)


def _json_mapping(value: object, field_name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgumentError(field_name, "must be a mapping with string keys")
    try:
        canonical_json(dict(value))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(field_name, f"must hold JSON values: {exc}") from exc
    return dict(value)


def _expression(cron: object) -> str:
    """Return ``cron`` as five cron fields, aliases expanded, or raise naming the field."""
    text = CRON_ALIASES.get(cron.strip(), cron.strip()) if isinstance(cron, str) else ""
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise InvalidArgumentError("schedule.cron", f"{cron!r} must be five cron fields "
                                   "(minute hour day month weekday) or one of "
                                   f"{', '.join(sorted(CRON_ALIASES))}")
    return text


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule of a pipeline: when it runs, with which parameters, how it catches up.

    Raises:
        InvalidArgumentError: naming ``schedule.<field>`` when a field is wrong.
    """

    cron: str
    timezone: str = "UTC"
    catchup: CatchUp = "latest"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    name: str = "default"
    max_catchup: int = 100
    grace: float = 60.0  # seconds a slot stays firable under catchup="none"

    def __post_init__(self) -> None:
        _expression(self.cron)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise InvalidArgumentError("schedule.timezone", f"{self.timezone!r} is not a known "
                                       "IANA time zone (like 'Europe/Paris')") from exc
        if self.catchup not in get_args(CatchUp):
            raise InvalidArgumentError("schedule.catchup", f"{self.catchup!r} must be one of "
                                       f"{', '.join(get_args(CatchUp))}")
        object.__setattr__(self, "parameters",
                           _json_mapping(self.parameters, "schedule.parameters"))
        validate_name(self.name, "schedule.name")
        if isinstance(self.max_catchup, bool) or not isinstance(self.max_catchup, int) or not (
                1 <= self.max_catchup <= MAX_CATCHUP):
            raise InvalidArgumentError("schedule.max_catchup",
                                       f"must be an integer from 1 to {MAX_CATCHUP}")
        if isinstance(self.grace, bool) or not isinstance(self.grace, int | float) or not (
                0 < self.grace <= 86_400):
            raise InvalidArgumentError("schedule.grace", "must be 0-86400 seconds (not 0)")

    def __hash__(self) -> int:
        return hash(hash_canonical([self.cron, self.timezone, self.catchup,
                                    dict(self.parameters), self.name, self.max_catchup,
                                    self.grace]))

    def due_slots(self, last: datetime | None, now: datetime,
                  first_seen: datetime) -> list[datetime]:
        """Return the slots to fire now, oldest first, as UTC datetimes, by the policy.

        The window is ``(last, now]`` (``[first_seen, now]`` when the schedule never fired);
        ``"all"`` returns its newest ``max_catchup`` slots, ``"latest"`` its newest slot,
        ``"none"`` its newest slot when that is no older than ``grace`` seconds.

        Raises:
            InvalidArgumentError: when a datetime is naive.
        """
        now = _aware(now, "now")
        after = _aware(last, "last") if last is not None else \
            _aware(first_seen, "first_seen") - timedelta(microseconds=1)
        limit = self.max_catchup if self.catchup == "all" else 1
        if self.catchup == "none":
            after = max(after, now - timedelta(seconds=self.grace, microseconds=1))
        return self._slots_between(after, now, limit)

    def next_slot(self, after: datetime) -> datetime:
        """Return the first slot strictly after ``after``, in UTC.

        Raises:
            InvalidArgumentError: when ``after`` is naive.
        """
        zone, expression = ZoneInfo(self.timezone), _expression(self.cron)
        cursor = croniter(expression, _aware(after, "after").astimezone(zone))
        while True:
            slot = cursor.get_next(datetime).astimezone(UTC)
            if not _repeated(slot, zone, expression):
                return slot

    def _slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Return the newest ``limit`` slots in ``(after, until]``, oldest first."""
        zone, expression = ZoneInfo(self.timezone), _expression(self.cron)
        # Walk back from just past ``until``: croniter's get_prev excludes its start.
        cursor = croniter(expression, (until + timedelta(seconds=1)).astimezone(zone))
        found: list[datetime] = []
        while len(found) < limit:
            slot = cursor.get_prev(datetime).astimezone(UTC)
            if slot <= after:
                break
            if slot <= until and not _repeated(slot, zone, expression):
                found.append(slot)
        return found[::-1]


def _repeated(slot: datetime, zone: ZoneInfo, expression: str) -> bool:
    """Tell whether ``slot`` is the second pass of a wall-clock time repeated by DST.

    Only for a fixed hour: a cron whose hour field starts with ``*`` keeps both passes.
    """
    if expression.split()[1].startswith("*"):
        return False
    local = slot.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _check_path(path: object, field_name: str) -> str:
    if not isinstance(path, str) or not PATH_PATTERN.fullmatch(path):
        raise InvalidArgumentError(field_name, f"{path!r} must be a dotted path like "
                                               "'model' or 'event.subject'")
    return path


_MISSING = object()


def _resolve(event: Event, path: str) -> Any:
    """Return the value at ``path`` (``event.<field>...`` or a payload path), or ``_MISSING``."""
    head, _, rest = path.partition(".")
    if head == "event" and rest:
        document: Any = {"id": event.id, "seq": event.seq, "type": event.type,
                         "subject": event.subject, "actor": event.actor,
                         "occurred_at": event.occurred_at.isoformat(),
                         "payload": event.payload}
        parts = rest.split(".")
    else:
        document, parts = event.payload, path.split(".")
    for part in parts:
        if isinstance(document, Mapping) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return _MISSING
    return document


def _equal(left: Any, right: Any) -> bool:
    """Tell whether two JSON values are equal, without ``True == 1``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Start a run of the pipeline for each event of type ``on`` that passes ``where``.

    ``on`` is any dotted event type: one of ``EventType`` or one that other code emits (a
    ``custom.`` type, say); ``alert.fired`` is short for ``monitoring.alert_fired``.
    ``where`` maps dotted paths to the value required there (a list means "one of");
    ``parameters`` maps pipeline parameters to dotted paths. A path starting ``event.``
    reads the event (``id``, ``seq``, ``type``, ``subject``, ``actor``, ``occurred_at``,
    ``payload``); any other path reads the payload. ``name`` defaults to ``on``.

    Raises:
        InvalidArgumentError: naming ``trigger.<field>`` when a field is wrong.
    """

    on: str
    where: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        on = EVENT_ALIASES.get(self.on, self.on) if isinstance(self.on, str) else self.on
        if not isinstance(on, str) or len(on) > 128 or not EVENT_TYPE_PATTERN.fullmatch(on):
            raise InvalidArgumentError("trigger.on", f"{self.on!r} must be a dotted event "
                                       "type like 'monitoring.alert_fired'")
        object.__setattr__(self, "on", str(on))  # a plain str, also for an EventType
        where = _json_mapping(self.where, "trigger.where")
        for path in where:
            _check_path(path, f"trigger.where.{path}")
        object.__setattr__(self, "where", where)
        parameters = _json_mapping(self.parameters, "trigger.parameters")
        for name, path in parameters.items():
            _check_path(path, f"trigger.parameters.{name}")
        object.__setattr__(self, "parameters", parameters)
        object.__setattr__(self, "name", validate_name(self.name if self.name is not None
                                                       else self.on, "trigger.name"))

    def __hash__(self) -> int:
        return hash(hash_canonical([self.on, dict(self.where), dict(self.parameters),
                                    self.name]))

    @property
    def label(self) -> str:
        """The trigger's name (``on`` unless one was given)."""
        return self.name or self.on

    @property
    def known_type(self) -> bool:
        """Tell whether ``on`` is an event type loopline itself emits."""
        return self.on in {str(member) for member in EventType}

    def matches(self, event: Event) -> bool:
        """Tell whether ``event`` is of type ``on`` and every ``where`` filter holds."""
        if event.type != self.on:
            return False
        for path, wanted in self.where.items():
            found = _resolve(event, path)
            options = wanted if isinstance(wanted, list) else [wanted]
            if found is _MISSING or not any(_equal(found, option) for option in options):
                return False
        return True

    def parameters_for(self, event: Event) -> dict[str, Any]:
        """Return the run parameters read from ``event``.

        Raises:
            InvalidArgumentError: naming ``trigger.parameters.<name>`` and its path when the
                event has nothing there.
        """
        found: dict[str, Any] = {}
        for name, path in self.parameters.items():
            value = _resolve(event, path)
            if value is _MISSING:
                raise InvalidArgumentError(f"trigger.parameters.{name}", f"event {event.id} "
                                           f"({event.type}) has no value at {path!r}")
            found[name] = value
        return found


MAX_TRIGGER_NAME = 256  # pipeline_runs.trigger_name


def bind_schedules(pipeline: str, parameters: Sequence[str], required: Sequence[str],
                   schedules: Sequence[Schedule | str], triggers: Sequence[Trigger],
                   ) -> tuple[tuple[Schedule, ...], tuple[Trigger, ...]]:
    """Return a pipeline's schedules and triggers after checking them against its parameters.

    ``parameters`` are the pipeline's parameter names, ``required`` those without a default;
    a plain string schedule is ``Schedule(cron)``.

    Raises:
        InvalidArgumentError: naming the schedule or trigger field (or the duplicate name)
            that is wrong.
    """
    made = tuple(Schedule(s) if isinstance(s, str) else s for s in schedules)
    for item, kind in [*((s, Schedule) for s in made), *((t, Trigger) for t in triggers)]:
        if not isinstance(item, kind):
            raise InvalidArgumentError(f"{kind.__name__.lower()}s", f"{item!r} is not a "
                                       f"{kind.__name__}")
    _unique("schedule", [s.name for s in made])
    _unique("trigger", [t.label for t in triggers])
    for label, name in [*(("schedule", s.name) for s in made),
                       *(("trigger", t.label) for t in triggers)]:
        if len(f"{pipeline}/{name}") > MAX_TRIGGER_NAME:  # the stored name, pipeline/name
            raise InvalidArgumentError(f"{label}.name", f"{pipeline}/{name} is longer than "
                                       f"{MAX_TRIGGER_NAME} characters; shorten the pipeline "
                                       f"or the {label} name")
    for prefix, given in [*(("schedule", s.parameters) for s in made),
                          *(("trigger", t.parameters) for t in triggers)]:
        _check_parameters(pipeline, prefix, given, parameters, required)
    return made, tuple(triggers)


def _unique(kind: str, names: list[str]) -> None:
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidArgumentError(f"{kind}.name", f"{', '.join(twice)} is used by more than "
                                   f"one {kind}; give each {kind} its own name=")


def _check_parameters(pipeline: str, prefix: str, given: Mapping[str, Any],
                      parameters: Sequence[str], required: Sequence[str]) -> None:
    for name in given:
        if name not in parameters:
            takes = ", ".join(parameters) or "no parameters"
            raise InvalidArgumentError(f"{prefix}.parameters.{name}", f"pipeline {pipeline!r} "
                                       f"has no parameter {name!r}; it takes {takes}")
    for name in required:
        if name not in given:
            raise InvalidArgumentError(f"{prefix}.parameters.{name}", f"pipeline {pipeline!r} "
                                       "requires it and it has no default; give it a value")
