"""``loopline governance report``: the JSON record, the table naming failing versions, a
seeded sample, and a bad sample size refused. In-process (``cli.main.run``) on every backend;
the command only reads, so a subprocess would prove nothing more."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from cli_runner import InProcessCli, WorkspaceCli

from loopline.app import Workspace
from loopline.core.models import NewModelVersion

POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: model-card
    applies_to:
      gates: [register]
    rules:
      - id: owner
        kind: required_metadata
        fields: [owner]
    ---
    kind: gate_policy
    name: production-readiness
    applies_to:
      gates: [alias]
      targets: [production]
    rules:
      - id: recall-eu
        kind: metric
        check: "recall >= 0.8 on slice region=EU"
    """)


def _register(ws: Workspace, name: str, recall_eu: float, tags: dict[str, Any]) -> None:
    digest = ws._blobs.put_bytes(f"{name} {recall_eu} {tags}".encode()).digest
    ws.models.record_version(NewModelVersion(
        name=name, artifact_digest=digest, flavor="python", tags=tags,
        metrics={"recall": 0.9, "slices": {"region=EU": {"recall": recall_eu}}}), ())


@pytest.fixture
def cli(ws: Workspace, db_url: str, run_cli: InProcessCli) -> WorkspaceCli:
    """Three versions, two planted violations, the policy applied after they got in."""
    _register(ws, "fraud", 0.85, {"owner": "ann"})
    _register(ws, "fraud", 0.85, {"intended_use": "screening"})  # fraud/2: no owner
    _register(ws, "churn", 0.72, {"owner": "bob"})  # churn/1: in production, too low
    ws.models.set_alias("fraud", "production", 1)
    ws.models.set_alias("churn", "production", 1)
    ws.policies.apply("tester", {"p.yaml": POLICY})
    return WorkspaceCli(ws, db_url, run_cli)


def test_report_json_prints_the_record_with_rates_and_the_failing_versions(
        cli: WorkspaceCli) -> None:
    code, out, err = cli("governance", "report", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["population"], record["examined"], record["in_use"]) == (3, 3, 2)
    assert record["violation_rate"] == round(2 / 3, 4)
    assert record["in_use_violation_rate"] == 0.5
    assert record["policy_set"] == cli.ws.policies.active().digest
    assert record["missing_counts"]["owner"] == 1 and record["missing_counts"]["run"] == 3
    violations = {item["uri"]: [(v["policy"], v["rule"]) for v in item["violations"]]
                  for item in record["failing"]}
    assert violations == {"models:/churn/1": [("production-readiness", "recall-eu")],
                          "models:/fraud/1": [],
                          "models:/fraud/2": [("model-card", "owner")]}


def test_report_table_names_the_failing_versions_and_why(cli: WorkspaceCli) -> None:
    code, out, err = cli("governance", "report")
    assert code == 0, err
    assert "models:/churn/1" in out and "models:/fraud/2" in out
    assert "production-readiness/recall-eu" in out and "recall on slice region=EU is 0.72" in out
    assert "model-card/owner: missing owner" in out
    assert "66.7%" in out  # versions violating a policy


def test_report_samples_with_a_seed_and_refuses_a_sample_of_zero(cli: WorkspaceCli) -> None:
    code, out, err = cli("governance", "report", "--sample", "2", "--seed", "5", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["population"], first["examined"]) == (3, 2)
    again = json.loads(cli("governance", "report", "--sample", "2", "--seed", "5", "--json")[1])
    assert again["failing"] == first["failing"]
    code, out, err = cli("governance", "report", "--sample", "0")
    assert code == 5 and "sample" in err and out == ""


def test_report_without_a_policy_says_none_is_in_force(
        ws: Workspace, db_url: str, run_cli: InProcessCli) -> None:
    _register(ws, "fraud", 0.72, {})
    code, out, err = WorkspaceCli(ws, db_url, run_cli)("governance", "report")
    assert code == 0, err
    assert "none in force" in out and "0.0%" in out and "models:/fraud/1" in out
