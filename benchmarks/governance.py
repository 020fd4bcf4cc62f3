"""Benchmark governance: policy evaluation per gate decision, gated actions, the report.

Prints one JSON document on stdout (progress goes to stderr). In one run:

    evaluation  a generated policy set of 50 rules (five policies of ten: required metadata,
                lineage complete, metrics overall and on slices, slice gaps, encryption,
                approvals), all governing ``alias`` to ``production``: the time to load it
                (``load_policy_set``), and pure ``engine.evaluate(policy_set, facts)`` per
                decision, interleaved with a hand-written Python function making the same 50
                comparisons on the same facts (the floor of any evaluator)
    gated       on SQLite and, when a URL is given, PostgreSQL (a private schema ``lb_<hex>``,
                dropped afterwards): ``ws.models.set_alias`` moving ``production`` between two
                versions in an encrypting workspace with the 50-rule set applied, interleaved
                with the same moves in a twin workspace with no policy (whose gate skips
                fact gathering); and ``ws.gate.check`` alone (authorisation, fact gathering,
                evaluation) and ``ws.facts.gather`` alone
    report      ``ws.governance_report.build()`` over 1,000 model versions (``--quick``: 100)
                written in batched transactions, with tags, metrics, datasets, statuses and
                aliases drawn from the seed and a known share of planted violations; baseline
                is listing the same models, versions and aliases through ``ModelQueries``
                (the read floor). ``violation_rate_matches_planted`` says whether the report
                found exactly the planted share.

Ratios are loopline's median time / the baseline's median time from the same run: 1.0 is as
fast, higher is slower. Nothing here asserts a timing.

Run ``make bench`` or ``.venv/bin/python benchmarks/governance.py --help``.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import math
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench_common import (
    add_common_arguments,
    check,
    elapsed,
    machine,
    max_rss_mib,
    measure,
    on_postgres,
    postgres_schema,
    progress,
    public_settings,
    ratio,
    scratch,
    summary,
)
from loopline.app import Workspace
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    ApprovalVote,
    Role,
    Verdict,
)
from loopline.core.models import NewModelVersion
from loopline.data.validation import Suite
from loopline.governance import engine
from loopline.governance.approvals import ApprovalService
from loopline.governance.facts import DatasetFact, Facts
from loopline.governance.policy_files import load_policy_set
from loopline.store import model_registry as records
from loopline.store.model_queries import ModelQueries

RULES = 50
DEFAULTS: dict[str, Any] = {"eval_repeat": 5000, "load_repeat": 20, "gate_repeat": 100,
                            "versions": 1000, "report_repeat": 2, "violation_share": 0.2}
QUICK: dict[str, Any] = {"eval_repeat": 300, "load_repeat": 3, "gate_repeat": 10,
                         "versions": 100, "report_repeat": 1, "violation_share": 0.2}
RATIO_NOTE = ("ratios are loopline median time / baseline median time from the same run "
              "(1.0 = as fast, higher is slower); median is the p50")


@dataclass(frozen=True, slots=True)
class Settings:
    """How many repetitions and how many versions the report examines."""

    eval_repeat: int
    load_repeat: int
    gate_repeat: int
    versions: int
    report_repeat: int
    violation_share: float
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool


def micro(seconds: list[float]) -> dict[str, float]:
    """Return median (p50), p95 and max of ``seconds`` in microseconds."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_us": round(statistics.median(ordered) * 1e6, 2),
            "p95_us": round(p95 * 1e6, 2), "max_us": round(ordered[-1] * 1e6, 2)}


# -- the 50-rule set and a version that passes it -----------------------------------------

CYCLE = ("required_metadata", "metric", "metric_slice", "slice_gap", "metric",
         "lineage_complete", "metric_slice", "encryption", "metric_slice", "approvals")
