"""``loopline models``: list, show, alias, status, trust, environment and card of model versions.

A version is named by a URI: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` (the prefix may
be left out; ``NAME@latest`` is the highest version). Exit codes follow ``cli/errors.py``: 3
for an unknown model, version or alias, 5 for a malformed URI or argument, 4 for a move the
lifecycle forbids, 9 when the gate denies a change. Every command here works through
``--server`` too (``env --check`` then compares with the server's environment).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.errors import InvalidArgumentError
from loopline.core.models import (
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    alias_uri,
    validate_version,
)
from loopline.registry.environment_check import WARNING, EnvironmentDifference
from loopline.registry.metrics import overall_metrics, slice_metrics
from loopline.registry.service import VersionDetails

app = typer.Typer(help="Registered models: versions, aliases, status, trust, environment, card.",
                  no_args_is_help=True)

Uri = Annotated[str, typer.Argument(
    help="models:/NAME/VERSION or models:/NAME@ALIAS (the models:/ prefix is optional).")]
Name = Annotated[str, typer.Argument(help="The registered model's name.")]


def _when(value: Any) -> str:
    return str(value.isoformat(timespec="seconds"))


def _version_number(text: str) -> int:
    """Return ``text`` as a version number.

    Raises:
        InvalidArgumentError: naming ``VERSION`` when it is not a whole number from 1.
    """
    if not text.isdigit() or text.startswith("0"):
        raise InvalidArgumentError("VERSION", f"{text!r} must be a whole number from 1, "
                                              "e.g. 3")
    return validate_version(int(text), "VERSION")


def _model_row(model: RegisteredModel, aliases: list[ModelAlias]) -> dict[str, Any]:
    return {"name": model.name, "latest_version": model.latest_version,
            "aliases": {a.alias: a.version for a in aliases}, "description": model.description,
            "tags": dict(model.tags), "created_at": model.created_at,
            "created_by": model.created_by}


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List registered models with their latest version and aliases."""
    with open_session(ctx) as workspace:
        rows = [_model_row(m, workspace.models.aliases(m.name))
                for m in workspace.models.models()]
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} models", ["name", "latest", "aliases", "created", "by", "description"], [
        (r["name"], r["latest_version"],
         ", ".join(f"@{alias}→{number}" for alias, number in sorted(r["aliases"].items())),
         _when(r["created_at"]), r["created_by"], r["description"] or "") for r in rows])


