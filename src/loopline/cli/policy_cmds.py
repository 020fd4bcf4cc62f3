"""``loopline policy``: apply policy files, show the set in force, check a version against it.

``apply`` stores ``policies/*.yaml`` (or another folder) as the set every gate evaluates; a
malformed file is refused naming the file and line (exit 5) and nothing is written, and so is
a folder defining no policy at all unless ``--allow-empty`` says the clearing is on purpose.
``check`` evaluates a version at a gate without acting and without writing: it exits 0 when
the action would be allowed and 9 when it would be denied. ``apply`` and ``show`` work
through ``--server`` too (``apply`` reads the folder here, ``policies/`` of the current
folder by default); ``check`` needs a local workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from loopline.cli.context import open_session, open_workspace
from loopline.cli.output import console, emit_json, ok_or_fail, success, table
from loopline.cli.session import Session, actor_of
from loopline.cli.workspace_cmds import JsonFlag
from loopline.client import Client
from loopline.core.errors import PolicyDeniedError
from loopline.core.gates import GateAction, GateDecision, GateRequest, parse_gate_action
from loopline.core.governance import Permission
from loopline.governance.gate import decide
from loopline.governance.policy_files import (
    EMPTY_POLICY_SET,
    PolicySet,
    load_policy_set,
    read_policy_dir,
)
from loopline.governance.policy_sets import refuse_empty, summary
from loopline.store.model_queries import ModelQueries

app = typer.Typer(help="Policies as code: apply, show and check the set the gates evaluate.",
                  no_args_is_help=True)

POLICY_DIR = "policies"
Folder = Annotated[Path | None, typer.Argument(
    help="Folder of policy files (*.yaml); default: policies/ in the workspace.")]


def _folder(ws: Session, folder: Path | None) -> Path:
    if folder is not None:
        return folder
    # Through a server there is no workspace folder here: policies/ in the current one.
    return Path(POLICY_DIR) if isinstance(ws, Client) else ws.root / POLICY_DIR


def _many(count: int, one: str, more: str) -> str:
    return f"{count} {one if count == 1 else more}"


def _counts(policy_set: PolicySet) -> str:
    facts = summary(policy_set)
    retention = ", a retention policy" if facts["retention"] else ""
    return (f"{_many(facts['gate_policies'], 'gate policy', 'gate policies')}, "
            f"{_many(facts['rules'], 'rule', 'rules')}{retention} in "
            f"{_many(len(facts['files']), 'file', 'files')}")


def _changes(active: PolicySet, wanted: PolicySet) -> list[str]:
    old, new = active.files, wanted.files
    lines = [f"+ {name}" for name in sorted(set(new) - set(old))]
    lines += [f"~ {name}" for name in sorted(set(new) & set(old)) if new[name] != old[name]]
    lines += [f"- {name}" for name in sorted(set(old) - set(new))]
    return lines


@app.command()
def apply(
    ctx: typer.Context, folder: Folder = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the files and show what would change; write nothing.")] = False,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="Apply even a set with no policy, turning every gate off "
                              "(clearing the policies on purpose).")] = False,
) -> None:
    """Apply the policy files in FOLDER as the set every gate evaluates (needs admin).

    A folder with no gate policy and no retention policy is refused unless --allow-empty.
    """
    with open_session(ctx) as ws:
        source = _folder(ws, folder)
        files = read_policy_dir(source)
        if dry_run:
            wanted, current = load_policy_set(files), ws.policies.current()
            if not allow_empty:
                refuse_empty(wanted, str(source))
        else:
            applied = ws.policies.apply(actor_of(ws), files, allow_empty=allow_empty,
                                        source=str(source))
    if dry_run:
        active = current.policy_set if current is not None else EMPTY_POLICY_SET
        if current is not None and wanted.digest == current.digest:
            console.print(f"policy set {wanted.digest[:12]} is in force already; "
                          "nothing would change")
            return
        console.print(f"would apply policy set {wanted.digest[:12]}: {_counts(wanted)}")
        for line in _changes(active, wanted):
            console.print(f"  {line}")
        return
    if not applied.changed:
        console.print(f"policy set {applied.digest[:12]} is in force already "
                      f"(applied {applied.applied_at.isoformat(timespec='seconds')} by "
                      f"{applied.applied_by}); nothing written")
        return
    success(f"applied policy set {applied.digest[:12]}: {_counts(applied.policy_set)}")


def _policy_rows(policy_set: PolicySet) -> list[dict[str, Any]]:
    return [{"name": p.name, "description": p.description, "models": list(p.applies_to.models),
             "gates": list(p.applies_to.gates), "targets": list(p.applies_to.targets),
             "rules": [{"id": r.id, "kind": r.kind} for r in p.rules]}
            for p in policy_set.gate_policies]


@app.command()
def show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the policy set in force: digest, when and by whom, and each policy's rules."""
    with open_session(ctx) as ws:
        current = ws.policies.current()
    if current is None:
        if as_json:
            emit_json(None)
        else:
            console.print("no policy set applied: every gate allows (run `loopline policy "
                          "apply`)")
        return
    rows = _policy_rows(current.policy_set)
    if as_json:
        emit_json({"id": current.id, "digest": current.digest,
                   "applied_at": current.applied_at, "applied_by": current.applied_by,
                   "files": sorted(current.policy_set.files), "policies": rows,
                   "retention": current.policy_set.retention is not None})
        return
    console.print(f"policy set {current.digest}")
    console.print(f"  applied {current.applied_at.isoformat(timespec='seconds')} by "
                  f"{current.applied_by}; {_counts(current.policy_set)}")
    columns = ["policy", "models", "gates", "targets", "rules"]
    table(_many(len(rows), "gate policy", "gate policies"), columns, [
        (r["name"], ", ".join(r["models"]), ", ".join(r["gates"]),
         ", ".join(r["targets"]) or "any",
         ", ".join(f"{rule['id']} ({rule['kind']})" for rule in r["rules"])) for r in rows])