CARD = ("owner", "intended_use", "limitations", "description")
OVERALL, REGIONS, PER_POLICY = 10, 5, 10
GATED_MODEL, REQUESTER, APPROVER = "bench-gated", "bench-requester", "bench-approver"
SUITE = "name: basic\nexpectations:\n  - {type: column_exists, column: amount}\n"
NOT_COUNTED = frozenset({ApprovalStatus.EXPIRED, ApprovalStatus.REJECTED,
                         ApprovalStatus.WITHDRAWN})


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One generated rule: its id, kind (``metric_slice`` is a metric on a slice), parameters."""

    id: str
    kind: str
    params: Mapping[str, Any]


PARAMS: Mapping[str, Callable[[int], dict[str, Any]]] = {
    "required_metadata": lambda i: {"fields": list(CARD)},
    "metric": lambda i: {"metric": f"m{i % OVERALL}", "op": ">=",
                         "value": round(0.5 + (i % 5) * 0.05, 2)},
    "metric_slice": lambda i: {"metric": "recall", "value": 0.8,
                               "slice": f"region=R{i % REGIONS}"},
    "slice_gap": lambda i: {"metric": "recall", "slices": "region=*", "max_gap": 0.1},
    "lineage_complete": lambda i: {"validated_datasets": True, "code_version": True,
                                   "environment": True},
    "encryption": lambda i: {},
    "approvals": lambda i: {"count": 1, "expires_after": "7d"},
}


def rule_specs(count: int) -> list[RuleSpec]:
    """Return ``count`` rules cycling through every kind."""
    specs = []
    for number in range(count):
        kind = CYCLE[number % len(CYCLE)]
        specs.append(RuleSpec(f"r{number:02d}-{kind.replace('_', '-')}", kind,
                              PARAMS[kind](number)))
    return specs


def yaml_rule(spec: RuleSpec) -> dict[str, Any]:
    """Return the rule as a policy file writes it (slice metrics as ``check`` expressions)."""
    if spec.kind == "metric_slice":
        params = spec.params
        check_text = f"{params['metric']} >= {params['value']} on slice {params['slice']}"
        return {"id": spec.id, "kind": "metric", "check": check_text}
    return {"id": spec.id, "kind": spec.kind, **spec.params}


def policy_files(specs: list[RuleSpec]) -> dict[str, str]:
    """Return one policy file holding the rules as policies of ten, governing production."""
    documents = [{"kind": "gate_policy", "name": f"bench-policy-{start // PER_POLICY}",
                  "applies_to": {"models": ["bench-*"], "gates": ["alias"],
                                 "targets": ["production"]},
                  "rules": [yaml_rule(spec) for spec in specs[start:start + PER_POLICY]]}
                 for start in range(0, len(specs), PER_POLICY)]
    return {"bench.yaml": yaml.safe_dump_all(documents, sort_keys=False)}


def subject_fields() -> dict[str, Any]:
    """Return what a version records to pass every generated rule (datasets aside)."""
    slices = {f"region=R{k}": {"recall": round(0.85 + 0.01 * k, 2)} for k in range(REGIONS)}
    return {"metrics": {**{f"m{k}": 0.9 for k in range(OVERALL)}, "recall": 0.9,
                        "slices": slices},
            "tags": {"owner": "bench", "intended_use": "benchmarking",
                     "limitations": "synthetic"},
            "description": "a benchmark subject", "code_version": {"commit": "0" * 40},
            "environment": {"python": sys.version.split()[0]},
            "signature": {"inputs": [{"name": "amount", "type": "double"}]}}


def subject_facts(model: str, version: int, actor: str) -> Facts:
    """Return the facts of moving the subject to production, as a gate would gather them."""
    now = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    fields = subject_fields()
    vote = ApprovalVote(APPROVER, Verdict.APPROVE, "", now, Role.APPROVER)
    approval = ApprovalRequest("a1", model, version, "alias", "production", REQUESTER, "bench",
                               ApprovalStatus.APPROVED, 1, now, now.replace(year=2027),
                               (vote,))
    return Facts(model, version, "alias", "production", actor, status="candidate",
                 metrics=fields["metrics"], tags=fields["tags"],
                 description=fields["description"],
                 datasets=(DatasetFact("bench-train@1", True, True, ("basic",)),),
                 code_version=fields["code_version"], environment_recorded=True,
                 signature_recorded=True, artifact_encrypted=True, approvals=(approval,),
                 details={"now": now.isoformat()})


# -- the hand-written floor: the same 50 comparisons, nothing else -------------------------


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else -math.inf


def _slice_values(params: Mapping[str, Any], facts: Facts) -> list[float]:
    return [_number(entry.get(params["metric"])) for key, entry in facts.metrics["slices"].items()
            if fnmatch.fnmatchcase(key, params["slices"])]


def _approvers(facts: Facts, now: datetime) -> set[str]:
    return {name for request in facts.approvals if request.status_at(now) not in NOT_COUNTED
            for name in request.approvers(excluding=[facts.actor])}


FLOOR: Mapping[str, Callable[[Mapping[str, Any], Facts, datetime], bool]] = {
    "required_metadata": lambda p, f, now: all(
        (f.description if name == "description" else f.tags.get(name)) for name in p["fields"]),
    "metric": lambda p, f, now: _number(f.metrics.get(p["metric"])) >= p["value"],
    "metric_slice": lambda p, f, now: _number(
        f.metrics["slices"].get(p["slice"], {}).get(p["metric"])) >= p["value"],
    "slice_gap": lambda p, f, now: (len(values := _slice_values(p, f)) >= 2
                                    and max(values) - min(values) <= p["max_gap"]),
    "lineage_complete": lambda p, f, now: (
        bool(f.datasets) and all(d.exists and d.validated for d in f.datasets)
        and bool((f.code_version or {}).get("commit")) and f.environment_recorded),
    "encryption": lambda p, f, now: f.artifact_encrypted,
    "approvals": lambda p, f, now: len(_approvers(f, now)) >= p["count"],
}


def hand_written(specs: list[RuleSpec], facts: Facts) -> list[bool]:
    """Return pass or fail per rule, checked directly: the floor of any evaluator."""
    now = datetime.fromisoformat(facts.details["now"])
    return [bool(FLOOR[spec.kind](spec.params, facts, now)) for spec in specs]


# -- the report's versions: seeded, with a known share of planted violations ---------------

PER_MODEL, BATCH = 10, 100
OWNERS = ("ann", "bob", "chen", "dora")
SETUP = GateDecision(True, "benchmark setup: written directly, the gate is timed elsewhere")
REPORT_POLICY = """\
kind: gate_policy
name: model-card
applies_to: {gates: [register]}
rules:
  - {id: owner, kind: required_metadata, fields: [owner]}
