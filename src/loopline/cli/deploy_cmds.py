"""``loopline deploy``: create, update, canary, promote, roll back, pause, resume, show, list.

A deployment routes traffic between model versions named by URI (``models:/NAME/VERSION``
or ``models:/NAME@ALIAS``); an alias is resolved to a fixed version when the change is made,
and the history records both. Exit codes follow ``cli/errors.py``: 3 for an unknown
deployment or version, 4 for a move the state machine forbids or a version that may not
serve, 5 for bad input (the option is named), 9 when the gate denies the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.session import Session, actor_of
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.deployments import (
    WEIGHT_TOTAL,
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    RolloutVerdict,
    Route,
    RouteRole,
)
from loopline.core.errors import InvalidArgumentError
from loopline.core.models import version_uri
from loopline.deploy.specs import (
    infer_strategy,
    parse_arm,
    parse_interval,
    parse_percent,
    parse_steps,
    parse_strategy,
)
from loopline.store.deployment_queries import plan_record

app = typer.Typer(help="Deployments: routes between model versions, canary rollouts, rollback.",
                  no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The deployment's name.")]
ModelOption = Annotated[str, typer.Option(
    "--model", help="models:/NAME/VERSION or models:/NAME@ALIAS (resolved now).")]
Reason = Annotated[str | None, typer.Option(help="Why: kept in the history and audit log.")]
SHOWN_VERDICTS = 5


def _resolve(ws: Session, uri: str) -> tuple[str, int, str | None]:
    """Return the model, version and (for an alias) a note naming both forms."""
    model, version = ws.deployments.resolve(uri)
    fixed = version_uri(model, version)
    given = uri if uri.startswith("models:/") else f"models:/{uri}"
    return model, version, None if given == fixed else f"{given} = {fixed}"


def _with_notes(text: str, notes: Sequence[str | None]) -> str:
    kept = [note for note in notes if note]
    return f"{text} ({'; '.join(kept)})" if kept else text


def _done(deployment: Deployment, as_json: bool) -> None:
    if as_json:
        emit_json(_record(deployment))
        return
    routes = ", ".join(f"{r.uri} {r.role} {r.weight:g}%" for r in deployment.routes)
    success(f"{deployment.name}: revision {deployment.revision}, {deployment.state}: {routes}")


def _arms(ws: Session, arms: Sequence[str], notes: list[str | None]) -> list[Route]:
    routes = []
    for text in arms:
        uri, weight = parse_arm(text)
        model, version, note = _resolve(ws, uri)
        notes.append(note)
        routes.append(Route(model, version, weight, RouteRole.CANARY))
    total = sum(r.weight for r in routes)
    if total > WEIGHT_TOTAL:
        raise InvalidArgumentError("--arm", f"arm weights sum to {total:g}, above 100; the "
                                            "primary takes what the arms leave")
    return routes


@app.command()
def create(  # noqa: PLR0913 - one parameter per option is how typer declares them
    ctx: typer.Context, name: Name, model: ModelOption,
    strategy: Annotated[str | None, typer.Option(
        help="replace, shadow or ab (default: from the routes given).")] = None,
    shadow: Annotated[list[str] | None, typer.Option(
        help="Mirror traffic to this version (repeatable).")] = None,
    shadow_percent: Annotated[str, typer.Option(
        help="Share of traffic each shadow mirrors, percent.")] = "100",
    arm: Annotated[list[str] | None, typer.Option(
        help="An A/B arm, URI=PERCENT (repeatable); the primary takes the rest.")] = None,
    sticky_key: Annotated[str | None, typer.Option(
        help="What assigns A/B arms: header:NAME or field:NAME.")] = None,
    description: Annotated[str | None, typer.Option(help="What the deployment is for.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a deployment with a primary version and, optionally, A/B arms or shadows."""
    percent = parse_percent(shadow_percent, "--shadow-percent")
    with open_session(ctx) as ws:
        primary_model, primary_version, note = _resolve(ws, model)
        notes: list[str | None] = [note]
        arms = _arms(ws, arm or [], notes)
        shadows = []
        for uri in shadow or []:
            shadow_model, shadow_version, shadow_note = _resolve(ws, uri)
            notes.append(shadow_note)
            shadows.append(Route(shadow_model, shadow_version, percent, RouteRole.SHADOW))
        primary = Route(primary_model, primary_version,
                        WEIGHT_TOTAL - sum(r.weight for r in arms), RouteRole.PRIMARY)
        routes = [primary, *arms, *shadows]
        kind = parse_strategy(strategy, "--strategy") if strategy else infer_strategy(routes)
        created = ws.deployments.create(name, routes, kind, sticky_key=sticky_key,
                                        description=description,
                                        reason=_with_notes(f"created ({kind})", notes))
    _done(created, as_json)


