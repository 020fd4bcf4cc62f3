"""Every gate the registry asks refuses what its policy forbids, names the failing policy and
rule, and writes nothing; an approval that expired before the action does not count. Runs on
the workspace as wired (``ws.gate`` behind ``ws.models``), on every backend."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.errors import PolicyDeniedError
from loopline.core.models import ModelVersion

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
MODEL = LogisticRegression().fit(FRAME[["x"]], FRAME["y"])


def _policy(gate: str, targets: str, rule: str) -> str:
    return textwrap.dedent(f"""\
        kind: gate_policy
        name: guard-{gate.replace('_', '-')}
        applies_to: {{models: ["fraud"], gates: [{gate}]{targets}}}
        rules:
          - {rule}
        """)


OWNER = "{id: needs-owner, kind: required_metadata, fields: [owner]}"
REVIEW = "{id: security-review, kind: required_metadata, fields: [security_review]}"
RECALL = "{id: recall-floor, kind: metric, check: 'recall >= 0.9'}"
FAIR = "{id: fair, kind: slice_gap, metric: recall, slices: 'region=*', max_gap: 0.05}"
PROD = ", targets: [production]"


def _register(ws: Workspace, **options: Any) -> ModelVersion:
    options.setdefault("metrics", {"recall": 0.8, "slices": {"region=EU": {"recall": 0.9},
                                                             "region=US": {"recall": 0.7}}})
    return ws.models.register(MODEL, "fraud", input_example=FRAME[["x"]], **options)


# Each case: the policy, what the registry is asked, and the rule that must be named.
CASES: dict[str, tuple[str, Callable[[Workspace, ModelVersion], object], str]] = {
    "register": (_policy("register", "", OWNER),
                 lambda ws, v: _register(ws), "needs-owner"),
    "alias": (_policy("alias", PROD, RECALL),
              lambda ws, v: ws.models.set_alias("fraud", "production", v.version),
              "recall-floor"),
    "alias-fairness": (_policy("alias", PROD, FAIR),
                       lambda ws, v: ws.models.set_alias("fraud", "production", v.version),
                       "fair"),
    "delete_alias": (_policy("delete_alias", ", targets: [champion]", REVIEW),
                     lambda ws, v: ws.models.delete_alias("fraud", "champion"),
                     "security-review"),
    "status": (_policy("status", PROD, RECALL),
               lambda ws, v: ws.models.set_status(v.uri, "production"), "recall-floor"),
    "trust": (_policy("trust", "", REVIEW),
              lambda ws, v: ws.models.trust(v.uri, "we built it"), "security-review"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_gate_refuses_what_its_policy_forbids_naming_the_rule_and_writing_nothing(
        ws: Workspace, case: str) -> None:
    policy, action, rule = CASES[case]
    version = _register(ws, tags={"owner": "risk"})
    ws.models.set_alias("fraud", "champion", version.version)
    ws.policies.apply(ws.actor, {"guard.yaml": policy})
    head = ws.store.audit.head()
    with pytest.raises(PolicyDeniedError) as caught:
        action(ws, version)
    assert "policy 'guard-" in str(caught.value) and f"rule {rule!r} failed" in str(caught.value)
    assert ws.store.audit.head() == head  # nothing was written
    assert ws.models.get(version.uri).version.status == "candidate"
    assert [a.alias for a in ws.models.aliases("fraud")] == ["champion"]


FOUR_EYES = _policy("alias", PROD, "{id: one-approver, kind: approvals, count: 1, "
                                   "expires_after: 2d}")


@pytest.fixture
def clocked(db_url: str, tmp_path: Path) -> Iterator[tuple[Workspace, ManualClock]]:
    clock = ManualClock()
    workspace = Workspace.init(tmp_path / "clocked", overrides={"db_url": db_url},
                               clock=clock)
    try:
        yield workspace, clock
    finally:
        workspace.close()


def test_an_approval_that_expired_before_the_move_does_not_count(
        clocked: tuple[Workspace, ManualClock], tmp_path: Path) -> None:
    ws, clock = clocked
    version = _register(ws)
    ws.policies.apply(ws.actor, {"eyes.yaml": FOUR_EYES})
    reviewer = Workspace.open(ws.root, overrides={"db_url": ws.settings.db_url, "user": "ann"},
                              clock=clock)
    try:
        first = ws.approvals.request("fraud", version.version, "alias", "production", "ship")
        reviewer.approvals.approve(first.id, "ok")
        clock.advance(timedelta(days=3))  # past the policy's two days
        with pytest.raises(PolicyDeniedError, match="one-approver"):
            ws.models.set_alias("fraud", "production", version.version)
        second = ws.approvals.request("fraud", version.version, "alias", "production", "again")
        reviewer.approvals.approve(second.id, "ok")
        clock.advance(timedelta(days=1))  # within its two days: it counts
        ws.models.set_alias("fraud", "production", version.version)
    finally:
        reviewer.close()