@app.command()
def versions(
    ctx: typer.Context, name: Name,
    status: Annotated[str | None, typer.Option(help="Only versions in this status.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the versions of a model, oldest first."""
    with open_session(ctx) as workspace:
        found = workspace.models.versions(name, status)
        aliases = workspace.models.aliases(name)
    if as_json:
        emit_json(found)
        return
    by_version: dict[int, list[str]] = {}
    for alias in aliases:
        by_version.setdefault(alias.version, []).append(alias.alias)
    table(f"{name}: {len(found)} versions",
          ["version", "status", "flavor", "aliases", "created", "by", "run", "artifact"], [
              (v.version, str(v.status), v.flavor, ", ".join(by_version.get(v.version, [])),
               _when(v.created_at), v.created_by, v.run_id or "", v.artifact_digest[:12])
              for v in found])


def _print_version(details: VersionDetails) -> None:
    version = details.version
    console.print(f"{version.uri}  {version.status}  flavor {version.flavor}")
    if version.description:
        console.print(version.description)
    aliases = ", ".join(alias_uri(version.name, a.alias) for a in details.aliases)
    facts = [("aliases", aliases or "none"), ("artifact", f"sha256 {version.artifact_digest}"),
             ("registered", f"{_when(version.created_at)} by {version.created_by}"),
             ("run", version.run_id or "not recorded"),
             ("datasets", ", ".join(version.datasets) or "none"),
             ("environment", _environment_line(version)),
             ("trusted", f"by {details.trust.decided_by}: {details.trust.reason}"
              if details.trust else "no")]
    for label, text in facts:
        console.print(f"  {label:<12} {text}")
    _print_metrics(version)


def _environment_line(version: ModelVersion) -> str:
    env = version.environment or {}
    if not env:
        return "not recorded"
    return (f"{env.get('implementation')} {env.get('python')}, {env.get('packages')} packages "
            f"(sha256 {str(env.get('digest'))[:12]})")


def _print_metrics(version: ModelVersion) -> None:
    overall, slices = overall_metrics(version.metrics), slice_metrics(version.metrics)
    if overall:
        table("metrics", ["metric", "value"], sorted(overall.items()))
    if slices:
        names = sorted({metric for values in slices.values() for metric in values})
        table("metrics per slice", ["slice", *names],
              [(key, *(values.get(n) for n in names)) for key, values in sorted(slices.items())])
    if version.signature:
        columns = version.signature.get("inputs", [])
        table("signature", ["column", "type", "nullable"],
              [(c["name"], c["dtype"], "yes" if c.get("nullable") else "no") for c in columns])


@app.command()
def show(ctx: typer.Context, uri: Uri, as_json: JsonFlag = False) -> None:
    """Show one version: status, aliases, artifact, lineage, environment, metrics, signature."""
    with open_session(ctx) as workspace:
        details = workspace.models.get(uri)
    if as_json:
        emit_json(details)
        return
    _print_version(details)


@app.command()
def alias(
    ctx: typer.Context, name: Name,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias, e.g. champion.")],
    version: Annotated[str, typer.Argument(metavar="VERSION", help="The version to point at.")],
    as_json: JsonFlag = False,
) -> None:
    """Point NAME@ALIAS at VERSION (through the gate; audited)."""
    number = _version_number(version)
    with open_session(ctx) as workspace:
        previous = workspace.models.set_alias(name, alias_name, number)
    before = previous.version if previous is not None else None
    if as_json:
        emit_json({"uri": alias_uri(name, alias_name), "from": before, "to": number})
        return
    was = f" (was version {before})" if before is not None else ""
    success(f"{alias_uri(name, alias_name)} → version {number}{was}")


@app.command()
def unalias(
    ctx: typer.Context, name: Name,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias to remove.")],
    as_json: JsonFlag = False,
) -> None:
    """Remove NAME@ALIAS (through the gate; audited)."""
    with open_session(ctx) as workspace:
        previous = workspace.models.delete_alias(name, alias_name)
    if as_json:
        emit_json({"uri": alias_uri(name, alias_name), "from": previous.version, "to": None})
        return
    success(f"{alias_uri(name, alias_name)} removed (it named version {previous.version})")


@app.command()
def status(
    ctx: typer.Context, uri: Uri,
    new_status: Annotated[str, typer.Argument(
        metavar="STATUS", help="candidate, staging, production, archived or quarantined.")],
    as_json: JsonFlag = False,
) -> None:
    """Move a version to another lifecycle status (through the gate; audited)."""
    with open_session(ctx) as workspace:
        before = workspace.models.resolve(uri).status
        after = workspace.models.set_status(uri, new_status)
    if as_json:
        emit_json({"uri": after.uri, "from": before, "to": after.status})
        return
    success(f"{after.uri}: {before} → {after.status}")


@app.command()
def trust(
    ctx: typer.Context, uri: Uri,
    reason: Annotated[str, typer.Option(help="Why this artifact may run code when it loads.")],
    as_json: JsonFlag = False,
) -> None:
    """Record an audited decision that a version may run code when it loads (python flavor)."""
    with open_session(ctx) as workspace:
        decision = workspace.models.trust(uri, reason)
        version = workspace.models.resolve(uri)
    if as_json:
        emit_json({"uri": version.uri, "trust": decision})
        return
    success(f"{version.uri} trusted by {decision.decided_by}: {decision.reason}")


def _print_lock(uri: str, lock: str, as_json: bool) -> None:
    if as_json:
        emit_json({"uri": uri, "lock": lock})
    else:
        print(lock, end="")


def _print_differences(uri: str, found: list[EnvironmentDifference]) -> None:
    warnings = [d for d in found if d.severity == WARNING]
    if not found:
        success(f"this environment matches the one {uri} was registered in")
        return
    if warnings:
        table(f"{len(warnings)} differences that matter to {uri}",
              ["package", "recorded", "here", "note"],
              [(d.package, d.recorded or "-", d.current or "-", d.note) for d in warnings])
    others = len(found) - len(warnings)
    if others:
        console.print(f"{others} other packages differ (see --json)")


@app.command()
def env(
    ctx: typer.Context, uri: Uri,
    check: Annotated[bool, typer.Option(
        "--check", help="Compare with this environment instead of printing the lock.")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="With --check: exit 1 when a package that matters differs.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the pip requirements lock a version was registered with, or --check this one."""
    with open_session(ctx) as workspace:
        version = workspace.models.resolve(uri)
        if not check:
            _print_lock(version.uri, workspace.models.environment_lock(version.uri), as_json)
            return
        found = workspace.models.environment_diff(version.uri)
    if as_json:
        emit_json({"uri": version.uri, "differences": found})
    else:
        _print_differences(version.uri, found)
    if strict and any(d.severity == WARNING for d in found):
        raise typer.Exit(1)


@app.command()
def card(ctx: typer.Context, uri: Uri, as_json: JsonFlag = False) -> None:
    """Print a version's model card as Markdown (or --json)."""
    with open_session(ctx) as workspace:
        text = workspace.models.model_card(uri, "json" if as_json else "markdown")
    print(text, end="")


def register(root: typer.Typer) -> None:
    """Add the ``models`` group to the root command."""
    root.add_typer(app, name="models")
