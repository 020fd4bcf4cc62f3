"""Monitoring config documents: one YAML mapping checked into a ``MonitorConfig``.

Pure: data in, config out. A document is checked for shape by pydantic models that refuse
unknown keys, then built into the ``core.monitoring`` dataclasses, whose own checks run too,
and then checked as a whole (rule names unique, playbooks and slices that exist, metrics
that exist). Every problem names its place through ``where(location)``: ``monitor.yaml:14:
rules[2].threshold`` when the caller read the file with line numbers (the documents of
``governance.policy_yaml`` do: the CLI reads the file that way, since this layer may not
import governance), ``rules[2].threshold`` otherwise. The digest is the SHA-256 of the
canonical JSON of the document as written, so layout, comments and key order do not change
it. Format::

    drift:                      # how drift is tested (optional)
      share: 0.5                # the dataset drifts when this share of its columns do
      method: auto              # default test: auto, ks, psi, wasserstein, chi_square,
      threshold: null           #   jensen_shannon; null threshold: the method's default
      columns:
        amount: {method: psi, threshold: 0.2}
    slices:                     # name -> conditions, all must hold
      eu: {region: [DE, FR]}    # a value (equal), a list (one of), {min: a, max: b}
    playbooks:
      recover:
        cooldown: 1h            # a step of the same kind on the same deployment is
        steps:                  #   skipped when one ran this recently (at most 30d)
          - action: retrain     # retrain, rollback, quarantine or notify; every other
            pipeline: train     #   key of a step is a parameter of its action
            requires_approval: true
    rules:
      - name: input-drift
        signal: dataset_drift   # see core.monitoring.SignalKind
        deployment: fraud
        version: models:/fraud/3  # optional; without it every version served is judged
        slice: eu               # quality and label_share only
        column: amount          # column_drift only
        window: 15m             # 90s, 15m, 1h, 1d
        threshold: 0.3
        comparison: above       # or below
        metric: accuracy        # quality: a quality metric; latency: p50, p95 or p99
        baseline: training      # quality only: watch the drop from the training value
        min_samples: 100        # requests (labelled rows for quality) needed to judge;
                                #   not throughput, whose zero traffic is a real 0.0
        for: 3                  # breaching evaluations in a row before the alert opens
        severity: critical      # info, warning or critical
        playbook: recover

A step's parameters are those its action reads (``loopline.automation``), checked here so a
mistake is refused at apply time rather than failing the action when an alert fires:

    retrain      pipeline (required, a name), parameters (a mapping), canary (true/false),
                 reason (text)
    rollback     reason (text)
    quarantine   target (alert, canary or primary), reason (text)
    notify       url (http or https, with a host), message (text, at most 2000 characters)
    every step   cooldown (false: the step ignores the playbook's cool-down)

Any other key is refused, and so is a null value (leave the key out instead).

A ``column_drift`` or ``prediction_drift`` rule watches a score whose scale depends on the
test, and ``auto`` picks the test by sample size; so such a rule is refused unless its
column's test is named (in ``drift.columns`` or as the default ``drift.method``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopline.core.canonical import hash_canonical
from loopline.core.errors import InvalidArgumentError
from loopline.core.models import ModelURI
from loopline.core.monitoring import (
    ActionKind,
    AlertRule,
    ColumnDriftSpec,
    Comparison,
    DriftMethod,
    DriftSettings,
    MonitorConfig,
    Playbook,
    PlaybookStep,
    RuleScope,
    Severity,
    SignalKind,
    SliceSpec,
)
from loopline.core.names import validate_name, validate_text
from loopline.outbound.urls import check_url

__all__ = ["LATENCY_METRICS", "MAX_COOLDOWN", "MAX_MESSAGE", "PREDICTION_COLUMN",
           "QUALITY_METRICS", "QUARANTINE_TARGETS", "STEP_PARAMS", "Loc", "Where",
           "format_duration", "parse_config", "parse_duration", "path_of"]

Loc = tuple[int | str, ...]
Where = Callable[[Loc], str]

MAX_RULES = 1000
MAX_STEPS = 20
MAX_COOLDOWN = timedelta(days=30)
"""A playbook's longest cool-down (so ``now - cooldown`` is always a time)."""
QUARANTINE_TARGETS = ("alert", "canary", "primary")  # automation.governing.TARGETS
MAX_MESSAGE = 2_000  # automation.notify.MAX_MESSAGE
MAX_REASON = 1_024
QUALITY_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss",
                             "mae", "rmse", "r2"})
