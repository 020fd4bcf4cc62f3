"""``loopline lineage``: show a node's upstream and downstream; export OpenLineage events.

``show`` works through ``--server`` too; ``openlineage`` reads the workspace's store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from loopline.cli.context import open_session, open_workspace
from loopline.cli.output import console, emit_json, success
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.core.lineage import Direction, LineageGraphView, LineageNode, NodeRef
from loopline.data.lineage import DEFAULT_LIMIT
from loopline.governance.openlineage import (
    DEFAULT_NAMESPACE,
    openlineage_all_events,
    openlineage_run_events,
)
from loopline.governance.openlineage_export import (
    DEFAULT_ENDPOINT,
    ExportResult,
    endpoint_url,
    export_to_file,
    export_to_url,
)

app = typer.Typer(help="The lineage graph: show upstream and downstream of a node; export it "
                       "as OpenLineage events.", no_args_is_help=True)


@app.command()
def show(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(
        help="The node as <kind>:<ref>, e.g. dataset_snapshot:iris@3.")],
    upstream: Annotated[bool, typer.Option(
        "--upstream", help="Only what the node came from.")] = False,
    downstream: Annotated[bool, typer.Option(
        "--downstream", help="Only what the node influenced.")] = False,
    depth: Annotated[int, typer.Option(min=0, max=100, help="Hops to follow.")] = 10,
    limit: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="Most nodes to show each way.")] = DEFAULT_LIMIT,
    as_json: JsonFlag = False,
) -> None:
    """Show a node's lineage: upstream, downstream, or (by default) both."""
    ref = NodeRef.parse(node, "NODE")  # before opening anything: exit 5 on a malformed node
    direction = (Direction.UPSTREAM if upstream and not downstream
                 else Direction.DOWNSTREAM if downstream and not upstream else Direction.BOTH)
    with open_session(ctx) as workspace:
        view = workspace.lineage.show(ref, direction, depth, limit)
    if as_json:
        emit_json(view_json(view))
        return
    console.print(render(view))
    if view.truncated:
        console.print(f"truncated: more lies beyond depth {depth} or {limit} nodes; "
                      "raise --depth or --limit", style="yellow")


def view_json(view: LineageGraphView) -> dict[str, Any]:
    """Return the JSON shape of a view: root, direction, nodes (with depth) and edges."""
    return {
        "root": view.root.id,
        "direction": view.direction.value,
        "depth_reached": view.depth_reached,
        "truncated": view.truncated,
        "nodes": [{"id": n.id, "kind": n.ref.kind, "ref": n.ref.ref, "label": n.label,
                   "attributes": dict(n.attributes), "created_at": n.created_at,
                   "depth": view.depths[n.id]} for n in view.nodes],
        "edges": [{"source": e.source.id, "target": e.target.id, "kind": e.kind}
                  for e in view.edges],
    }


def _title(node: LineageNode) -> Text:
    # Text, not markup: refs and labels come from users and may hold "[" and "]".
    title = Text.assemble((node.ref.kind, "bold"), f":{node.ref.ref}")
    if node.label:
        title.append(f" {node.label}", style="dim")
    return title


def _grow(branch: Tree, root: str, view: LineageGraphView, upstream: bool) -> None:
    """Add the spanning tree of ``view`` one way from ``root``; each node appears once.

    A node sits under one neighbour nearer the root; its other links to nodes already
    shown are listed as dim ``see`` leaves, so shared nodes and cycles stay readable.
    """
    nodes = {n.id: n for n in view.nodes}
    links: dict[str, list[tuple[str, str]]] = {}
    for edge in view.edges:
        near, far = ((edge.target.id, edge.source.id) if upstream
                     else (edge.source.id, edge.target.id))
        links.setdefault(near, []).append((far, edge.kind))
    shown = {root}
    frontier = [(root, branch)]
    while frontier:
        following: list[tuple[str, Tree]] = []
        for node_id, tree in frontier:
            for far, kind in sorted(links.get(node_id, [])):
                if far in shown:
                    tree.add(Text(f"{kind} → see {far}", style="dim"))
                    continue
                shown.add(far)
                label = Text.assemble((kind, "cyan"), " ", _title(nodes[far]))
                following.append((far, tree.add(label)))
        frontier = following


def render(view: LineageGraphView) -> Tree:
    """Return a rich tree of the view: the root, then its upstream and/or downstream."""
    root = view.node(view.root.id)
    tree = Tree(_title(root) if root else Text(view.root.id))
    ways = ([view.direction == Direction.UPSTREAM] if view.direction != Direction.BOTH
            else [True, False])
    for upstream in ways:
        branch = tree.add(Text("upstream" if upstream else "downstream", style="magenta"))
        _grow(branch, view.root.id, view, upstream)
        if not branch.children:
            branch.add(Text("(nothing recorded)", style="dim"))
    return tree


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidArgumentError(
            "--since", f"{text!r} is not an ISO 8601 time such as 2026-01-31T09:00Z") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise InvalidArgumentError("--api-key-env", f"environment variable {variable} is not "
                                                    "set or empty")
    return key


def _check_flags(run: str | None, since: str | None, out: Path | None,
                 url: str | None) -> None:
    if out is not None and url is not None:
        raise InvalidArgumentError("--out/--url", "give one destination, not both")
    if run is not None and since is not None:
        raise InvalidArgumentError("--run/--since", "give a run or a start time, not both")


def _print_lines(events: Iterator[dict[str, Any]]) -> None:
    for event in events:  # one line each, as they come: the history may be long
        print(json.dumps(event, ensure_ascii=False, separators=(",", ":")))


@app.command()
def openlineage(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option(
        "--run", help="Only this pipeline run (and its tasks).")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only runs ended and snapshots made at or after this ISO 8601 time "
             "(UTC when no offset is given).")] = None,
    namespace: Annotated[str, typer.Option(
        help="OpenLineage namespace of jobs and datasets.")] = DEFAULT_NAMESPACE,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write JSON Lines to this file (replaced whole).")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="POST each event to this OpenLineage endpoint (e.g. Marquez).")] = None,
    endpoint: Annotated[str, typer.Option(
        help="Path appended to --url.")] = DEFAULT_ENDPOINT,
    api_key_env: Annotated[str | None, typer.Option(
        "--api-key-env", help="Environment variable holding the endpoint's API key "
                              "(sent as a Bearer token).")] = None,
) -> None:
    """Export runs, tasks and dataset snapshots as OpenLineage events.

    Without --out or --url the events are printed as JSON lines.
    """
    _check_flags(run, since, out, url)
    start = _since(since)
    key = _api_key(api_key_env)
    if url is not None:
        endpoint_url(url, endpoint)  # a bad URL fails before the workspace is opened
    with open_workspace(ctx) as workspace:
        events = (iter(openlineage_run_events(workspace.store, run, namespace))
                  if run is not None
                  else openlineage_all_events(workspace.store, start, namespace))
        if out is None and url is None:
            _print_lines(events)
            return
        result = (export_to_file(events, out) if out is not None
                  else export_to_url(events, url or "", endpoint, key))
    _report(result, "written to" if out is not None else "sent to")


def _report(result: ExportResult, verb: str) -> None:
    if not result.ok:
        raise BackendError(f"OpenLineage export to {result.target} stopped after "
                           f"{result.sent} events: {result.error}")
    success(f"{result.sent} OpenLineage events {verb} {result.target}")
