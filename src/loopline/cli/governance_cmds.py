"""``loopline governance report``: completeness and policy-violation rates, failures named.

Reads only. Exit 0 whatever the report finds: it is an audit to read, not a gate (``loopline
policy check`` is the gate's dry run).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.governance.policy_files import EMPTY_POLICY_SET
from loopline.governance.report import COMPLETENESS_CHECKS, GovernanceReport

app = typer.Typer(help="Governance: the completeness and policy report.", no_args_is_help=True)


@app.command()
def report(
    ctx: typer.Context,
    sample: Annotated[int | None, typer.Option(
        help="Examine this many versions, chosen at random with --seed (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Audit registered and in-use model versions for metadata, lineage and policy."""
    with open_session(ctx) as workspace, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=True,
            # Pipes get no spinner: a stopped live display still leaves a blank line.
            disable=as_json or not console.is_terminal) as bar:
        bar.add_task("examining model versions", total=None)
        found = workspace.governance_report.build(sample, seed)
    if as_json:
        emit_json(found.as_record())
        return
    _print(found)


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _print(found: GovernanceReport) -> None:
    record = found.as_record()
    table("governance report", ["measure", "value"], [
        ("policy set", "none in force" if found.policy_set == EMPTY_POLICY_SET.digest
         else found.policy_set[:12]),
        ("versions examined", f"{found.examined} of {found.population}"),
        ("in use (production or aliased)", record["in_use"]),
        ("completeness (checks passed)", _percent(found.completeness)),
        ("versions fully complete", _percent(found.complete_share)),
        ("versions violating a policy", _percent(found.violation_rate)),
        ("in-use versions violating a policy", _percent(record["in_use_violation_rate"])),
    ])
    table("missing from the record", ["check", "versions missing it"],
          [(name, found.missing_counts.get(name, 0)) for name in COMPLETENESS_CHECKS])
    failing = [item for item in found.items if item.missing or item.violations]
    rows = [(item.uri, "yes" if item.in_use else "", ", ".join(item.missing),
             "; ".join(f"{v.gate}{'→' + v.target if v.target else ''} {v.policy}/{v.rule}: "
                       f"{v.message}" for v in item.violations))
            for item in failing]
    table(f"{len(failing)} versions with gaps or violations",
          ["version", "in use", "missing", "policy violations"], rows)
