"""Monitoring config documents: what a full document becomes, its digest, and every kind of
mistake refused with the file, line and field named; rule records read back to the same rule;
rules judged and streaks counted."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from typing import Any

import pytest
import yaml

from loopline.core.canonical import hash_canonical
from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import (
    ActionKind,
    Comparison,
    DriftMethod,
    Evaluation,
    EvaluationStatus,
    Measurement,
    MonitorConfig,
    Severity,
    SignalKind,
)
from loopline.governance.policy_yaml import read_documents
from loopline.monitoring.config_yaml import (
    MAX_MESSAGE,
    QUARANTINE_TARGETS,
    STEP_PARAMS,
    format_duration,
    parse_config,
    parse_duration,
)
from loopline.monitoring.evaluator import judge, next_streak
from loopline.monitoring.rule_records import parse_rule_record, rule_record
from loopline.monitoring.windows import SETTLE, window_end

CONFIG = textwrap.dedent("""\
    drift:
      share: 0.4
      method: psi
      threshold: 0.25
      columns:
        amount: {method: wasserstein, threshold: 0.1}
    slices:
      eu: {region: [DE, FR]}
      adults: {age: {min: 18}}
    playbooks:
      recover:
        cooldown: 30m
        steps:
          - action: retrain
            pipeline: train
            requires_approval: true
          - action: notify
            url: https://hooks.example.com/x
    rules:
      - name: input-drift
        signal: dataset_drift
        deployment: fraud
        window: 15m
        threshold: 0.3
        for: 3
        severity: critical
        playbook: recover
      - name: amount-drift
        signal: column_drift
        deployment: fraud
        version: fraud/3
        column: amount
        threshold: 0.2
      - name: eu-accuracy
        signal: quality
        deployment: fraud
        slice: eu
        metric: accuracy
        baseline: training
        threshold: 0.05
        min_samples: 50
      - name: slow
        signal: latency
        deployment: fraud
        metric: p99
        window: 90s
        threshold: 250
      - name: quiet
        signal: throughput
        deployment: fraud
        comparison: below
        window: 1d
        threshold: 0.5
    """)


def _parse(text: str, file: str = "monitor.yaml") -> MonitorConfig:
    documents = list(read_documents(file, text))
    assert len(documents) == 1
    return parse_config(documents[0].data, documents[0].where)


def test_a_full_document_becomes_rules_playbooks_slices_and_drift_settings() -> None:
    config = _parse(CONFIG)
    drift, amount, quality, slow, quiet = config.rules
    assert (drift.signal, drift.window, drift.threshold, drift.for_count, drift.severity,
            drift.playbook) == (SignalKind.DATASET_DRIFT, timedelta(minutes=15), 0.3, 3,
                                Severity.CRITICAL, "recover")
    assert drift.scope.key == "fraud|*|*|*" and drift.min_samples == 100
    assert amount.scope.model_version == "models:/fraud/3" and amount.scope.column == "amount"
    assert (quality.scope.slice, quality.metric, quality.baseline, quality.min_samples) == (
        "eu", "accuracy", "training", 50)
    assert (slow.window, slow.metric, slow.comparison) == (timedelta(seconds=90), "p99",
                                                           Comparison.ABOVE)
    assert (quiet.comparison, quiet.window) == (Comparison.BELOW, timedelta(days=1))
    retrain, notify = config.playbooks["recover"].steps
    assert config.playbooks["recover"].cooldown == timedelta(minutes=30)
    assert (retrain.kind, dict(retrain.params), retrain.requires_approval) == (
        ActionKind.RETRAIN, {"pipeline": "train"}, True)
    assert (notify.kind, notify.requires_approval) == (ActionKind.NOTIFY, False)
    assert dict(config.slices["adults"].where) == {"age": {"min": 18}}
    assert config.drift.share == 0.4
    assert config.drift.spec("amount").method is DriftMethod.WASSERSTEIN
    assert (config.drift.spec("age").method, config.drift.spec("age").threshold) == (
        DriftMethod.PSI, 0.25)


def test_the_digest_is_of_the_document_not_its_layout() -> None:
    config = _parse(CONFIG)
    assert config.digest == hash_canonical(yaml.safe_load(CONFIG))
    flowed = yaml.safe_dump(yaml.safe_load(CONFIG), default_flow_style=True, sort_keys=True)
    assert _parse("# the same, written otherwise\n" + flowed).digest == config.digest
    assert _parse(CONFIG.replace("threshold: 0.3", "threshold: 0.31")).digest != config.digest


def test_an_empty_document_is_a_config_without_rules() -> None:
    config = parse_config(None)
    assert config.rules == () and config.digest == hash_canonical({})


BAD: list[tuple[str, str, str, str]] = [
    ("threshold: 0.3", "threshold: high", "monitor.yaml:24: rules[0].threshold",
     "must be a valid number, not 'high'"),
    ("for: 3", "for: 0", "monitor.yaml:25: rules[0].for", "0 must be a whole number from 1"),
    ("window: 15m", "window: 15", "monitor.yaml:23: rules[0].window", "15 is not a duration"),
    ("window: 15m", "window: 91d", "monitor.yaml:23: rules[0].window", "at most 90 days"),
    ("version: fraud/3", "version: fraud@prod", "monitor.yaml:31: rules[1].version",
     "names an alias"),
    ("metric: accuracy", "metric: acc", "monitor.yaml:38: rules[2].metric",
     "'acc' is not a quality metric"),
    ("metric: p99", "metric: p90", "monitor.yaml:45: rules[3].metric",
     "'p90' is not a latency percentile"),
    ("slice: eu", "slice: us", "monitor.yaml:37: rules[2].slice", "'us' is not a slice here"),
    ("playbook: recover", "playbook: panic", "monitor.yaml:27: rules[0].playbook",
     "'panic' is not a playbook here"),
    ("signal: dataset_drift", "signal: drift", "monitor.yaml:21: rules[0].signal",
     "must be 'dataset_drift', 'column_drift'"),
    ("severity: critical", "severity: loud", "monitor.yaml:26: rules[0].severity",
     "not 'loud'"),
    ("deployment: fraud\n    window: 15m", "deployment: fr/aud\n    window: 15m",
     "monitor.yaml:22: rules[0].deployment", "'fr/aud' must be 1-128 characters"),
    ("column: amount", "column: amount\n    colour: red", "monitor.yaml:33: rules[1].colour",
     "is not a known key; use name, signal, deployment"),
    ("amount: {method: wasserstein", "amount: {method: auto",
     "monitor.yaml:32: rules[1].column", "name it (drift.columns.amount.method"),
    ("cooldown: 30m", "cooldown: 1y", "monitor.yaml:12: playbooks.recover.cooldown",
     "'1y' is not a duration"),
    ("- action: retrain", "- action: retrian", "monitor.yaml:14: playbooks.recover.steps[0]"
     ".action", "not 'retrian'"),
    ("eu: {region: [DE, FR]}", "eu: {region: []}", "monitor.yaml:8: slices.eu.region",
     "is not a condition"),
    ("adults: {age: {min: 18}}", "adults: {age: {above: 18}}",
     "monitor.yaml:9: slices.adults.age", "is not a condition"),
    ("share: 0.4", "share: 1.5", "monitor.yaml:2: drift.share", "must be in (0, 1]"),
    ("  - name: amount-drift", "  - name: input-drift", "monitor.yaml:28: rules[1].name",
     "rule 'input-drift' is also rules[0]"),
    ("metric: p99", "metric: p99\n    column: x", "monitor.yaml:46: rules[3].column",
     "applies to column_drift rules only"),
    ("comparison: below", "comparison: under", "monitor.yaml:51: rules[4].comparison",
     "must be 'above' or 'below'"),
    ("rules:", "rulez:", "monitor.yaml:19: rulez", "is not a known key; use drift, slices"),
    ("baseline: training", "baseline: yesterday", "monitor.yaml:39: rules[2].baseline",
     "must be 'training' or absent"),
    ("url: https://hooks.example.com/x", "url: 2024-01-02",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "quote dates"),
    ("window: 15m", "window: 999999999d", "monitor.yaml:23: rules[0].window",
     "at most 90 days"),
    ("cooldown: 30m", "cooldown: 31d", "monitor.yaml:12: playbooks.recover.cooldown",
     "'31d' must be at most 30 days"),
    ("cooldown: 30m", "cooldown: 999999999d", "monitor.yaml:12: playbooks.recover.cooldown",
     "must be at most 30 days"),
    # step parameters: exactly what each action reads
    ("pipeline: train", "pipline: train", "monitor.yaml:15: playbooks.recover.steps[0]"
     ".pipline", "is not a parameter of a retrain step; use pipeline, parameters, canary"),
    ("pipeline: train", "canary: true", "monitor.yaml:14: playbooks.recover.steps[0]"
     ".pipeline", "is required for a retrain step"),
    ("pipeline: train", "pipeline: 42", "monitor.yaml:15: playbooks.recover.steps[0]"
     ".pipeline", "must be 1-128 characters"),
    ("pipeline: train", "pipeline: train\n        canary: yes please",
     "monitor.yaml:16: playbooks.recover.steps[0].canary", "must be true or false"),
    ("pipeline: train", "pipeline: train\n        parameters: [1, 2]",
     "monitor.yaml:16: playbooks.recover.steps[0].parameters", "must be a mapping"),
    ("pipeline: train", "pipeline: train\n        cooldown: off-ish",
     "monitor.yaml:16: playbooks.recover.steps[0].cooldown", "must be true or false"),
    ("pipeline: train", "pipeline: train\n        reason: '  '",
     "monitor.yaml:16: playbooks.recover.steps[0].reason", "must not be blank"),
    ("- action: notify", "- action: quarantine\n        target: everything",
     "monitor.yaml:18: playbooks.recover.steps[1].target", "'everything' must be one of "
     "alert, canary, primary"),
    ("url: https://hooks.example.com/x", "url: ftp://hooks.example.com/x",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "must be an http:// or https:// URL"),
    ("url: https://hooks.example.com/x", "url: https:///x",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "names no host"),
    ("url: https://hooks.example.com/x", "url: 'http://[::1'",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "is not a valid URL"),
    ("url: https://hooks.example.com/x", "url: http://169.254.169.254/latest",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "169.254.169.254"),
    ("url: https://hooks.example.com/x", "url: 'https://user:token@hooks.example.com/x'",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "user"),
    ("url: https://hooks.example.com/x", "url: http://0x7f000001/x",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "dotted"),
    ("url: https://hooks.example.com/x", "url:",
     "monitor.yaml:18: playbooks.recover.steps[1].url", "has no value"),
    ("url: https://hooks.example.com/x", "message: " + "x" * 2001,
     "monitor.yaml:18: playbooks.recover.steps[1].message", "at most 2000 characters"),
    ("url: https://hooks.example.com/x", "target: canary",
     "monitor.yaml:18: playbooks.recover.steps[1].target", "is not a parameter of a notify "
     "step; use url, message, cooldown"),
    ("- action: notify", "- action: rollback\n        pipeline: train",
     "monitor.yaml:18: playbooks.recover.steps[1].pipeline", "is not a parameter of a "
     "rollback step; use reason, cooldown"),
]


@pytest.mark.parametrize(("old", "new", "where", "problem"), BAD,
                         ids=[case[2].split(": ", 1)[1] for case in BAD])
def test_a_mistake_is_refused_naming_file_line_and_field(old: str, new: str, where: str,
                                                         problem: str) -> None:
    assert old in CONFIG
    with pytest.raises(InvalidArgumentError) as refused:
        _parse(CONFIG.replace(old, new, 1))
    assert refused.value.field == where
    assert problem in refused.value.problem


def test_every_step_parameter_the_actions_read_is_accepted() -> None:
    from loopline.automation import governing, notify

    assert QUARANTINE_TARGETS == governing.TARGETS and MAX_MESSAGE == notify.MAX_MESSAGE
    steps = [{"action": "retrain", "pipeline": "train", "parameters": {"rows": 5},
              "canary": True, "reason": "drifted", "cooldown": False},
             {"action": "rollback", "reason": "bad", "cooldown": True},
             *({"action": "quarantine", "target": target, "reason": "bad"}
               for target in QUARANTINE_TARGETS),
             {"action": "notify", "url": "http://hooks.test:8080/a?b=c", "message": "hi",
              "cooldown": False},
             {"action": "notify"}]
    config = parse_config({"playbooks": {"all": {"steps": steps, "cooldown": "30d"}}})
    playbook = config.playbooks["all"]
    assert playbook.cooldown == timedelta(days=30)
    assert [dict(step.params) for step in playbook.steps] == [
        {key: value for key, value in step.items() if key != "action"} for step in steps]
    assert set(STEP_PARAMS) == set(ActionKind)


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="a monitor config is a mapping"):
        _parse("- name: x\n")


def test_without_a_file_errors_name_the_path() -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        parse_config({"rules": [{"name": "x", "signal": "error_rate", "deployment": "d"}]})
    assert (refused.value.field, refused.value.problem) == ("rules[0].threshold",
                                                            "is required")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600),
                                                ("2d", 172800), (" 5 m ", 300)])
def test_durations_read_and_write_back(text: str, seconds: int) -> None:
    value = parse_duration(text, "window")
    assert value == timedelta(seconds=seconds)
    assert parse_duration(format_duration(value), "window") == value


@pytest.mark.parametrize("text", ["15", "1w", "1.5h", "h", "", "15 minutes"])
def test_a_duration_without_a_known_unit_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a duration"):
        parse_duration(text, "window")


def test_a_rule_record_reads_back_to_the_same_rule_and_settings() -> None:
    config = _parse(CONFIG)
    for rule in config.rules:
        record = rule_record(rule, config)
        back, settings = parse_rule_record(record)
        assert back == rule
        assert settings.drift == config.drift
        if rule.scope.slice is not None:
            assert settings.slices[rule.scope.slice] == config.slices[rule.scope.slice]
    assert rule_record(config.rules[2], config)["slices"] == {"eu": {"region": ["DE", "FR"]}}


def test_a_broken_rule_record_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="holds no rule"):
        parse_rule_record({"drift": {}})


def _rule(**changes: Any) -> Any:
    base = {"name": "r", "signal": "error_rate", "deployment": "d", "threshold": 0.1,
            "min_samples": 10}
    return parse_config({"rules": [{**base, **changes}]}).rules[0]


def test_judging_needs_a_value_and_enough_samples_and_breaches_on_the_rule_side() -> None:
    above, below = _rule(), _rule(comparison="below")
    assert judge(above, Measurement(0.2, 9)) is EvaluationStatus.INSUFFICIENT
    assert judge(above, Measurement(None, 1000)) is EvaluationStatus.INSUFFICIENT
    assert judge(above, Measurement(0.2, 10)) is EvaluationStatus.BREACHED
    assert judge(above, Measurement(0.1, 10)) is EvaluationStatus.OK
    assert judge(below, Measurement(0.05, 10)) is EvaluationStatus.BREACHED
    assert judge(below, Measurement(0.2, 10)) is EvaluationStatus.OK
    quiet = _rule(signal="throughput", comparison="below", threshold=1, min_samples=100)
    assert judge(quiet, Measurement(0.0, 0)) is EvaluationStatus.BREACHED  # no traffic
    assert judge(quiet, Measurement(None, 0)) is EvaluationStatus.INSUFFICIENT


def _evaluation(status: EvaluationStatus, end: Any, digest: str = "d1",
                streak: int = 1) -> Evaluation:
    return Evaluation(id="e", rule="r", scope_key="d|*|*|*", deployment="d",
                      signal=SignalKind.ERROR_RATE, window_start=end - timedelta(minutes=15),
                      window_end=end, value=0.5, samples=10, status=status, streak=streak,
                      rule_record={"rule": digest}, numbers={}, config_digest=digest,
                      evaluated_at=end)


def test_the_streak_grows_only_over_breaches_in_a_row() -> None:
    from datetime import UTC, datetime

    rule, end = _rule(window="15m"), datetime(2026, 1, 1, 10, tzinfo=UTC)
    breached = EvaluationStatus.BREACHED
    for status in EvaluationStatus:
        expected = 1 if status is breached else 0
        assert next_streak(None, status, rule, end, {"rule": "d1"}) == expected
    before = _evaluation(breached, end - timedelta(minutes=1), streak=4)
    assert next_streak(before, breached, rule, end, {"rule": "d1"}) == 5
    assert next_streak(before, EvaluationStatus.OK, rule, end, {"rule": "d1"}) == 0
    assert next_streak(_evaluation(breached, end - timedelta(minutes=15), streak=4), breached,
                       rule, end, {"rule": "d1"}) == 5  # the windows touch
    assert next_streak(_evaluation(breached, end - timedelta(minutes=16), streak=4), breached,
                       rule, end, {"rule": "d1"}) == 1  # a gap: a new streak
    assert next_streak(before, breached, rule, end, {"rule": "d2"}) == 1  # the rule changed
    assert next_streak(_evaluation(EvaluationStatus.INSUFFICIENT, before.window_end, streak=0),
                       breached, rule, end, {"rule": "d1"}) == 1
    short = _rule(window="30s")  # evaluated each minute: a skipped minute keeps the streak
    assert next_streak(_evaluation(breached, end - timedelta(minutes=2), streak=2), breached,
                       short, end, {"rule": "d1"}) == 3
    assert next_streak(_evaluation(breached, end - timedelta(minutes=3), streak=2), breached,
                       short, end, {"rule": "d1"}) == 1


def test_a_window_ends_on_the_whole_minute_before_the_settle_time() -> None:
    from datetime import UTC, datetime
    assert timedelta(seconds=15) == SETTLE
    assert window_end(datetime(2026, 1, 1, 10, 7, 59, 999, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 7, tzinfo=UTC)
    assert window_end(datetime(2026, 1, 1, 10, 7, 15, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 7, tzinfo=UTC)
    assert window_end(datetime(2026, 1, 1, 10, 7, 14, 999, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 6, tzinfo=UTC)
    assert window_end(datetime(2026, 1, 1, 10, 7, 14, tzinfo=UTC), timedelta(0)) == datetime(
        2026, 1, 1, 10, 7, tzinfo=UTC)
    with pytest.raises(InvalidArgumentError, match="settle"):
        window_end(datetime(2026, 1, 1, tzinfo=UTC), timedelta(seconds=-1))
    with pytest.raises(InvalidArgumentError, match="now"):
        window_end(datetime(2026, 1, 1))  # noqa: DTZ001 - a naive time is what is refused