---
kind: gate_policy
name: production-readiness
applies_to: {gates: [alias, status], targets: [production]}
rules:
  - {id: recall, kind: metric, check: "recall >= 0.5"}
  - {id: recall-eu, kind: metric, check: "recall >= 0.8 on slice region=EU"}
  - {id: fairness, kind: slice_gap, metric: recall, slices: "region=*", max_gap: 0.5}
"""


@dataclass(frozen=True, slots=True)
class Planned:
    """One version to write: what it records, its status, whether it violates a policy.

    ``dataset`` is 0 (none), 1 (a validated snapshot) or 2 (a snapshot never validated).
    """

    model: str
    number: int
    tags: dict[str, Any]
    eu_recall: float
    status: str
    dataset: int
    optional: dict[str, Any]
    violating: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """The versions and aliases to write, and what the report must find."""

    versions: list[Planned]
    aliases: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def violation_rate(self) -> float:
        """The planted share of versions with a violation."""
        return sum(v.violating for v in self.versions) / len(self.versions)

    @property
    def in_use(self) -> int:
        """How many versions are in production or aliased."""
        aliased = {(model, number) for model, _, number in self.aliases}
        return sum(v.status == "production" or (v.model, v.number) in aliased
                   for v in self.versions)


def _optional(rng: random.Random) -> dict[str, Any]:
    """Draw which optional parts of the record a version has (completeness varies)."""
    drawn = {"description": "a bench version", "code_version": {"commit": "1" * 40},
             "environment": {"python": "3.11"},
             "signature": {"inputs": [{"name": "amount", "type": "double"}]}}
    return {key: value for key, value in drawn.items() if rng.random() < 0.7}


def _planned(number: int, rng: random.Random, violation: str | None) -> Planned:
    # violations: "no_owner" fails at registration; "low_recall" in production fails the
    # status gate. A low-recall candidate (a trap) passed no governed gate: no violation.
    trap = violation is None and rng.random() < 0.1
    in_production = violation == "low_recall" or (not trap and rng.random() < 0.1)
    tags = {"intended_use": "bench"} if rng.random() < 0.7 else {}
    if violation != "no_owner":
        tags["owner"] = rng.choice(OWNERS)
    return Planned(
        f"bench-report-{number // PER_MODEL:04d}", number % PER_MODEL + 1, tags,
        0.7 if violation == "low_recall" or trap else round(rng.uniform(0.82, 0.98), 3),
        "production" if in_production else rng.choice(("candidate", "staging")),
        rng.randrange(3), _optional(rng), violation is not None)


def plan_versions(count: int, share: float, seed: int) -> Plan:
    """Return ``count`` versions, ``round(share * count)`` of them violating a policy.

    Each model of ten versions gets a ``production`` alias on a version with good EU recall
    (when it has one) and a ``staging`` alias, which no policy governs, on any version.
    """
    rng = random.Random(seed)
    violating = set(rng.sample(range(count), round(share * count)))
    versions = [_planned(number, rng, rng.choice(("no_owner", "low_recall"))
                         if number in violating else None) for number in range(count)]
    aliases = []
    for start in range(0, count, PER_MODEL):
        group = versions[start:start + PER_MODEL]
        good = [v for v in group if v.eu_recall >= 0.8]
        if good:
            chosen = rng.choice(good)
            aliases.append((chosen.model, "production", chosen.number))
        staged = rng.choice(group)
        aliases.append((staged.model, "staging", staged.number))
    return Plan(versions, aliases)


def _new_version(planned: Planned, digest: str, refs: tuple[str, str]) -> NewModelVersion:
    datasets = () if planned.dataset == 0 else (refs[planned.dataset - 1],)
    metrics = {"recall": 0.9, "slices": {"region=EU": {"recall": planned.eu_recall},
                                         "region=US": {"recall": 0.9}}}
    return NewModelVersion(name=planned.model, artifact_digest=digest, flavor="python",
                           metrics=metrics, tags=planned.tags, datasets=datasets,
                           **planned.optional)


def write_versions(ws: Workspace, plan: Plan) -> None:
    """Write the plan: artifacts, then versions and statuses in batches, then aliases."""
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0]})
    validated = ws.datasets.snapshot(frame, "bench-train").version.ref
    ws.validate_dataset(validated, Suite.from_yaml(SUITE))
    unvalidated = ws.datasets.snapshot(frame.assign(amount=[4.0, 5.0, 6.0]),
                                       "bench-train").version.ref
    for start in range(0, len(plan.versions), BATCH):
        batch = plan.versions[start:start + BATCH]
        digests = [ws.artifacts.put_bytes(f"{p.model}/{p.number}".encode()).digest
                   for p in batch]
        with ws.store.write(ws.actor) as uow:
            for planned, digest in zip(batch, digests, strict=True):
                made = records.create_version(
                    uow, _new_version(planned, digest, (validated, unvalidated)), SETUP)
                if planned.status != "candidate":
                    records.set_status(uow, made.name, made.version, planned.status, SETUP)
    with ws.store.write(ws.actor) as uow:
        for model, alias, number in plan.aliases:
            records.set_alias(uow, model, alias, number, SETUP)


# -- a. pure evaluation --------------------------------------------------------------------


def evaluation(settings: Settings, specs: list[RuleSpec]) -> dict[str, Any]:
    """Time loading the 50-rule set and evaluating it, against the hand-written floor."""
    files = policy_files(specs)
    policy_set, first = measure(lambda: load_policy_set(files))  # pydantic's first use
    loads = [measure(lambda: load_policy_set(files))[1] for _ in range(settings.load_repeat)]
    facts = subject_facts("bench-eval", 1, "tester")
    decision = engine.evaluate(policy_set, facts)
    floor = hand_written(specs, facts)
    check(len(decision.rules) == RULES, f"{len(decision.rules)} rules evaluated, not {RULES}")
    check([bool(r["passed"]) for r in decision.rules] == floor,
          "the engine and the hand-written checks disagree")
    check(decision.allowed, f"the subject should pass every rule: {decision.reason}")
    times: dict[str, list[float]] = {"evaluate": [], "hand_written": []}
    for _ in range(settings.eval_repeat):
        times["evaluate"].append(measure(lambda: engine.evaluate(policy_set, facts))[1])
        times["hand_written"].append(measure(lambda: hand_written(specs, facts))[1])
    figures = {name: micro(values) for name, values in times.items()}
    kinds: dict[str, int] = {}
    for spec in specs:
        kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
    return {
        "rules": RULES, "policies": len(policy_set.gate_policies), "rule_kinds": kinds,
        "decisions": settings.eval_repeat, "allowed": decision.allowed,
        "load_policy_set": {"first_ms": round(first * 1000, 3), "runs": settings.load_repeat,
                            **summary(loads)},
        "evaluate": figures["evaluate"],
        "evaluate_per_rule_us": round(figures["evaluate"]["median_us"] / RULES, 3),
        "baseline": {"hand_written": figures["hand_written"]},
        "ratios": {"evaluate_vs_hand_written": ratio(figures["evaluate"]["median_us"],
                                                     figures["hand_written"]["median_us"])},
    }


# -- b. a full gated action ----------------------------------------------------------------


def prepare_gated(ws: Workspace, specs: list[RuleSpec] | None) -> None:
    """Register two versions every rule passes, approve their moves, apply ``specs``."""
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0]})
    ref = ws.datasets.snapshot(frame, "bench-train").version.ref
    ws.validate_dataset(ref, Suite.from_yaml(SUITE))
    requester = ApprovalService(ws.store, ws.access, REQUESTER)
    approver = ApprovalService(ws.store, ws.access, APPROVER)
    for number in (1, 2):
        digest = ws.artifacts.put_bytes(f"{GATED_MODEL} {number}".encode()).digest
        made = ws.models.record_version(NewModelVersion(
            name=GATED_MODEL, artifact_digest=digest, flavor="python", datasets=(ref,),
            **subject_fields()), ())
        check(ws.artifacts.info(made.artifact_digest).key_id is not None, "not encrypted")
        request = requester.request(GATED_MODEL, number, "alias", "production", "benchmark")
        approver.approve(request.id)
    if specs is not None:
        ws.policies.apply(ws.actor, policy_files(specs))


def _prepared(folder: Path, url: str | None, settings: Settings,
              specs: list[RuleSpec] | None) -> Workspace:
    """Return an encrypting workspace prepared by ``prepare_gated``."""
    key = base64.urlsafe_b64encode(random.Random(settings.seed).randbytes(32)).decode()
    ws = Workspace.init(folder, overrides={"db_url": url, "encryption_key": key})
    try:
        prepare_gated(ws, specs)
    except BaseException:
        ws.close()
        raise
    return ws


def gated(settings: Settings, specs: list[RuleSpec], folder: Path,
          urls: tuple[str | None, str | None]) -> dict[str, Any]:
    """Time alias moves with and without the 50-rule set, and the gate's parts alone."""
    governed = _prepared(folder / "governed", urls[0], settings, specs)
    plain = _prepared(folder / "plain", urls[1], settings, None)
    try:
        name = GATED_MODEL
        times: dict[str, list[float]] = {"alias_move_governed": [], "alias_move_no_policy": [],
                                         "gate_check": [], "gate_check_no_policy": [],
                                         "gather_facts": []}
        for ws in (governed, plain):  # warm: caches, the first parse of the applied set
            ws.models.set_alias(name, "production", 1)
        for number in range(settings.gate_repeat):
            version = 2 if number % 2 == 0 else 1  # every move changes the alias
            for ws, key in ((governed, "alias_move_governed"), (plain, "alias_move_no_policy")):
                times[key].append(measure(
                    lambda w=ws, v=version: w.models.set_alias(name, "production", v))[1])
        request = GateRequest(GateAction.ALIAS, name, 1, governed.actor, "production")
        for _ in range(settings.gate_repeat):
            decision, took = measure(lambda: governed.gate.check(request))
            times["gate_check"].append(took)
            times["gate_check_no_policy"].append(measure(lambda: plain.gate.check(request))[1])
            now = governed.store.clock.now()
            times["gather_facts"].append(
                measure(lambda at=now: governed.facts.gather(request, at))[1])
        check(decision.allowed and len(decision.rules) == RULES,
              f"the governed move should pass all {RULES} rules: {decision.reason}")
        moves = governed.store.audit.entries()
        check(any(e.action == "model.alias_moved" for e in moves), "no alias move audited")
        figures = {key: summary(values) for key, values in times.items()}
        p50 = {key: value["median_ms"] for key, value in figures.items()}
        return {
            "moves": settings.gate_repeat, "rules": RULES, **figures,
            "ratios": {
                "alias_move_governed_vs_no_policy": ratio(p50["alias_move_governed"],
                                                          p50["alias_move_no_policy"]),
                "gate_check_vs_no_policy": ratio(p50["gate_check"],
                                                 p50["gate_check_no_policy"]),
                "gate_check_share_of_governed_move": ratio(p50["gate_check"],
                                                           p50["alias_move_governed"]),
            },
        }
    finally:
        governed.close()
        plain.close()


