"""What a run records about itself: its code version, its environment and its lineage.

The environment's full package list goes to the artifact store once per distinct
environment (content-addressed); the run row keeps its digest and a short summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.lineage import NodeRef
from loopline.core.runs import TaskState
from loopline.data.provenance import (
    CodeVersion,
    code_version,
    environment,
    environment_record,
)
from loopline.pipelines.outputs import artifact_digest
from loopline.pipelines.plan import ExecutionPlan
from loopline.pipelines.run_lineage import RunLineage, TaskLineage


@dataclass(frozen=True, slots=True)
class Provenance:
    """The code and environment one execution of a run used."""

    code: CodeVersion
    environment: Mapping[str, Any]  # digest, python, platform, artifact (the full record)


def capture_provenance(blobs: ContentAddressedStore, start: Path | None = None) -> Provenance:
    """Describe this process's code version (git) and environment; store the environment."""
    record, summary = environment_record(environment())
    blobs.put_bytes(record)  # stored once per distinct environment: content-addressed
    return Provenance(code_version(start), summary)


def _output_digest(record: Mapping[str, Any] | None) -> str | None:
    return artifact_digest(record) if record is not None else None


def _reads(record: Mapping[str, Any] | None) -> list[NodeRef]:
    reads = record.get("reads") if record is not None else None
    return [NodeRef.parse(str(ref), "reads") for ref in reads] if isinstance(reads, list) else []


def run_lineage(plan: ExecutionPlan, run_id: str, states: Mapping[str, TaskState],
                records: Mapping[str, Mapping[str, Any]],
                provenance: Provenance) -> RunLineage:
    """Return the lineage of run ``run_id``: tasks, their inputs and the artifacts they wrote."""
    tasks = [TaskLineage(key, str(states.get(key, TaskState.PENDING)),
                         plan.nodes[key].upstream, _output_digest(records.get(key)),
                         _reads(records.get(key)))
             for key in plan.order]
    return RunLineage(run_id, plan.pipeline.name, provenance.code,
                      str(provenance.environment["digest"]), tasks)
