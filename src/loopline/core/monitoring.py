"""Monitoring and the closed loop: alert rules, what an evaluation saw, alerts, playbooks.

Pure: no I/O. A ``MonitorConfig`` (applied from YAML, see ``loopline.monitoring``) holds the
drift settings, the slices quality is measured on, the alert rules and the playbooks. An
``AlertRule`` watches one signal in one scope over a window; each evaluation is stored as an
``Evaluation`` with the rule as it was and the numbers it saw, so it can be re-run to the
same answer. A rule that breaches for ``for_count`` evaluations in a row opens an ``Alert``;
an alert's playbook runs its steps as ``PlaybookAction`` records, each exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name


class SignalKind(StrEnum):
    """What a rule watches.

    ``dataset_drift``: the share of input columns that drifted (0..1). ``column_drift``: one
    column's drift score (``scope.column``). ``prediction_drift``: the outputs' drift score.
    ``quality``: a quality metric (``metric``), or with ``baseline: training`` its drop from
    the version's training-time value, on ``scope.slice`` or overall. ``label_share``: the
    share of predictions that have a label. ``error_rate``, ``latency`` (``metric``: p50,
    p95 or p99, milliseconds) and ``throughput`` (requests per second): the server's health.
    """

    DATASET_DRIFT = "dataset_drift"
    COLUMN_DRIFT = "column_drift"
    PREDICTION_DRIFT = "prediction_drift"
    QUALITY = "quality"
    LABEL_SHARE = "label_share"
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    THROUGHPUT = "throughput"


class DriftMethod(StrEnum):
    """Drift tests: ``auto`` picks one by column kind and sample size."""

    AUTO = "auto"
    KS = "ks"  # Kolmogorov-Smirnov, numeric; the score is the p-value (drift when below)
    PSI = "psi"  # population stability index, numeric or categorical
    WASSERSTEIN = "wasserstein"  # normalised by the reference's standard deviation, numeric
    CHI_SQUARE = "chi_square"  # categorical; the score is the p-value (drift when below)
    JENSEN_SHANNON = "jensen_shannon"  # distance (base 2), categorical


P_VALUE_METHODS = frozenset({DriftMethod.KS, DriftMethod.CHI_SQUARE})
"""Methods whose score is a p-value: a column drifts when the score is *below* threshold."""


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Comparison(StrEnum):
    """Which side of the threshold breaches."""

    ABOVE = "above"
    BELOW = "below"


class EvaluationStatus(StrEnum):
    """What one evaluation found: ``insufficient`` when samples < ``min_samples``."""

    OK = "ok"
    BREACHED = "breached"
    INSUFFICIENT = "insufficient"


class AlertState(StrEnum):
    """An alert is firing until an evaluation of its rule is ok again."""

    FIRING = "firing"
    RESOLVED = "resolved"


class ActionKind(StrEnum):
    """What a playbook step does."""

    RETRAIN = "retrain"
    ROLLBACK = "rollback"
    QUARANTINE = "quarantine"
    NOTIFY = "notify"


class ActionState(StrEnum):
    """Where a playbook action stands; ``done``, ``failed`` and ``skipped`` are final."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL_ACTION_STATES = frozenset({ActionState.DONE, ActionState.FAILED, ActionState.SKIPPED})
MAX_WINDOW = timedelta(days=90)
MAX_FOR_COUNT = 1000