def _print_decision(title: str, decision: GateDecision) -> None:
    # The message says what the rule saw against what it needed, in words; the full
    # observed and expected values are in --json (a lineage record does not fit a cell).
    if decision.rules:
        table(title, ["policy", "rule", "kind", "result", "what it saw"], [
            (r.get("policy"), r.get("rule"), r.get("kind"), ok_or_fail(bool(r.get("passed"))),
             r.get("message")) for r in decision.rules])
        for rule in decision.rules:
            if not rule.get("passed"):
                console.print(f"  {rule.get('policy')}/{rule.get('rule')}: {rule.get('message')}")
    verdict = Text("allowed", style="green") if decision.allowed else \
        Text("denied", style="bold red")
    console.print(Text.assemble(verdict, f": {decision.reason}"))


@app.command()
def check(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(
        help="models:/NAME/VERSION or models:/NAME@ALIAS (the models:/ prefix is optional).")],
    gate: Annotated[str, typer.Option(
        "--gate", help=f"The gate: {', '.join(GateAction)}.")],
    target: Annotated[str | None, typer.Option(
        help="What the action moves to: an alias, a status or a stage.")] = None,
    policies: Annotated[Path | None, typer.Option(
        "--policies", help="Evaluate the files in this folder instead of the applied set "
                           "(they are not applied).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show whether a version would pass a gate, rule by rule, without acting (writes nothing).

    Exits 0 when the action would be allowed and 9 when it would be denied.
    """
    action = str(parse_gate_action(gate, "--gate"))
    with open_workspace(ctx) as ws:
        version = ModelQueries(ws.store.engine).resolve(uri)
        ws.access.authorize(ws.actor, Permission.READ, version.name)
        policy_set = load_policy_set(read_policy_dir(policies)) if policies is not None \
            else ws.policies.active()
        request = GateRequest(action, version.name, version.version, ws.actor, target)
        decision = decide(policy_set, ws.facts.gather(request, ws.store.clock.now()))
    where = f"{version.uri} at gate {action}" + (f" to {target}" if target else "")
    if as_json:
        emit_json({"uri": version.uri, "gate": action, "target": target,
                   "decision": decision.as_record()})
    else:
        _print_decision(f"{where} (policy set {policy_set.digest[:12]})", decision)
    if not decision.allowed:
        raise PolicyDeniedError(f"{where} would be denied: {decision.reason}")
