"""The ``kind: gate_policy`` document: which gates a policy governs and the rules it sets.

Pure: no I/O. Models are frozen and refuse unknown keys; every rule names its ``kind``, the
discriminator of ``Rule``. A metric rule is written either as a ``check`` expression
(``recall >= 0.8 on slice region=EU``) or in the structured form (``metric``, ``op``,
``value``, ``slice``); both become one ``MetricCondition``. Files are read and checked as a
whole in ``governance.policy_files``; rules are evaluated in ``governance.rules``.

A policy that could never apply, or never pass, is refused:

- ``targets`` with a gate that never carries a target (``register``, ``trust``): the policy
  would never govern that gate.
- ``targets`` of a ``status`` policy must be model statuses (``production``, lowercase), unless
  the policy also lists a gate whose targets are names (``alias``, ``delete_alias``,
  ``deploy``, ``rollout_step``): then a target may be an alias or stage name as well.
- an ``approvals`` rule with the ``register`` gate: an approval request is made for an
  existing version, and a registration has none yet (every other gate may carry approvals).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopline.core.errors import InvalidArgumentError
from loopline.core.gates import GateAction, parse_gate_action
from loopline.core.models import ModelStatus
from loopline.core.names import NAME_PATTERN
from loopline.governance.durations import parse_duration

Op = Literal[">=", ">", "<=", "<", "=="]
OPS: tuple[str, ...] = (">=", ">", "<=", "<", "==")
RULE_KINDS: tuple[str, ...] = ("required_metadata", "lineage_complete", "metric", "slice_gap",
                               "encryption", "approvals")

_METRIC_NAME = r"[A-Za-z_][A-Za-z0-9_.:/-]*"
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
# Two-character operators come first so that ``>=`` is not read as ``>`` then ``=``.
_CHECK = re.compile(
    rf"^\s*(?P<metric>{_METRIC_NAME})\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>{_NUMBER})"
    r"(?:\s+on\s+slice\s+(?P<slice>\S(?:.*\S)?))?\s*$")
_METRIC_NAME_PATTERN = re.compile(rf"^{_METRIC_NAME}$")
# Gates whose requests never carry a target: a policy with targets never governs them.
TARGETLESS_GATES: tuple[GateAction, ...] = (GateAction.REGISTER, GateAction.TRUST)
# Gates whose targets are names (an alias, a deployment stage), not model statuses.
NAMED_TARGET_GATES: tuple[GateAction, ...] = (GateAction.ALIAS, GateAction.DELETE_ALIAS,
                                              GateAction.DEPLOY, GateAction.ROLLOUT_STEP,
                                              GateAction.PLAYBOOK_ACTION)
# An approval request needs an existing version; a registration has none yet.
APPROVAL_GATES: tuple[GateAction, ...] = tuple(
    gate for gate in GateAction if gate != GateAction.REGISTER)
_STATUSES: tuple[str, ...] = tuple(status.value for status in ModelStatus)


@dataclass(frozen=True, slots=True)
class MetricCondition:
    """``metric op value``, overall or on one slice of the version's metrics."""

    metric: str
    op: str
    value: float
    slice: str | None = None

    def as_text(self) -> str:
        """Return the condition as a ``check`` expression that parses back to it."""
        text = f"{self.metric} {self.op} {self.value!r}"
        return f"{text} on slice {self.slice}" if self.slice is not None else text


def parse_check(text: str) -> MetricCondition:
    """Return the condition a ``check`` expression states.

    Raises:
        ValueError: saying what the expression should look like when it does not parse, or
            when the number is not finite.
    """
    match = _CHECK.match(text) if "\n" not in text.strip() else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a check; write '<metric> <op> <number>' with op one of "
            f"{', '.join(OPS)}, optionally followed by 'on slice <slice>', e.g. "
            "'recall >= 0.8 on slice region=EU'")
    value = float(match.group("value"))
    if not math.isfinite(value):
        raise ValueError(f"{text!r}: the number must be finite")
    return MetricCondition(match.group("metric"), match.group("op"), value, match.group("slice"))


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} must be 1-128 characters of letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit")
    return value


def _gate(value: str) -> str:
    try:
        return str(parse_gate_action(value))
    except InvalidArgumentError as exc:
        raise ValueError(exc.problem) from None


def _metric_name(value: str) -> str:
    if not _METRIC_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a metric name (letters, digits, '_', '.', ':', "
                         "'/', '-', starting with a letter or '_')")
    return value