def _positive(value: float, field_name: str, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidArgumentError(field_name, f"{value!r} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(field_name, f"{value!r} must be "
                                               f"{'0 or more' if allow_zero else 'above 0'}")


@dataclass(frozen=True, slots=True)
class RuleScope:
    """Where a rule looks: a deployment, optionally one version, slice or column.

    ``model_version`` is a route URI (``models:/NAME/VERSION``); without it the rule looks
    at every version the deployment answered with.
    """

    deployment: str
    model_version: str | None = None
    slice: str | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.deployment, "scope.deployment")
        if self.slice is not None:
            validate_name(self.slice, "scope.slice")
        for name in ("model_version", "column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value
                                      or len(value) > 256):
                raise InvalidArgumentError(f"scope.{name}", f"{value!r} must be 1-256 "
                                                            "characters of text")

    @property
    def key(self) -> str:
        """One text naming the scope (alerts and streaks are per rule and scope)."""
        return "|".join(part or "*" for part in (self.deployment, self.model_version,
                                                 self.slice, self.column))


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Watch ``signal`` in ``scope`` over the last ``window``; breach past ``threshold``.

    ``min_samples`` requests (labelled ones for quality) are needed to judge at all;
    ``for_count`` breaching evaluations in a row open an alert; ``playbook`` names what runs
    then. ``metric`` picks the quality metric or latency percentile; ``baseline:
    "training"`` makes a quality rule watch the drop from the version's training metric.
    """

    name: str
    signal: SignalKind
    scope: RuleScope
    threshold: float
    window: timedelta = timedelta(hours=1)
    comparison: Comparison = Comparison.ABOVE
    metric: str | None = None
    baseline: str | None = None
    min_samples: int = 100
    for_count: int = 1
    severity: Severity = Severity.WARNING
    playbook: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.name, "rule.name")
        if not timedelta(0) < self.window <= MAX_WINDOW:
            raise InvalidArgumentError("window", f"{self.window} must be above 0 and at most "
                                                 "90 days")
        _positive(self.threshold, "threshold", allow_zero=True)
        for name, value, top in (("min_samples", self.min_samples, 10**9),
                                 ("for_count", self.for_count, MAX_FOR_COUNT)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise InvalidArgumentError(name, f"{value!r} must be a whole number from 1 to "
                                                 f"{top}")
        if self.baseline not in (None, "training"):
            raise InvalidArgumentError("baseline", f"{self.baseline!r} must be 'training' or "
                                                   "absent")
        if self.baseline is not None and self.signal is not SignalKind.QUALITY:
            raise InvalidArgumentError("baseline", "applies to quality rules only")
        if self.signal is SignalKind.COLUMN_DRIFT and self.scope.column is None:
            raise InvalidArgumentError("scope.column", "a column_drift rule names its column")
        if self.signal in (SignalKind.QUALITY, SignalKind.LATENCY) and not self.metric:
            raise InvalidArgumentError("metric", f"a {self.signal} rule names its metric")
        if self.playbook is not None:
            validate_name(self.playbook, "playbook")

    def breaches(self, value: float) -> bool:
        """Whether ``value`` is past the threshold on the breaching side."""
        if self.comparison is Comparison.ABOVE:
            return value > self.threshold
        return value < self.threshold


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a signal measured over a window: ``value`` is None when it cannot be measured.

    ``samples`` is what ``min_samples`` is compared with; ``numbers`` keeps everything the
    value came from (per-column scores, counts, the baseline) for the stored evaluation.
    """

    value: float | None
    samples: int
    numbers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of one rule, stored with the rule as it was and what it saw.

    ``streak`` counts breaching evaluations in a row up to this one (0 unless breached);
    ``alert_id`` is the alert this evaluation opened or kept firing, if any.
    """

    id: str
    rule: str
    scope_key: str
    deployment: str
    signal: SignalKind
    window_start: datetime
    window_end: datetime
    value: float | None
    samples: int
    status: EvaluationStatus
    streak: int
    rule_record: Mapping[str, Any]
    numbers: Mapping[str, Any]
    config_digest: str
    evaluated_at: datetime
    alert_id: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule that breached ``for_count`` times in a row in one scope."""

    id: str
    rule: str
    scope_key: str
    deployment: str
    severity: Severity
    state: AlertState
    playbook: str | None
    opened_at: datetime
    evaluation_id: str
    numbers: Mapping[str, Any]
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PlaybookStep:
    """One action of a playbook with its parameters; ``requires_approval`` holds it for one."""

    kind: ActionKind
    params: Mapping[str, Any] = field(default_factory=dict)
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class Playbook:
    """Steps run in order on an alert.

    ``cooldown``: a step of the same kind for the same deployment is skipped when one ran
    that recently (no retrain storms).
    """

    name: str
    steps: tuple[PlaybookStep, ...]
    cooldown: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        validate_name(self.name, "playbook.name")
        if not self.steps:
            raise InvalidArgumentError(f"playbooks.{self.name}.steps", "has no steps")
        if self.cooldown < timedelta(0):
            raise InvalidArgumentError(f"playbooks.{self.name}.cooldown", "must be 0 or more")