# -- c. the report -------------------------------------------------------------------------


def list_floor(queries: ModelQueries) -> int:
    """List every model, its versions and its aliases: what any report must read at least."""
    count = 0
    for model in queries.models():
        count += len(queries.versions(model.name))
        queries.aliases(model.name)
    return count


def report(settings: Settings, folder: Path, url: str | None) -> dict[str, Any]:
    """Write the versions, then time the report and the listing floor over them."""
    ws = Workspace.init(folder, overrides={"db_url": url} if url else None)
    try:
        plan = plan_versions(settings.versions, settings.violation_share, settings.seed)
        written = measure(lambda: write_versions(ws, plan))[1]
        ws.policies.apply(ws.actor, {"report.yaml": REPORT_POLICY})
        queries = ModelQueries(ws.store.engine)
        check(list_floor(queries) == settings.versions, "not every version was written")
        times: dict[str, list[float]] = {"report": [], "list_floor": []}
        for _ in range(settings.report_repeat):
            found, took = measure(lambda: ws.governance_report.build())
            times["report"].append(took)
            times["list_floor"].append(measure(lambda: list_floor(queries))[1])
        sampled, sample_s = measure(lambda: ws.governance_report.build(
            sample=max(1, settings.versions // 10), seed=settings.seed))
        record = found.as_record()
        check(found.examined == settings.versions, f"examined {found.examined}")
        report_s = summary(times["report"])["median_ms"] / 1000
        floor_s = summary(times["list_floor"])["median_ms"] / 1000
        return {
            "versions": settings.versions, "models": len(queries.models()),
            "write_versions_s": round(written, 3), "runs": settings.report_repeat,
            "report_s": round(report_s, 3),
            "report_ms_per_version": round(report_s * 1000 / settings.versions, 3),
            "sample": {"examined": sampled.examined, "seconds": round(sample_s, 3)},
            "baseline": {"list_floor_s": round(floor_s, 4)},
            "ratios": {"report_vs_list_floor": ratio(report_s, floor_s)},
            "planted_violation_rate": plan.violation_rate,
            "violation_rate": record["violation_rate"],
            "violation_rate_matches_planted": found.violation_rate == plan.violation_rate,
            "in_use": record["in_use"], "in_use_planted": plan.in_use,
            "in_use_violation_rate": record["in_use_violation_rate"],
            "completeness": record["completeness"], "missing_counts": record["missing_counts"],
        }
    finally:
        ws.close()


def backend(settings: Settings, specs: list[RuleSpec], work: Path,
            url: str | None) -> dict[str, Any]:
    """Measure the gated action and the report on one backend (SQLite when ``url`` is None)."""
    label = "postgresql" if url else "sqlite"
    with scratch(work, label) as folder, ExitStack() as stack:
        def own_database() -> str | None:
            # Each workspace needs a database of its own (SQLite: a file in its folder; on
            # PostgreSQL one more private schema, dropped afterwards).
            if url is None or settings.postgres_url is None:
                return None
            return stack.enter_context(postgres_schema(settings.postgres_url))[0]

        progress(f"{label}: {settings.gate_repeat} alias moves with and without {RULES} rules")
        gate_figures = gated(settings, specs, folder, (url, own_database()))
        progress(f"{label}: writing {settings.versions} versions, then the report")
        report_figures = report(settings, folder / "report", own_database())
    return {"backend": label, "gated_action": gate_figures, "report": report_figures}


# -- command line --------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` shrinks repetitions and the report's versions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--eval-repeat", type=int, help="pure evaluations timed (5000)")
    parser.add_argument("--load-repeat", type=int, help="policy set loads timed (20)")
    parser.add_argument("--gate-repeat", type=int, help="alias moves and gate checks (100)")
    parser.add_argument("--versions", type=int, help="model versions the report reads (1000)")
    parser.add_argument("--report-repeat", type=int, help="report builds timed (2)")
    parser.add_argument("--violation-share", type=float,
                        help="share of versions planted with a violation (0.2)")
    add_common_arguments(parser, "folder for temporary files (default: system temp)")
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions and 100 versions: for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in base.items()}
    if any(sizes[name] < 1 for name in sizes if name != "violation_share") \
            or sizes["versions"] < 10 or not 0 <= sizes["violation_share"] <= 1:
        parser.error("counts must be at least 1, --versions at least 10 and "
                     "--violation-share between 0 and 1")
    return Settings(**sizes, seed=args.seed, quick=args.quick, tmpdir=args.tmpdir,
                    postgres_url=None if args.no_postgres else args.postgres_url)


def main(argv: list[str] | None = None) -> int:
    """Measure evaluation, then each backend; print the JSON report; exit 1 on a PG error."""
    settings = parse_settings(argv)
    specs = rule_specs(RULES)
    progress(f"evaluation: {settings.eval_repeat} decisions of {RULES} rules and the floor")
    evaluated = evaluation(settings, specs)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        work = Path(tmp)

        def run(url: str | None) -> dict[str, Any]:
            return backend(settings, specs, work, url)

        sqlite = run(None)
        postgresql = on_postgres(settings.postgres_url, run)
    result = {
        "benchmark": "loopline governance",
        "machine": machine(),
        "settings": {**public_settings(settings), "rules": RULES},
        "note": RATIO_NOTE,
        "evaluation": evaluated,
        "sqlite": sqlite,
        "postgresql": postgresql,
        "process_max_rss_mib": max_rss_mib(),
        "elapsed_s": elapsed(),
    }
    print(json.dumps(result, indent=2))
    progress("done")
    return 1 if "error" in postgresql else 0


if __name__ == "__main__":
    sys.exit(main())
