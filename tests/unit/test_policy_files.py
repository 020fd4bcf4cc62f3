"""Policy files: a whole set is checked on load, and every error names its file and line."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.canonical import hash_canonical
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.governance.policy_files import (
    EMPTY_POLICY_SET,
    load_policy_set,
    read_policy_dir,
    validate_document,
)
from loopline.governance.policy_model import (
    OPS,
    ApprovalsRule,
    LineageCompleteRule,
    MetricCondition,
    MetricRule,
    RequiredMetadataRule,
    SliceGapRule,
    parse_check,
)
from loopline.governance.policy_yaml import MAX_FILE_BYTES, SourceDocument, locate

FULL = """\
kind: gate_policy
name: production-readiness
description: what it is for
applies_to:
  models: ["fraud-*"]
  gates: [alias, status, deploy]
  targets: [production]
rules:
  - id: card
    kind: required_metadata
    fields: [owner, intended_use, limitations, description]
  - id: lineage
    kind: lineage_complete
    clean_code: true
  - id: recall-eu
    kind: metric
    check: "recall >= 0.8 on slice region=EU"
  - id: auc
    kind: metric
    metric: auc
    op: ">"
    value: 0.9
  - id: fairness
    kind: slice_gap
    metric: recall
    slices: "region=*"
    max_gap: 0.05
  - id: encrypted
    kind: encryption
  - id: four-eyes
    kind: approvals
    count: 2
    expires_after: 7d
---
kind: retention
name: default
classes:
  prediction_log: {max_age: 90d}
  dataset_snapshots: {max_age: 180d}