Name = Annotated[str, AfterValidator(_name)]
Gate = Annotated[str, AfterValidator(_gate)]
MetricName = Annotated[str, AfterValidator(_metric_name)]
Glob = Annotated[str, Field(min_length=1, max_length=256)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    # strict: YAML gives real types, so "0.8" (a string) or `yes` for a count is a mistake.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AppliesTo(_Model):
    """Which model names (globs), gates and targets a policy governs; no targets = any.

    Targets are refused with ``register`` or ``trust`` (they never carry one), and must be
    model statuses when ``status`` is listed without a gate whose targets are names.
    """

    models: list[Glob] = Field(default_factory=lambda: ["*"], min_length=1)
    gates: list[Gate] = Field(min_length=1)
    targets: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @field_validator("targets")
    @classmethod
    def _targets_can_match(cls, targets: list[str], info: ValidationInfo) -> list[str]:
        gates: list[str] = info.data.get("gates") or []  # absent when the gates are invalid
        if not targets or not gates:
            return targets
        targetless = [gate for gate in gates if gate in TARGETLESS_GATES]
        if targetless:
            many = len(targetless) > 1
            raise ValueError(
                f"{'gates' if many else 'gate'} {', '.join(targetless)} never "
                f"{'carry' if many else 'carries'} a target, so a policy with targets would "
                f"never apply to {'them' if many else 'it'}; remove the targets or put "
                f"{'those gates' if many else 'that gate'} in a policy of its own")
        named = any(gate in NAMED_TARGET_GATES for gate in gates)
        if GateAction.STATUS in gates and not named:
            wrong = [target for target in targets if target not in _STATUSES]
            if wrong:
                raise ValueError(
                    f"{', '.join(repr(t) for t in wrong)} {'is' if len(wrong) == 1 else 'are'}"
                    f" not a model status; the targets of a status gate are the new status, "
                    f"one of {', '.join(_STATUSES)}")
        return targets


class _Rule(_Model):
    id: Name


class RequiredMetadataRule(_Rule):
    """The version's tags (and ``description``) must hold a non-empty value for each field."""

    kind: Literal["required_metadata"]
    fields: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class LineageCompleteRule(_Rule):
    """The version's lineage must be recorded: each switched-on part must hold."""

    kind: Literal["lineage_complete"]
    validated_datasets: bool = True
    code_version: bool = True
    clean_code: bool = False
    environment: bool = True


class MetricRule(_Rule):
    """A threshold on one metric, overall or on a slice: ``check`` or the structured form."""

    kind: Literal["metric"]
    check: str | None = None
    metric: MetricName | None = None
    op: Op | None = None
    value: Number | None = None
    slice: Annotated[str, Field(min_length=1)] | None = None
    _condition: MetricCondition = PrivateAttr()

    @field_validator("check")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_check(value)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> MetricRule:
        structured = {"metric": self.metric, "op": self.op, "value": self.value,
                      "slice": self.slice}
        if self.check is not None:
            given = [key for key, item in structured.items() if item is not None]
            if given:
                raise ValueError(f"give either check or {', '.join(given)}, not both")
            self._condition = parse_check(self.check)
            return self
        if self.metric is None or self.op is None or self.value is None:
            missing = [key for key in ("metric", "op", "value") if structured[key] is None]
            raise ValueError(f"needs a check expression, or metric, op and value "
                             f"(missing {', '.join(missing)})")
        self._condition = MetricCondition(self.metric, self.op, self.value, self.slice)
        return self

    @property
    def condition(self) -> MetricCondition:
        """Return what the rule checks, whichever way it was written."""
        return self._condition


class SliceGapRule(_Rule):
    """Max minus min of ``metric`` over the slices matching the ``slices`` glob is bounded."""

    kind: Literal["slice_gap"]
    metric: MetricName
    slices: Glob
    max_gap: Number = Field(ge=0)


class EncryptionRule(_Rule):
    """The version's artifact is encrypted at rest."""

    kind: Literal["encryption"]


class ApprovalsRule(_Rule):
    """``count`` distinct approvers, never the requester nor the actor, have approved."""

    kind: Literal["approvals"]
    count: int = Field(ge=1, le=100)
    expires_after: timedelta | None = None

    @field_validator("expires_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not a duration; write a number and a unit, e.g. 7d")
        try:
            return parse_duration(value, "expires_after")
        except InvalidArgumentError as exc:
            raise ValueError(exc.problem) from exc


Rule = Annotated[
    RequiredMetadataRule | LineageCompleteRule | MetricRule | SliceGapRule | EncryptionRule
    | ApprovalsRule,
    Field(discriminator="kind"),
]


class GatePolicy(_Model):
    """A ``kind: gate_policy`` document: where it applies and the rules that must all pass."""

    name: Name
    description: str | None = None
    applies_to: AppliesTo
    rules: list[Rule] = Field(min_length=1, max_length=1000)

    @field_validator("rules")
    @classmethod
    def _approvals_can_apply(cls, rules: list[Rule], info: ValidationInfo) -> list[Rule]:
        scope = info.data.get("applies_to")  # absent when applies_to is invalid
        if not isinstance(scope, AppliesTo) or GateAction.REGISTER not in scope.gates:
            return rules
        for index, rule in enumerate(rules):
            if isinstance(rule, ApprovalsRule):
                raise ValueError(
                    f"rules[{index}] ({rule.id!r}) is an approvals rule, which cannot apply to "
                    "gate register: an approval request needs an existing version, and a "
                    f"registration has none yet; approvals apply to "
                    f"{', '.join(APPROVAL_GATES)} (put the rule in a policy without register)")
        return rules

    def governs(self, model: str, gate: str, target: str | None) -> bool:
        """Tell whether the policy applies to ``gate`` of ``model`` moving to ``target``."""
        scope = self.applies_to
        return (gate in scope.gates
                and any(fnmatch.fnmatchcase(model, glob) for glob in scope.models)
                and (not scope.targets or (target is not None and target in scope.targets)))