LATENCY_METRICS = ("p50", "p95", "p99")
PREDICTION_COLUMN = "prediction"
"""The outputs' column in a window's rows and in a version's output profile."""

_DURATION = re.compile(r"^\s*([0-9]{1,9})\s*([smhd])\s*$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SLICED = frozenset({SignalKind.QUALITY, SignalKind.LABEL_SHARE})
_SCORED = {SignalKind.COLUMN_DRIFT: "column", SignalKind.PREDICTION_DRIFT: "signal"}


def path_of(loc: Loc) -> str:
    """Return ``loc`` written as a path: ``rules[2].threshold``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _plain_where(loc: Loc) -> str:
    return path_of(loc) or "monitor config"


def parse_duration(value: object, field: str) -> timedelta:
    """Return the duration ``value`` names: a whole number and a unit, ``90s 15m 1h 1d``.

    Raises:
        InvalidArgumentError: naming ``field`` when it is not written that way.
    """
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidArgumentError(field, f"{value!r} is not a duration; write a whole number "
                                          "and a unit (s, m, h or d), e.g. 90s, 15m, 1h, 1d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """Return ``value`` in the largest unit that divides it (``1d``, ``36h``, ``90s``)."""
    seconds = int(value.total_seconds())
    for unit, size in _UNIT_SECONDS.items():
        if seconds % size == 0 and (seconds or unit == "s"):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---------------------------------------------------------------------------- the shape

Number = Annotated[float, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True, min_length=1, max_length=1024)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ColumnDoc(_Model):
    method: DriftMethod = DriftMethod.AUTO
    threshold: Number | None = None


class _DriftDoc(_ColumnDoc):
    share: Number = 0.5
    columns: dict[Text, _ColumnDoc] = Field(default_factory=dict)


class _StepDoc(BaseModel):
    # Every key but these two is a parameter of the action.
    model_config = ConfigDict(extra="allow", frozen=True)

    action: ActionKind
    requires_approval: Flag = False


class _PlaybookDoc(_Model):
    steps: list[_StepDoc] = Field(min_length=1, max_length=MAX_STEPS)
    cooldown: Any = "1h"


class _RuleDoc(_Model):
    name: Text
    signal: SignalKind
    deployment: Text
    version: Text | None = None
    slice: Text | None = None
    column: Text | None = None
    window: Any = "1h"  # read by parse_duration, which says how to write one
    threshold: Number
    comparison: Comparison = Comparison.ABOVE
    metric: Text | None = None
    baseline: Text | None = None
    min_samples: Count = 100
    for_count: Count = Field(1, alias="for")
    severity: Severity = Severity.WARNING
    playbook: Text | None = None


class _ConfigDoc(_Model):
    drift: _DriftDoc = Field(default_factory=_DriftDoc)
    slices: dict[Text, dict[Text, Any]] = Field(default_factory=dict)
    playbooks: dict[Text, _PlaybookDoc] = Field(default_factory=dict)
    rules: list[_RuleDoc] = Field(default_factory=list, max_length=MAX_RULES)


M = TypeVar("M", bound=BaseModel)


def _inner(kind: Any, part: int | str) -> Any:
    """Return the type found at ``part`` inside ``kind`` (a model, dict, list or optional)."""
    options = [arg for arg in get_args(kind) if arg is not type(None)]
    if get_origin(kind) is not None and get_origin(kind) not in (list, dict) and options:
        kind = options[0]  # X | None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        found = [f.annotation for name, f in kind.model_fields.items()
                 if (f.alias or name) == part]
        return found[0] if found else None
    args = get_args(kind)
    return args[-1] if get_origin(kind) in (list, dict) and args else None


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    kind: Any = model
    for part in loc:
        kind = _inner(kind, part)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return [f.alias or name for name, f in kind.model_fields.items()]
    return []


def _sentence(model: type[BaseModel], error: Any) -> str:
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        keys = _known_keys(model, loc[:-1])
        return "is not a known key" + (f"; use {', '.join(keys)}" if keys else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and value != "":
        message += f", not {value!r}"
    return message


def _validate(model: type[M], data: Any, where: Where, base: Loc = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise InvalidArgumentError(where((*base, *first["loc"])),
                                   _sentence(model, first) + more) from exc


def _json_only(value: Any, where: Where, loc: Loc) -> None:
    """Refuse what canonical JSON cannot hold as it is: YAML dates, non-text keys, NaN."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgumentError(where(loc), f"the key {key!r} must be text")
            _json_only(item, where, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _json_only(item, where, (*loc, index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(where(loc), f"{value!r} must be a finite number")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise InvalidArgumentError(where(loc), f"{value!r} must be text, a number, a boolean, "
                                               "a list or a mapping (quote dates)")


# ---------------------------------------------------------------------------- the build

_RULE_KEYS = {"rule.name": "name", "scope.deployment": "deployment",
              "scope.model_version": "version", "scope.slice": "slice",
              "scope.column": "column", "for_count": "for", "model": "version"}


_RULE_DOC_KEYS = frozenset(f.alias or name for name, f in _RuleDoc.model_fields.items())


@contextmanager
def _at(where: Where, loc: Loc, rule: bool = False) -> Iterator[None]:
    """Report an ``InvalidArgumentError`` raised inside at ``loc``.

    Inside a rule (``rule``), the field the core names (``scope.column``, ``for_count``)
    becomes the rule's key (``column``, ``for``) and is added to the location.
    """
    try:
        yield
    except InvalidArgumentError as exc:
        key = _RULE_KEYS.get(exc.field, exc.field)
        inside = (*loc, key) if rule and key in _RULE_DOC_KEYS else loc
        raise InvalidArgumentError(where(inside), exc.problem) from exc


def _drift(doc: _DriftDoc, where: Where) -> DriftSettings:
    with _at(where, ("drift", "share")):
        return DriftSettings(
            columns={name: ColumnDriftSpec(spec.method, spec.threshold)
                     for name, spec in doc.columns.items()},
            default=ColumnDriftSpec(doc.method, doc.threshold), share=doc.share)


def _condition(value: Any) -> bool:
    scalar = (str, int, float, bool)
    if isinstance(value, list):
        return bool(value) and all(isinstance(item, scalar) for item in value)
    if isinstance(value, dict):
        bounds = [v for v in value.values() if v is not None]
        return bool(bounds) and set(value) <= {"min", "max"} and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in bounds)
    return isinstance(value, scalar)


def _slice(name: str, where_: Mapping[str, Any], where: Where) -> SliceSpec:
    with _at(where, ("slices", name)):
        spec = SliceSpec(name, dict(where_))
    for column, value in spec.where.items():
        if not _condition(value):
            raise InvalidArgumentError(where(("slices", name, column)), (
                f"{value!r} is not a condition; write a value, a non-empty list of values or "
                "{min: a, max: b} (either end optional)"))
    return spec


Check = Callable[[Any, str], object]


def _flag(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentError(key, f"{value!r} must be true or false")


def _mapping(value: Any, key: str) -> None:
    if not isinstance(value, dict):
        raise InvalidArgumentError(key, "must be a mapping of parameter names to values")


def _target(value: Any, key: str) -> None:
    if value not in QUARANTINE_TARGETS:
        raise InvalidArgumentError(key, f"{value!r} must be one of "
                                        f"{', '.join(QUARANTINE_TARGETS)}")


def _url(value: Any, key: str) -> None:
    # the same checks a webhook call makes (no DNS lookup here), so a URL the automation
    # would refuse is refused at apply time; errors show the origin only (a token may follow)
    if not isinstance(value, str):
        raise InvalidArgumentError(key, "must be an http or https URL with a host")
    check_url(value, key)


def _reason(value: Any, key: str) -> None:
    validate_text(value, key, MAX_REASON)


def _message(value: Any, key: str) -> None:
    validate_text(value, key, MAX_MESSAGE)


_EVERY_STEP: Mapping[str, Check] = {"cooldown": _flag}
STEP_PARAMS: Mapping[ActionKind, Mapping[str, Check]] = {
    ActionKind.RETRAIN: {"pipeline": validate_name, "parameters": _mapping, "canary": _flag,
                         "reason": _reason, **_EVERY_STEP},
    ActionKind.ROLLBACK: {"reason": _reason, **_EVERY_STEP},
    ActionKind.QUARANTINE: {"target": _target, "reason": _reason, **_EVERY_STEP},
    ActionKind.NOTIFY: {"url": _url, "message": _message, **_EVERY_STEP},
}
"""The parameters each action reads (see the module docstring), with their checks."""
_REQUIRED_PARAMS: Mapping[ActionKind, tuple[str, ...]] = {ActionKind.RETRAIN: ("pipeline",)}


def _step_params(step: _StepDoc, where: Where, loc: Loc) -> dict[str, Any]:
    """Return the step's parameters, each checked against what its action reads."""
    params = dict(step.model_extra or {})
    known = STEP_PARAMS[step.action]
    for key, value in params.items():
        if key not in known:
            raise InvalidArgumentError(where((*loc, key)), (
                f"is not a parameter of a {step.action} step; use {', '.join(known)} "
                "(or requires_approval)"))
        if value is None:
            raise InvalidArgumentError(where((*loc, key)), "has no value; give one or leave "
                                                           "the key out")
        with _at(where, (*loc, key)):
            known[key](value, key)
    for key in _REQUIRED_PARAMS.get(step.action, ()):
        if key not in params:
            raise InvalidArgumentError(where((*loc, key)), f"is required for a {step.action} "
                                                           "step")
    return params


def _playbook(name: str, doc: _PlaybookDoc, where: Where) -> Playbook:
    loc: Loc = ("playbooks", name)
    cooldown = doc.cooldown
    with _at(where, (*loc, "cooldown")):
        pause = parse_duration(cooldown, "cooldown")
        if pause > MAX_COOLDOWN:
            raise InvalidArgumentError("cooldown", f"{cooldown!r} must be at most 30 days")
    steps = tuple(PlaybookStep(step.action, _step_params(step, where, (*loc, "steps", index)),
                               step.requires_approval) for index, step in enumerate(doc.steps))
    with _at(where, loc):
        return Playbook(name, steps, pause)


def _version(text: str | None) -> str | None:
    if text is None:
        return None
    uri = ModelURI.parse(text)
    if uri.version is None:
        raise InvalidArgumentError("scope.model_version", f"{text!r} names an alias; a rule "
                                   "watches one version: models:/NAME/VERSION")
    return str(uri)


def _check_metric(rule: AlertRule) -> None:
    if rule.signal is SignalKind.QUALITY and rule.metric not in QUALITY_METRICS:
        raise InvalidArgumentError("metric", f"{rule.metric!r} is not a quality metric; use "
                                             f"one of {', '.join(sorted(QUALITY_METRICS))}")
    if rule.signal is SignalKind.LATENCY and rule.metric not in LATENCY_METRICS:
        raise InvalidArgumentError("metric", f"{rule.metric!r} is not a latency percentile; "
                                             f"use one of {', '.join(LATENCY_METRICS)}")
    if rule.metric is not None and rule.signal not in (SignalKind.QUALITY, SignalKind.LATENCY):
        raise InvalidArgumentError("metric", "applies to quality and latency rules only")


def _check_scope(rule: AlertRule, drift: DriftSettings) -> None:
    if rule.scope.column is not None and rule.signal is not SignalKind.COLUMN_DRIFT:
        raise InvalidArgumentError("scope.column", "applies to column_drift rules only")
    if rule.scope.slice is not None and rule.signal not in _SLICED:
        raise InvalidArgumentError("scope.slice", "applies to quality and label_share rules "
                                                  "only")
    if rule.signal in _SCORED:
        column = rule.scope.column or PREDICTION_COLUMN
        if drift.spec(column).method is DriftMethod.AUTO:
            raise InvalidArgumentError(_SCORED[rule.signal], (
                f"a {rule.signal} rule watches the drift score of {column!r}, whose scale "
                "depends on the test; name it (drift.columns." + column + ".method, or "
                "drift.method), since auto picks the test by sample size"))


def _rule(doc: _RuleDoc, drift: DriftSettings, where: Where, loc: Loc) -> AlertRule:
    with _at(where, loc, rule=True):
        scope = RuleScope(doc.deployment, _version(doc.version), doc.slice, doc.column)
        rule = AlertRule(
            name=doc.name, signal=doc.signal, scope=scope, threshold=doc.threshold,
            window=parse_duration(doc.window, "window"), comparison=doc.comparison,
            metric=doc.metric, baseline=doc.baseline, min_samples=doc.min_samples,
            for_count=doc.for_count, severity=doc.severity, playbook=doc.playbook)
        _check_metric(rule)
        _check_scope(rule, drift)
    return rule


def _check_names(config: _ConfigDoc, rules: tuple[AlertRule, ...], where: Where) -> None:
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        loc: Loc = ("rules", index)
        if rule.name in seen:
            raise InvalidArgumentError(where((*loc, "name")), f"rule {rule.name!r} is also "
                                                              f"rules[{seen[rule.name]}]")
        seen[rule.name] = index
        if rule.playbook is not None and rule.playbook not in config.playbooks:
            raise InvalidArgumentError(where((*loc, "playbook")), (
                f"{rule.playbook!r} is not a playbook here; define it under playbooks"))
        if rule.scope.slice is not None and rule.scope.slice not in config.slices:
            raise InvalidArgumentError(where((*loc, "slice")), (
                f"{rule.scope.slice!r} is not a slice here; define it under slices"))


def parse_config(data: Any, where: Where = _plain_where) -> MonitorConfig:
    """Return the checked config of ``data`` (a YAML document's data; None is empty).

    ``where`` turns a location such as ``("rules", 2, "threshold")`` into the text errors
    name; by default the path alone.

    Raises:
        InvalidArgumentError: whose field is ``where(location)`` of the first problem.
    """
    document = {} if data is None else data
    if not isinstance(document, dict):
        raise InvalidArgumentError(where(()), "a monitor config is a mapping with drift, "
                                              "slices, playbooks and rules")
    _json_only(document, where, ())
    doc = _validate(_ConfigDoc, document, where)
    drift = _drift(doc.drift, where)
    slices = {name: _slice(name, conditions, where) for name, conditions in doc.slices.items()}
    playbooks = {name: _playbook(name, playbook, where)
                 for name, playbook in doc.playbooks.items()}
    rules = tuple(_rule(rule, drift, where, ("rules", index))
                  for index, rule in enumerate(doc.rules))
    _check_names(doc, rules, where)
    return MonitorConfig(rules=rules, playbooks=playbooks, slices=slices, drift=drift,
                         digest=hash_canonical(document))