"""


def policy(rules: str, name: str = "p", gates: str = "[alias]") -> str:
    """Return a gate policy document whose rules start on line 5."""
    return f"kind: gate_policy\nname: {name}\napplies_to: {{gates: {gates}}}\nrules:\n{rules}"


def refusal(files: dict[str, str]) -> InvalidArgumentError:
    with pytest.raises(InvalidArgumentError) as caught:
        load_policy_set(files)
    return caught.value


def test_full_example_loads_every_rule_kind_and_the_retention_document() -> None:
    policy_set = load_policy_set({"prod.yaml": FULL})

    (gate_policy,) = policy_set.gate_policies
    assert gate_policy.name == "production-readiness"
    assert gate_policy.applies_to.models == ["fraud-*"]
    assert gate_policy.applies_to.targets == ["production"]
    kinds = [type(rule) for rule in gate_policy.rules]
    assert kinds[:5] == [RequiredMetadataRule, LineageCompleteRule, MetricRule, MetricRule,
                         SliceGapRule]
    lineage = gate_policy.rules[1]
    assert isinstance(lineage, LineageCompleteRule)
    assert (lineage.validated_datasets, lineage.clean_code, lineage.environment) == (
        True, True, True)
    recall, auc = gate_policy.rules[2], gate_policy.rules[3]
    assert isinstance(recall, MetricRule) and isinstance(auc, MetricRule)
    assert recall.condition == MetricCondition("recall", ">=", 0.8, "region=EU")
    assert auc.condition == MetricCondition("auc", ">", 0.9, None)
    approvals = gate_policy.rules[6]
    assert isinstance(approvals, ApprovalsRule)
    assert (approvals.count, approvals.expires_after) == (2, timedelta(days=7))
    assert policy_set.retention is not None and policy_set.retention.name == "default"
    assert policy_set.files == {"prod.yaml": FULL}


def test_applies_to_defaults_to_every_model_and_any_target() -> None:
    (gate_policy,) = load_policy_set(
        {"a.yaml": policy("  - {id: e, kind: encryption}\n")}).gate_policies

    assert gate_policy.applies_to.models == ["*"]
    assert gate_policy.applies_to.targets == []


def test_digest_is_stable_for_the_same_files_and_changes_with_one_byte() -> None:
    first = load_policy_set({"a.yaml": FULL, "b.yaml": policy("  - {id: e, kind: encryption}")})
    again = load_policy_set({"b.yaml": policy("  - {id: e, kind: encryption}"), "a.yaml": FULL})
    changed = load_policy_set({"a.yaml": FULL + " ",
                               "b.yaml": policy("  - {id: e, kind: encryption}")})
    renamed = load_policy_set({"c.yaml": FULL, "b.yaml": policy("  - {id: e, kind: encryption}")})

    assert first.digest == again.digest
    assert first.digest == hash_canonical(
        {"a.yaml": FULL, "b.yaml": policy("  - {id: e, kind: encryption}")})
    assert changed.digest != first.digest
    assert renamed.digest != first.digest


def test_empty_policy_set_has_no_policies_and_the_digest_of_no_files() -> None:
    assert EMPTY_POLICY_SET.gate_policies == ()
    assert EMPTY_POLICY_SET.retention is None
    assert EMPTY_POLICY_SET.digest == hash_canonical({})


def test_documents_keep_file_then_document_order_and_empty_documents_are_skipped() -> None:
    two = policy("  - {id: e, kind: encryption}\n", name="second") + "---\n" + policy(
        "  - {id: e, kind: encryption}\n", name="third") + "---\n"
    policy_set = load_policy_set({"b.yaml": two, "a.yaml": policy(
        "  - {id: e, kind: encryption}\n", name="first"), "c.yaml": "# nothing yet\n"})

    assert [p.name for p in policy_set.gate_policies] == ["first", "second", "third"]


MALFORMED = [
    pytest.param(policy("  - id: a\n    kind: metric\n    check: recall >= 0.8\n    colour: red\n"),
                 "p.yaml:8: rules[0].colour", "is not a known key; use id, check, metric",
                 id="unknown-key"),
    pytest.param(policy("  - id: a\n    kind: encryption\n  - id: b\n    kind: bogus\n"),
                 "p.yaml:8: rules[1].kind",
                 "'bogus' is not a rule kind; use one of required_metadata, lineage_complete, "
                 "metric, slice_gap, encryption, approvals", id="unknown-rule-kind"),
    pytest.param(policy("  - id: a\n", gates="[alias]"), "p.yaml:5: rules[0].kind",
                 "is required; use one of required_metadata", id="rule-without-kind"),
    pytest.param(policy("  - {id: a, kind: encryption}\n", gates="[alias, launch]"),
                 "p.yaml:3: applies_to.gates[1]",
                 "'launch' is not a gate; use one of register, alias, delete_alias, status, "
                 "trust, deploy, rollout_step, playbook_action", id="unknown-gate"),
    pytest.param(policy("  - {id: a, kind: encryption}\n", gates="[]"),
                 "p.yaml:3: applies_to.gates", "must have at least 1 item", id="empty-gates"),
    pytest.param(policy("  - id: a\n    kind: encryption\n  - id: b\n    kind: metric\n"
                        "    check: recall >== 0.8\n"),
                 "p.yaml:9: rules[1].check", "'recall >== 0.8' is not a check", id="bad-check"),
    pytest.param(policy("  - id: a\n    kind: metric\n    metric: recall\n    op: '>='\n"
                        "    value: high\n"),
                 "p.yaml:9: rules[0].value", "must be a valid number, not 'high'",
                 id="value-not-a-number"),
    pytest.param(policy("  - id: a\n    kind: metric\n    metric: recall\n    op: '=>'\n"
                        "    value: 0.8\n"),
                 "p.yaml:8: rules[0].op", "'>='", id="unknown-op"),
    pytest.param(policy("  - id: a\n    kind: metric\n    metric: recall\n    op: '>='\n"),
                 "p.yaml:5: rules[0]", "metric, op and value (missing value)",
                 id="structured-metric-incomplete"),
    pytest.param(policy("  - id: a\n    kind: metric\n    check: recall >= 0.8\n"
                        "    metric: recall\n"),
                 "p.yaml:5: rules[0]", "either check or metric, not both", id="both-forms"),
    pytest.param(policy("  - id: a\n    kind: approvals\n    count: -1\n"),
                 "p.yaml:7: rules[0].count", "greater than or equal to 1, not -1",
                 id="negative-count"),
    pytest.param(policy("  - id: a\n    kind: approvals\n    count: yes\n"),
                 "p.yaml:7: rules[0].count", "valid integer", id="boolean-count"),
    pytest.param(policy("  - id: a\n    kind: approvals\n    count: 2\n    expires_after: 7x\n"),
                 "p.yaml:8: rules[0].expires_after", "'7x' is not a duration",
                 id="bad-expiry"),
    pytest.param(policy("  - {id: a, kind: slice_gap, metric: recall, slices: '*',"
                        " max_gap: -0.1}\n"),
                 "p.yaml:5: rules[0].max_gap", "greater than or equal to 0, not -0.1",
                 id="negative-max-gap"),
    pytest.param(policy("  - id: a\n    kind: encryption\n  - id: a\n    kind: encryption\n"),
                 "p.yaml:7: rules[1].id", "rule id 'a' is used twice in policy 'p' "
                 "(also rules[0])", id="duplicate-rule-id"),
    pytest.param(policy("  - {id: a, kind: approvals, count: 1}\n", gates="[alias, register]"),
                 "p.yaml:4: rules", "rules[0] ('a') is an approvals rule, which cannot apply "
                 "to gate register: an approval request needs an existing version, and a "
                 "registration has none yet; approvals apply to alias, delete_alias, status, "
                 "trust, deploy, rollout_step, playbook_action", id="approvals-at-registration"),
    pytest.param(policy("  - {id: a, kind: encryption}\n",
                        gates="[register], targets: [production]"),
                 "p.yaml:3: applies_to.targets", "gate register never carries a target, so a "
                 "policy with targets would never apply to it", id="targets-on-register"),
    pytest.param(policy("  - {id: a, kind: encryption}\n",
                        gates="[register, trust], targets: [production]"),
                 "p.yaml:3: applies_to.targets", "gates register, trust never carry a target",
                 id="targets-on-register-and-trust"),
    pytest.param(policy("  - {id: a, kind: encryption}\n",
                        gates="[alias, register], targets: [production]"),
                 "p.yaml:3: applies_to.targets", "gate register never carries a target",
                 id="targets-with-register-among-other-gates"),
    pytest.param(policy("  - {id: a, kind: encryption}\n",
                        gates="[status], targets: [Production, staging, live]"),
                 "p.yaml:3: applies_to.targets", "'Production', 'live' are not a model status;"
                 " the targets of a status gate are the new status, one of candidate, staging, "
                 "production, archived, quarantined", id="status-target-not-a-status"),
    pytest.param(policy("  - {id: a, kind: encryption}\n", name="no spaces"),
                 "p.yaml:2: name", "'no spaces' must be 1-128 characters", id="bad-name"),
    pytest.param("kind: gate_policy\nname: p\nname: q\n", "p.yaml:3: name",
                 "the key appears twice (also line 2)", id="duplicate-key"),
    pytest.param("kind: gate_policy\nname: p\nrules: [a, b\n", "p.yaml:4",
                 "is not valid YAML", id="yaml-syntax"),
    pytest.param("kind: gate_policy\nname: p\n  bad: indent\n", "p.yaml:3",
                 "is not valid YAML", id="yaml-indentation"),
    pytest.param("kind: gate_policy\nname: p\ndescription: [a, 2024-13-45]\n", "p.yaml:3",
                 "'2024-13-45' cannot be read as timestamp", id="bad-implicit-date"),
    pytest.param("name: p\n", "p.yaml:1: kind", "is required; use one of gate_policy, "
                 "retention", id="missing-kind"),
    pytest.param("name: p\nkind: playbook\n", "p.yaml:2: kind",
                 "'playbook' is not a policy kind", id="unknown-kind"),
    pytest.param("- a\n- b\n", "p.yaml:1", "must be a mapping", id="not-a-mapping"),
    pytest.param("kind: gate_policy\nname: p\nrules: []\n", "p.yaml:1: applies_to",
                 "is required", id="missing-applies-to"),
    pytest.param("kind: gate_policy\nname: p\napplies_to: {gates: [alias]}\nrules: []\n",
                 "p.yaml:4: rules", "must have at least 1 item", id="no-rules"),
    pytest.param("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                 "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                 "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
                 "p.yaml:5", "expands to more than", id="alias-bomb"),
]


@pytest.mark.parametrize(("text", "field", "problem"), MALFORMED)
def test_malformed_policy_file_is_refused_naming_file_line_and_path(
        text: str, field: str, problem: str) -> None:
    error = refusal({"p.yaml": text})

    assert error.field == field
    assert problem in error.problem


@pytest.mark.parametrize(("gates", "targets"), [
    ("[status]", ["production", "archived"]),
    ("[alias, status]", ["Production", "blue"]),
    ("[status, deploy]", ["canary"]),
    ("[register, trust]", []),
])
def test_targets_a_gate_can_carry_are_accepted(gates: str, targets: list[str]) -> None:
    text = policy("  - {id: a, kind: encryption}\n",
                  gates=f"{gates}, targets: [{', '.join(targets)}]")

    (gate_policy,) = load_policy_set({"p.yaml": text}).gate_policies

    assert gate_policy.applies_to.targets == targets


@pytest.mark.parametrize("gates", ["[alias]", "[delete_alias]", "[status]", "[trust]",
                                   "[deploy]", "[rollout_step]",
                                   "[alias, delete_alias, status, trust, deploy, rollout_step]"])
def test_approvals_rule_is_accepted_on_every_gate_but_register(gates: str) -> None:
    text = policy("  - {id: a, kind: approvals, count: 1}\n", gates=gates)

    (gate_policy,) = load_policy_set({"p.yaml": text}).gate_policies

    assert isinstance(gate_policy.rules[0], ApprovalsRule)


def test_approvals_rule_with_register_is_refused_wherever_it_sits_in_the_rules() -> None:
    text = policy("  - {id: card, kind: required_metadata, fields: [owner]}\n"
                  "  - {id: four-eyes, kind: approvals, count: 2}\n", gates="[register]")

    error = refusal({"p.yaml": text})

    assert error.field == "p.yaml:4: rules"
    assert error.problem.startswith("rules[1] ('four-eyes') is an approvals rule")


def test_retention_document_error_names_file_line_and_class() -> None:
    error = refusal({"keep.yaml": "kind: retention\nname: r\nclasses:\n"
                                  "  prediction_log: {max_age: 9q}\n"})

    assert error.field == "keep.yaml:4: classes.prediction_log.max_age"
    assert "'9q' is not a duration" in error.problem


def test_duplicate_policy_name_across_files_names_both_places() -> None:
    rules = "  - {id: a, kind: encryption}\n"
    error = refusal({"a.yaml": policy(rules, name="prod"), "b.yaml": policy(rules, name="prod")})

    assert error.field == "b.yaml:2: name"
    assert error.problem == "policy 'prod' is also defined at a.yaml:2: name"


def test_second_retention_document_is_refused_naming_both_files() -> None:
    retention = "kind: retention\nname: {}\nclasses: {{run_logs: {{max_age: 30d}}}}\n"
    error = refusal({"a.yaml": retention.format("one"), "b.yaml": retention.format("two")})

    assert error.field == "b.yaml:1"
    assert "a.yaml" in error.problem and "b.yaml" in error.problem
    assert "at most one retention document" in error.problem


def test_more_than_a_thousand_rules_in_a_set_are_refused() -> None:
    rules = "".join(f"  - {{id: r{i}, kind: encryption}}\n" for i in range(600))
    error = refusal({"a.yaml": policy(rules, name="one"), "b.yaml": policy(rules, name="two")})

    assert error.field == "b.yaml:4: rules"
    assert "more than 1000 rules" in error.problem


def test_file_larger_than_one_mebibyte_is_refused() -> None:
    text = policy("  - {id: a, kind: encryption}\n") + "#" * MAX_FILE_BYTES

    error = refusal({"big.yaml": text})

    assert error.field == "big.yaml"
    assert "limit" in error.problem


def test_several_problems_are_reported_together_with_the_first_as_the_field() -> None:
    error = refusal({"p.yaml": policy("  - id: a\n    kind: approvals\n    count: 0\n"
                                      "    expires_after: 0d\n")})

    assert error.field == "p.yaml:7: rules[0].count"
    assert "also p.yaml:8: rules[0].expires_after" in error.problem


def test_validate_document_maps_errors_of_any_model_to_file_and_line() -> None:
    import yaml

    from loopline.governance.retention_policy import RetentionPolicy

    text = "kind: retention\nname: r\nclasses:\n  run_logs: {max_age: 30d, min_age: 1d}\n"
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    document = SourceDocument("r.yaml", node, yaml.safe_load(text))

    with pytest.raises(InvalidArgumentError) as caught:
        validate_document(RetentionPolicy, document)

    assert caught.value.field == "r.yaml:4: classes.run_logs.min_age"


@given(metric=st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.:/-]{0,20}\Z"),
       op=st.sampled_from(OPS),
       value=st.floats(allow_nan=False, allow_infinity=False),
       slice_=st.none() | st.from_regex(r"\A[A-Za-z0-9_=.*-]([A-Za-z0-9_= .*-]{0,20}"
                                         r"[A-Za-z0-9_=.*-])?\Z"))
@settings(max_examples=200)
def test_check_expression_round_trips_through_text(
        metric: str, op: str, value: float, slice_: str | None) -> None:
    condition = MetricCondition(metric, op, value, slice_)

    assert parse_check(condition.as_text()) == condition


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_check_parser_raises_only_value_error_on_any_text(text: str) -> None:
    try:
        condition = parse_check(text)
    except ValueError:
        return
    assert parse_check(condition.as_text()) == condition


@pytest.mark.parametrize(("text", "expected"), [
    ("recall >= 0.8", MetricCondition("recall", ">=", 0.8)),
    ("  loss<0.25  ", MetricCondition("loss", "<", 0.25)),
    ("val/auc == 1", MetricCondition("val/auc", "==", 1.0)),
    ("recall >= 0.8\n", MetricCondition("recall", ">=", 0.8)),
    ("recall > -1e-3 on slice region=EU", MetricCondition("recall", ">", -0.001, "region=EU")),
    ("f1 <= .5 on slice country=United States",
     MetricCondition("f1", "<=", 0.5, "country=United States")),
])
def test_check_expression_parses(text: str, expected: MetricCondition) -> None:
    assert parse_check(text) == expected


@pytest.mark.parametrize("text", ["recall >== 0.8", "recall => 0.8", "recall >= ", ">= 0.8",
                                  "recall >= 0.8 on region=EU", "recall >= 0.8 on slice",
                                  "recall >= inf", "recall >= 0.8\non slice x", "recall 0.8"])
def test_check_expression_that_does_not_parse_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a check"):
        parse_check(text)


def test_read_policy_dir_reads_yaml_files_directly_in_the_folder_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("b: 1\n")
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "notes.txt").write_text("not a policy\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "c.yaml").write_text("c: 1\n")

    files = read_policy_dir(tmp_path)

    assert list(files) == ["a.yaml", "b.yml"]
    assert files["a.yaml"] == "a: 1\n"


def test_read_policy_dir_matches_the_suffix_in_any_case(tmp_path: Path) -> None:
    (tmp_path / "prod.YAML").write_text("a: 1\n")
    (tmp_path / "stage.Yml").write_text("b: 1\n")
    (tmp_path / "notes.YAMLX").write_text("c: 1\n")

    assert list(read_policy_dir(tmp_path)) == ["prod.YAML", "stage.Yml"]


def test_locate_names_the_line_of_the_deepest_node_that_exists() -> None:
    import yaml

    node = yaml.compose("a: 1\nrules:\n  - id: x\n    value: 2\n", Loader=yaml.SafeLoader)

    assert locate(node, ("rules", 0, "value")) == (4, "rules[0].value")
    assert locate(node, ("rules", 5, "value")) == (2, "rules[5].value")
    assert locate(node, ()) == (1, "")


def test_read_policy_dir_of_a_missing_folder_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="policy folder"):
        read_policy_dir(tmp_path / "policies")


def test_read_policy_dir_refuses_a_symbolic_link(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("kind: retention\n")
    os.symlink(tmp_path / "real.txt", tmp_path / "link.yaml")

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        read_policy_dir(tmp_path)


def test_read_policy_dir_refuses_a_file_over_one_mebibyte(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))

    with pytest.raises(InvalidArgumentError, match="larger than"):
        read_policy_dir(tmp_path)


def test_read_policy_dir_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")

    with pytest.raises(InvalidArgumentError, match="not UTF-8"):
        read_policy_dir(tmp_path)


def test_read_policy_dir_of_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")

    with pytest.raises(InvalidArgumentError, match="not a folder"):
        read_policy_dir(tmp_path / "a.yaml")


def test_parse_gate_action_returns_the_gate_or_names_the_field_and_lists_the_gates() -> None:
    from loopline.core.gates import GateAction, parse_gate_action

    assert parse_gate_action("rollout_step") is GateAction.ROLLOUT_STEP
    with pytest.raises(InvalidArgumentError) as caught:
        parse_gate_action("launch", "--gate")
    assert caught.value.field == "--gate"
    assert caught.value.problem == ("'launch' is not a gate; use one of register, alias, "
                                    "delete_alias, status, trust, deploy, rollout_step, "
                                    "playbook_action")
    with pytest.raises(InvalidArgumentError) as default:
        parse_gate_action("Alias")
    assert default.value.field == "gate"


@pytest.mark.parametrize("text", ["name: a\x03b\n", "\x00", "rules: [\x1b]\n"])
def test_a_control_character_is_refused_naming_the_file(text: str) -> None:
    from loopline.governance.policy_yaml import read_documents

    with pytest.raises(InvalidArgumentError, match="is not valid YAML") as refused:
        list(read_documents("odd.yaml", text))
    assert refused.value.field == "odd.yaml"