@app.command()
def update(ctx: typer.Context, name: Name, model: ModelOption, reason: Reason = None,
           as_json: JsonFlag = False) -> None:
    """Switch the deployment to one version at once (blue/green); shadows are kept."""
    with open_session(ctx) as ws:
        target_model, version, note = _resolve(ws, model)
        text = reason or f"replaced by {version_uri(target_model, version)}"
        changed = ws.deployments.replace(name, target_model, version, _with_notes(text, [note]))
    _done(changed, as_json)


@app.command()
def canary(  # noqa: PLR0913 - one parameter per option is how typer declares them
    ctx: typer.Context, name: Name, model: ModelOption,
    steps: Annotated[str, typer.Option(help="The canary's percent at each step.")] =
    "10,25,50,100",
    interval: Annotated[str, typer.Option(help="Analysis interval (60s, 5m, 1h).")] = "60s",
    max_error_rate_increase: Annotated[float, typer.Option(
        help="How much the canary's error rate may exceed the primary's.")] = 0.01,
    max_p99_ratio: Annotated[float, typer.Option(
        help="The canary's p99 latency over the primary's, at most.")] = 1.5,
    min_samples: Annotated[int, typer.Option(
        help="Requests each side needs before a verdict.")] = 100,
    passes: Annotated[int, typer.Option(help="Passing intervals to move a step.")] = 1,
    failures: Annotated[int, typer.Option(help="Failing intervals to roll back.")] = 1,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a canary rollout of a version, judged between steps against the primary."""
    plan = CanaryPlan(parse_steps(steps), AnalysisPolicy(
        interval=parse_interval(interval), max_error_rate_increase=max_error_rate_increase,
        max_p99_ratio=max_p99_ratio, min_samples=min_samples, passes_to_promote=passes,
        failures_to_rollback=failures))
    with open_session(ctx) as ws:
        canary_model, version, note = _resolve(ws, model)
        text = reason or (f"canary {version_uri(canary_model, version)} started at "
                          f"{plan.steps[0]:g}%")
        started = ws.deployments.start_canary(name, (canary_model, version), plan,
                                              reason=_with_notes(text, [note]))
    _done(started, as_json)


@app.command()
def promote(ctx: typer.Context, name: Name, reason: Reason = None,
            as_json: JsonFlag = False) -> None:
    """Give the canary all traffic now, ending the rollout."""
    with open_session(ctx) as ws:
        _done(ws.deployments.promote(name, reason=reason), as_json)


@app.command()
def rollback(ctx: typer.Context, name: Name, reason: Reason = None,
             as_json: JsonFlag = False) -> None:
    """Return the deployment to its last good routes (never blocked by policy)."""
    with open_session(ctx) as ws:
        _done(ws.deployments.rollback(name, reason or f"rolled back by {actor_of(ws)}"), as_json)


@app.command()
def pause(ctx: typer.Context, name: Name, reason: Reason = None,
          as_json: JsonFlag = False) -> None:
    """Hold a canary rollout at its step; no analysis moves it until resumed."""
    with open_session(ctx) as ws:
        _done(ws.deployments.pause(name, reason), as_json)


@app.command()
def resume(ctx: typer.Context, name: Name, reason: Reason = None,
           as_json: JsonFlag = False) -> None:
    """Resume a paused rollout at its step; its analysis window starts again."""
    with open_session(ctx) as ws:
        _done(ws.deployments.resume(name, reason), as_json)


# -- reading -----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _record(deployment: Deployment) -> dict[str, Any]:
    return {"name": deployment.name, "strategy": str(deployment.strategy),
            "state": str(deployment.state), "revision": deployment.revision,
            "routes": [r.as_record() for r in deployment.routes],
            "last_good": [r.as_record() for r in deployment.last_good],
            "canary": None if deployment.canary is None else plan_record(deployment.canary),
            "sticky_key": deployment.sticky_key, "step": deployment.step,
            "step_started_at": deployment.step_started_at, "passes": deployment.passes,
            "failures": deployment.failures, "description": deployment.description,
            "created_at": deployment.created_at, "created_by": deployment.created_by,
            "updated_at": deployment.updated_at, "updated_by": deployment.updated_by}


def _step(deployment: Deployment) -> str:
    plan = deployment.canary
    if plan is None or deployment.state not in ("rolling_out", "paused"):
        return "no rollout in progress"
    return (f"{deployment.step + 1} of {len(plan.steps)} ({plan.steps[deployment.step]:g}%) "
            f"since {_when(deployment.step_started_at)}; passes {deployment.passes}, "
            f"failures {deployment.failures}")


def _routes_table(title: str, routes: Sequence[Route]) -> None:
    table(title, ["role", "version", "weight"],
          [(str(r.role), r.uri, f"{r.weight:g}%") for r in routes])


def _verdicts_table(verdicts: Sequence[RolloutVerdict]) -> None:
    table("last verdicts", ["decided", "step", "verdict", "window", "numbers"], [
        (_when(v.decided_at), v.step + 1, v.verdict,
         f"{_when(v.window_start)} → {_when(v.window_end)}",
         ", ".join(f"{k}={v.numbers[k]}" for k in sorted(v.numbers))) for v in verdicts])


@app.command()
def show(ctx: typer.Context, name: Name, as_json: JsonFlag = False) -> None:
    """Show a deployment: its routes, state, rollout step and last verdicts."""
    with open_session(ctx) as ws:
        deployment = ws.deployments.get(name)
        verdicts = ws.deployments.verdicts(name, SHOWN_VERDICTS)
    if as_json:
        emit_json({**_record(deployment), "verdicts": verdicts})
        return
    console.print(f"{deployment.name}  {deployment.state}  strategy {deployment.strategy}  "
                  f"revision {deployment.revision}")
    if deployment.description:
        console.print(deployment.description)
    for label, text in (("step", _step(deployment)),
                        ("sticky key", deployment.sticky_key or "none"),
                        ("updated", f"{_when(deployment.updated_at)} by "
                                    f"{deployment.updated_by}")):
        console.print(f"  {label:<12} {text}")
    _routes_table("routes", deployment.routes)
    if deployment.last_good:
        _routes_table("last good routes", deployment.last_good)
    if verdicts:
        _verdicts_table(verdicts)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List deployments with their state, revision and routes."""
    with open_session(ctx) as ws:
        found = ws.deployments.list()
    if as_json:
        emit_json([_record(d) for d in found])
        return
    table(f"{len(found)} deployments", ["name", "state", "strategy", "revision", "routes",
                                        "updated"], [
        (d.name, str(d.state), str(d.strategy), d.revision,
         ", ".join(f"{r.uri} {r.role} {r.weight:g}%" for r in d.routes), _when(d.updated_at))
        for d in found])


@app.command()
def history(
    ctx: typer.Context, name: Name,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest revisions to show.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List a deployment's revisions, newest first: routes, state, who, when and why."""
    with open_session(ctx) as ws:
        changes = ws.deployments.history(name, limit)
    if as_json:
        emit_json([{"revision": c.revision, "state": str(c.state), "reason": c.reason,
                    "actor": c.actor, "at": c.at, "routes": [r.as_record() for r in c.routes],
                    "gate": c.gate} for c in changes])
        return
    table(f"{name}: {len(changes)} revisions", ["revision", "at", "by", "state", "routes",
                                                "reason"], [
        (c.revision, _when(c.at), c.actor, str(c.state),
         ", ".join(f"{r.uri} {r.weight:g}%" for r in c.routes), c.reason) for c in changes])