@dataclass(frozen=True, slots=True)
class PlaybookAction:
    """One step of one alert's playbook, as stored; ``(alert_id, step)`` is unique.

    ``claimed_by``/``lease_until`` fence a runner: a runner whose lease ran out may not
    complete it. ``result`` holds what the action did (the run id, the rollback revision,
    the webhook's answer) or why it failed or was skipped.
    """

    id: str
    alert_id: str
    playbook: str
    step: int
    kind: ActionKind
    params: Mapping[str, Any]
    state: ActionState
    attempts: int
    created_at: datetime
    updated_at: datetime
    requires_approval: bool = False
    approval_id: str | None = None
    claimed_by: str | None = None
    lease_until: datetime | None = None
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ColumnDriftSpec:
    """A column's drift test and threshold (None: the method's default)."""

    method: DriftMethod = DriftMethod.AUTO
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """Per-column overrides and the dataset verdict's share of drifted columns."""

    columns: Mapping[str, ColumnDriftSpec] = field(default_factory=dict)
    default: ColumnDriftSpec = field(default_factory=ColumnDriftSpec)
    share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise InvalidArgumentError("drift.share", f"{self.share!r} must be in (0, 1]")

    def spec(self, column: str) -> ColumnDriftSpec:
        """Return the test for ``column``."""
        return self.columns.get(column, self.default)


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """A slice: the rows where every named column matches its condition.

    A condition is a value (equal), a list (one of) or a range ``{"min": a, "max": b}``
    (inclusive, either end optional).
    """

    name: str
    where: Mapping[str, Any]

    def __post_init__(self) -> None:
        validate_name(self.name, "slice.name")
        if not self.where:
            raise InvalidArgumentError(f"slices.{self.name}", "has no conditions")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Everything monitoring runs on, as applied; ``digest`` names the applied document."""

    rules: tuple[AlertRule, ...] = ()
    playbooks: Mapping[str, Playbook] = field(default_factory=dict)
    slices: Mapping[str, SliceSpec] = field(default_factory=dict)
    drift: DriftSettings = field(default_factory=DriftSettings)
    digest: str = ""

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InvalidArgumentError("rules", f"rule names repeat: {', '.join(repeated)}")
        for rule in self.rules:
            if rule.playbook is not None and rule.playbook not in self.playbooks:
                raise InvalidArgumentError(f"rules.{rule.name}.playbook",
                                           f"{rule.playbook!r} is not a playbook here")
            if rule.scope.slice is not None and rule.scope.slice not in self.slices:
                raise InvalidArgumentError(f"rules.{rule.name}.scope.slice",
                                           f"{rule.scope.slice!r} is not a slice here")


__all__ = [
    "FINAL_ACTION_STATES", "P_VALUE_METHODS", "ActionKind", "ActionState", "Alert",
    "AlertRule", "AlertState", "ColumnDriftSpec", "Comparison", "DriftMethod", "DriftSettings",
    "Evaluation", "EvaluationStatus", "Measurement", "MonitorConfig", "Playbook",
    "PlaybookAction", "PlaybookStep", "RuleScope", "Severity", "SignalKind", "SliceSpec",
]
