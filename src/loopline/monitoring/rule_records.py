"""What an evaluation stores of its rule, and reading it back: re-running needs nothing else.

Pure. A rule record is a small monitoring document of its own: the rule as written in a
config (``rule``), the drift settings (``drift``) and the rule's slice (``slices``), so
``parse_rule_record`` rebuilds the same rule and settings with the config parser, without
the config the evaluation came from (which may have been replaced since).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import AlertRule, DriftSettings, MonitorConfig
from loopline.monitoring.config_yaml import format_duration, parse_config

__all__ = ["parse_rule_record", "rule_record"]


def _rule_document(rule: AlertRule) -> dict[str, Any]:
    return {"name": rule.name, "signal": str(rule.signal), "deployment": rule.scope.deployment,
            "version": rule.scope.model_version, "slice": rule.scope.slice,
            "column": rule.scope.column, "window": format_duration(rule.window),
            "threshold": rule.threshold, "comparison": str(rule.comparison),
            "metric": rule.metric, "baseline": rule.baseline, "min_samples": rule.min_samples,
            "for": rule.for_count, "severity": str(rule.severity), "playbook": rule.playbook}


def _drift_document(drift: DriftSettings) -> dict[str, Any]:
    return {"share": drift.share, "method": str(drift.default.method),
            "threshold": drift.default.threshold,
            "columns": {name: {"method": str(spec.method), "threshold": spec.threshold}
                        for name, spec in sorted(drift.columns.items())}}


def rule_record(rule: AlertRule, config: MonitorConfig) -> dict[str, Any]:
    """Return what an evaluation stores of its rule: the rule, the drift settings and slice.

    ``parse_rule_record`` reads it back to the same rule and settings, so an evaluation can
    be re-run without the config it came from.
    """
    slices = {} if rule.scope.slice is None else {
        rule.scope.slice: dict(config.slices[rule.scope.slice].where)}
    return {"rule": _rule_document(rule), "drift": _drift_document(config.drift),
            "slices": slices}


def parse_rule_record(record: Mapping[str, Any]) -> tuple[AlertRule, MonitorConfig]:
    """Return the rule of a stored ``rule_record``, and a config of its drift and slices.

    The config holds that rule alone, without its playbook (which the record names only).

    Raises:
        InvalidArgumentError: naming the path of what the record holds wrongly.
    """
    rule_doc = record.get("rule") if isinstance(record, Mapping) else None
    if not isinstance(rule_doc, Mapping):
        raise InvalidArgumentError("rule_record", "holds no rule")
    config = parse_config({"drift": record.get("drift") or {},
                           "slices": record.get("slices") or {},
                           "rules": [{**rule_doc, "playbook": None}]})
    rule = dataclasses.replace(config.rules[0], playbook=rule_doc.get("playbook"))
    return rule, config
