"""The OpenLineage facets loopline attaches: parent run, error message, dataset schema, version.

Each facet carries ``_producer`` and the ``_schemaURL`` of the facet schema it follows (the
versions kept in tests/fixtures/openlineage, which the tests validate every facet against).
Dataset facets come from the store: a snapshot's columns become its ``schema`` facet and its
content hash its ``version`` facet; an artifact's digest is its version.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from loopline.core.datasets import DatasetVersion
from loopline.core.lineage import NodeKind, NodeRef
from loopline.core.redaction import redact_text
from loopline.store import MetadataStore
from loopline.store.datasets import DatasetQueries

PARENT_SCHEMA = "https://openlineage.io/spec/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet"
ERROR_SCHEMA = ("https://openlineage.io/spec/facets/1-0-0/ErrorMessageRunFacet.json"
                "#/$defs/ErrorMessageRunFacet")
SCHEMA_SCHEMA = ("https://openlineage.io/spec/facets/1-0-0/SchemaDatasetFacet.json"
                 "#/$defs/SchemaDatasetFacet")
VERSION_SCHEMA = ("https://openlineage.io/spec/facets/1-0-0/DatasetVersionDatasetFacet.json"
                  "#/$defs/DatasetVersionDatasetFacet")
MAX_ERROR_CHARS = 2000  # a message, not a log: the run store keeps the full error


def _facet(producer: str, schema_url: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"_producer": producer, "_schemaURL": schema_url, **fields}


def parent_facet(run_id: str, job: Mapping[str, str], producer: str) -> dict[str, Any]:
    """Return the ``parent`` run facet naming the run (and its job) that spawned this one."""
    return _facet(producer, PARENT_SCHEMA, {
        "run": {"runId": run_id},
        "job": {"namespace": job["namespace"], "name": job["name"]}})


def error_facet(error: str, producer: str) -> dict[str, Any]:
    """Return the ``errorMessage`` run facet: the error's text, redacted and shortened."""
    message = redact_text(error).strip() or "failed"
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS - 1] + "…"
    return _facet(producer, ERROR_SCHEMA, {"message": message,
                                           "programmingLanguage": "python"})


def _snapshot_facets(version: DatasetVersion, producer: str) -> dict[str, Any]:
    fields = [{"name": column.name, "type": column.type} for column in version.columns]
    return {"schema": _facet(producer, SCHEMA_SCHEMA, {"fields": fields}),
            "version": _facet(producer, VERSION_SCHEMA,
                              {"datasetVersion": version.content_hash})}


def _split_snapshot_ref(ref: str) -> tuple[str, int] | None:
    name, at, number = ref.rpartition("@")
    return (name, int(number)) if at and name and number.isdigit() else None


class DatasetFacets:
    """The facets of lineage nodes used as datasets, looked up once and kept a while.

    Keeps the ``keep`` most recently used nodes, so a long export stays bounded in memory
    while the snapshots that many runs read are looked up once.
    """

    def __init__(self, store: MetadataStore, producer: str, keep: int = 1024) -> None:
        self._datasets = DatasetQueries(store.engine)
        self._producer = producer
        self._keep = keep
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def of(self, node: NodeRef) -> dict[str, Any]:
        """Return the facets of ``node`` (empty when none are known)."""
        if node.id in self._known:
            self._known.move_to_end(node.id)
            return self._known[node.id]
        facets = self._known[node.id] = self._look_up(node)
        if len(self._known) > self._keep:
            self._known.popitem(last=False)
        return facets

    def _look_up(self, node: NodeRef) -> dict[str, Any]:
        if node.kind == NodeKind.DATASET_SNAPSHOT:
            split = _split_snapshot_ref(node.ref)
            version = self._datasets.version(*split) if split is not None else None
            return _snapshot_facets(version, self._producer) if version is not None else {}
        if node.kind == NodeKind.ARTIFACT:
            return {"version": _facet(self._producer, VERSION_SCHEMA,
                                      {"datasetVersion": node.ref})}
        return {}
