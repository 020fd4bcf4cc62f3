"""``loopline monitor``: apply and show the monitoring config, evaluate its rules, list results.

``apply FILE`` stores a YAML config as the one in force (needs admin); a malformed file is
refused naming the file, line and field (exit 5) and nothing is written; a rule naming a
deployment that does not exist yet is a warning. ``run`` evaluates every rule once (of the
deployments named) and prints what each saw; running again in the same minute returns the
stored evaluations. ``evaluations`` and ``alerts`` list what was stored, ``rerun`` measures a
stored evaluation again from its record, without writing. ``report`` writes one deployment's
self-contained HTML report over a period (``monitoring.report``) and prints what it shows;
without matplotlib (``pip install 'loopline[report]'``) it exits 7 before reading anything.
Every command works through ``--server`` too; there ``report`` writes the page the server
built and prints where (its summary's numbers stay on the server).

The file is read with ``governance.policy_yaml`` (safe loading, line numbers, no repeated
keys, no alias bombs), the reader policy files use: ``monitoring`` may not import
governance, so the CLI joins the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, err_console, success, table
from loopline.cli.session import actor_of
from loopline.cli.workspace_cmds import JsonFlag
from loopline.client import Client
from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import (
    AlertRule,
    AlertState,
    Comparison,
    Evaluation,
    EvaluationStatus,
    MonitorConfig,
)
from loopline.governance.policy_yaml import MAX_FILE_BYTES, SourceDocument, read_documents
from loopline.monitoring.config_store import AppliedConfig, summary
from loopline.monitoring.config_yaml import format_duration, parse_config, parse_duration
from loopline.monitoring.report import WrittenReport, default_path, write_monitor_report
from loopline.monitoring.report_charts import require_matplotlib
from loopline.monitoring.report_file import write_report
from loopline.monitoring.report_model import report_period

app = typer.Typer(help="Monitoring: alert rules over drift, quality and health; alerts.",
                  no_args_is_help=True)

STATUS_STYLES = {EvaluationStatus.OK: "green", EvaluationStatus.BREACHED: "bold red",
                 EvaluationStatus.INSUFFICIENT: "yellow"}
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Show at most N.")]


def register(root: typer.Typer) -> None:
    """Add the ``monitor`` group to the root command."""
    root.add_typer(app, name="monitor")


def read_config_file(path: Path) -> SourceDocument:
    """Return the one YAML document of the config file ``path``, with its line numbers.

    Raises:
        InvalidArgumentError: naming the file (and line) when it cannot be read, is larger
            than 1 MiB, is not UTF-8 or valid YAML, or holds no document or more than one.
    """
    name = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgumentError(name, f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise InvalidArgumentError(name, f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(name, f"is not UTF-8 text: {exc}") from exc
    documents = list(read_documents(name, text))
    if not documents:
        raise InvalidArgumentError(name, "holds no document; write at least `rules: []` to "
                                         "apply a config without rules")
    if len(documents) > 1:
        raise InvalidArgumentError(documents[1].where(), "a monitoring config is one "
                                                         "document; this is a second")
    return documents[0]


def _counts(config: MonitorConfig) -> str:
    facts = summary(config)
    return ", ".join(f"{facts[key]} {key if facts[key] != 1 else key[:-1]}"
                     for key in ("rules", "playbooks", "slices"))


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The monitoring config (YAML).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the file and say what it defines; write nothing.")] = False,
) -> None:
    """Apply FILE as the monitoring config in force (needs admin)."""
    document = read_config_file(file)
    # Checked here too, so a server's refusal names the file's lines as a local one does.
    config = parse_config(document.data, document.where)
    if dry_run:
        console.print(f"monitoring config {config.digest[:12]} is valid: {_counts(config)}")
        return
    with open_session(ctx) as ws:
        applied = ws.monitor_configs.apply(
            actor_of(ws), document.data, source=file.name, where=document.where)
    for warning in applied.warnings:
        err_console.print(Text.assemble(("warning: ", "yellow"), warning))
    if not applied.changed:
        console.print(f"monitoring config {applied.digest[:12]} is in force already (applied "
                      f"{_when(applied.applied_at)} by {applied.applied_by}); nothing written")
        return
    success(f"applied monitoring config {applied.digest[:12]}: {_counts(applied.config)}")


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _scope(rule: AlertRule) -> str:
    scope = rule.scope
    parts = [scope.deployment, scope.model_version, f"slice {scope.slice}" if scope.slice
             else None, f"column {scope.column}" if scope.column else None]
    return " ".join(part for part in parts if part)


def _threshold(rule: AlertRule) -> str:
    side = ">" if rule.comparison is Comparison.ABOVE else "<"
    what = f"{rule.metric} " if rule.metric else ""
    drop = "drop " if rule.baseline else ""
    return f"{drop}{what}{side} {rule.threshold:g}"


def _show_config(applied: AppliedConfig) -> None:
    config = applied.config
    console.print(f"monitoring config {applied.digest}")
    console.print(f"  applied {_when(applied.applied_at)} by {applied.applied_by}"
                  f"{f' from {applied.source}' if applied.source else ''}; {_counts(config)}")
    table("rules", ["rule", "signal", "scope", "window", "breaches at", "min samples", "for",
                    "severity", "playbook"], [
        (r.name, r.signal, _scope(r), format_duration(r.window), _threshold(r),
         r.min_samples, r.for_count, r.severity, r.playbook or "") for r in config.rules])
    if config.playbooks:
        table("playbooks", ["playbook", "steps", "cooldown"], [
            (p.name, ", ".join(f"{s.kind}{' (approval)' if s.requires_approval else ''}"
                               for s in p.steps), format_duration(p.cooldown))
            for p in config.playbooks.values()])
    drift = config.drift
    console.print(f"drift: {drift.default.method} by default, dataset drifts at a share of "
                  f"{drift.share:g}; {len(drift.columns)} column overrides; slices: "
                  f"{', '.join(config.slices) or 'none'}")


@app.command()
def show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the monitoring config in force: its rules, playbooks, slices and drift settings."""
    with open_session(ctx) as ws:
        applied = ws.monitor_configs.current()
    if applied is None:
        if as_json:
            emit_json(None)
        else:
            console.print("no monitoring config applied (run `loopline monitor apply FILE`)")
        return
    if as_json:
        emit_json({"id": applied.id, "digest": applied.digest, "source": applied.source,
                   "applied_at": applied.applied_at, "applied_by": applied.applied_by,
                   "document": applied.document})
        return
    _show_config(applied)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _status(status: EvaluationStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES[status])


def _alert_cell(evaluation: Evaluation, opened: set[str]) -> Text | str:
    if evaluation.alert_id is None:
        return ""
    if evaluation.alert_id in opened:
        return Text(f"FIRED {evaluation.alert_id[:12]}", style="bold red")
    return f"firing {evaluation.alert_id[:12]}"


def _window(evaluation: Evaluation) -> str:
    start, end = evaluation.window_start, evaluation.window_end
    day = "%Y-%m-%d " if start.date() != end.date() else ""
    return f"{start.strftime(day + '%H:%M')}-{end.strftime('%H:%M')}"


def _reason(evaluation: Evaluation) -> str:
    numbers = evaluation.numbers
    found = numbers.get("error") or numbers.get("reason")
    versions = numbers.get("versions")
    if found is None and isinstance(versions, dict) and len(versions) == 1:
        only = next(iter(versions.values()))
        found = only.get("error") or only.get("reason") if isinstance(only, dict) else None
    return str(found) if found and evaluation.status is EvaluationStatus.INSUFFICIENT else ""


def _print_evaluations(title: str, evaluations: Sequence[Evaluation],
                       rules: dict[str, AlertRule], opened: set[str]) -> None:
    table(title, ["rule", "scope", "window", "value", "threshold", "samples", "status",
                  "streak", "alert", "note"], [
        (e.rule, _scope(rules[e.rule]) if e.rule in rules else e.scope_key, _window(e),
         _number(e.value), _threshold(rules[e.rule]) if e.rule in rules else "", e.samples,
         _status(e.status), e.streak, _alert_cell(e, opened), _reason(e))
        for e in evaluations])


@app.command()
def run(
    ctx: typer.Context,
    deployments: Annotated[list[str] | None, typer.Option(
        "--deployment", "-d", help="Evaluate the rules of this deployment (repeatable); "
                                   "default: every rule.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate every rule of the config in force once, and show what each saw."""
    with open_session(ctx) as ws:
        applied = ws.monitor_configs.current()
        if applied is None:
            raise InvalidArgumentError("monitoring config", "none is applied; run `loopline "
                                                            "monitor apply FILE` first")
        evaluator = ws.evaluator
        evaluations = evaluator.run(applied.config, deployments or None)
        opened = {a.id for a in evaluator.records.alerts(state=AlertState.FIRING, limit=1000)
                  if a.evaluation_id in {e.id for e in evaluations}}
    if as_json:
        emit_json(evaluations)
        return
    if not evaluations:
        console.print("no rule to evaluate" + (f" for {', '.join(deployments)}"
                                               if deployments else ""))
        return
    rules = {rule.name: rule for rule in applied.config.rules}
    _print_evaluations(f"config {applied.digest[:12]}", evaluations, rules, opened)


@app.command()
def evaluations(
    ctx: typer.Context,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's.")] = None,
    deployment: Annotated[str | None, typer.Option(
        "--deployment", "-d", help="Only this deployment's.")] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """List stored evaluations, newest window first."""
    with open_session(ctx) as ws:
        configs = ws.monitor_configs
        found = configs.records.evaluations(rule=rule, deployment=deployment, limit=limit)
        applied = configs.current()
    if as_json:
        emit_json(found)
        return
    rules = {} if applied is None else {r.name: r for r in applied.config.rules}
    _print_evaluations(f"{len(found)} evaluations", found, rules, set())


@app.command()
def alerts(
    ctx: typer.Context,
    state: Annotated[AlertState | None, typer.Option(
        "--state", help="Only firing or only resolved alerts.")] = None,
    deployment: Annotated[str | None, typer.Option(
        "--deployment", "-d", help="Only this deployment's.")] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """List alerts, newest first."""
    with open_session(ctx) as ws:
        found = ws.monitor_configs.records.alerts(state, deployment, limit)
    if as_json:
        emit_json(found)
        return
    table(f"{len(found)} alerts", ["opened", "alert", "rule", "scope", "severity", "state",
                                   "value", "playbook", "resolved"], [
        (_when(a.opened_at), a.id, a.rule, a.scope_key, a.severity,
         Text(a.state.value, style="bold red" if a.state is AlertState.FIRING else "green"),
         _number(_float(a.numbers.get("value"))), a.playbook or "", _when(a.resolved_at))
        for a in found])


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@app.command()
def rerun(
    ctx: typer.Context,
    evaluation_id: Annotated[str, typer.Argument(help="The evaluation's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Measure a stored evaluation again from its stored rule and window (writes nothing)."""
    with open_session(ctx) as ws:
        again = ws.evaluator.rerun(evaluation_id)
    stored = again.evaluation
    if as_json:
        emit_json({"evaluation": stored, "value": again.value, "samples": again.samples,
                   "status": again.status, "numbers": again.numbers, "same": again.same})
        return
    table(f"evaluation {stored.id} of {stored.rule}", ["", "value", "samples", "status"], [
        ("stored", _number(stored.value), stored.samples, _status(stored.status)),
        ("now", _number(again.value), again.samples, _status(again.status))])
    console.print("the same answer" if again.same else
                  "a different answer: the window's data changed since")


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidArgumentError(
            flag, f"{text!r} is not an ISO 8601 time such as 2026-01-31T09:00Z") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size >= 1024 else f"{size} bytes"


def _print_report(written: WrittenReport) -> None:
    facts = written.report.summary()
    counts, health, actions = facts["evaluations"], facts["health"], facts["actions"]
    drift, alerts = facts["drift"], facts["alerts"]
    quality = "; ".join(f"{q['metric']} on {q['slice']} {_number(q['value'])} (training "
                        f"{_number(q['training'])})" for q in facts["quality"])
    table(f"monitoring report of {facts['deployment']}", ["section", "shows"], [
        ("period", f"{facts['start']} to {facts['end']}"),
        ("routes now", "; ".join(facts["routes"]) or "none"),
        ("config in force", (facts["config_digest"] or "none")[:12]),
        ("evaluations", f"{counts['total']} of {counts['rules']} rules: {counts['breached']} "
                        f"breached, {counts['ok']} ok, {counts['insufficient']} insufficient"),
        ("drift", f"{drift['charts']} charts over {drift['columns']} columns; drifted in the "
                  f"latest: {', '.join(drift['drifted_now']) or 'none'}"
         if drift["columns"] else "nothing recorded"),
        ("quality", quality or "nothing recorded"),
        ("latency and errors", "nothing recorded" if health is None else
         f"{health['requests']} requests, error rate {health['error_rate']:.2%}, p50 "
         f"{_number(health['p50_ms'])} ms, p95 {_number(health['p95_ms'])} ms, p99 "
         f"{_number(health['p99_ms'])} ms"),
        ("alerts", f"{alerts['total']} ({alerts['firing']} firing)"),
        ("playbook actions", ", ".join(f"{count} {state}" for state, count in actions.items()
                                       if state != "total") or "none"),
    ])
    success(f"wrote {written.path} ({_kilobytes(written.size)})")


def _print_remote_report(deployment: str, page: str, output: Path | None,
                         as_json: bool) -> None:
    path = output if output is not None else default_path(deployment)
    size = write_report(path, page)
    if as_json:
        emit_json({"deployment": deployment, "output": str(path), "bytes": size})
        return
    success(f"wrote {path} ({_kilobytes(size)})")


@app.command()
def report(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    deployment: Annotated[str, typer.Option(
        "--deployment", "-d", help="The deployment to report on.")],
    since: Annotated[str | None, typer.Option(
        "--since", help="How far back from the end: 90s, 15m, 1h, 7d (default 7d).")] = None,
    start: Annotated[str | None, typer.Option(
        "--start", help="Start time, ISO 8601 (UTC when no zone is given); instead of "
                        "--since.")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="End time, ISO 8601 (UTC when no zone is given); default: now.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The HTML file to write (default: "
                               "monitor-report-DEPLOYMENT.html here).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a self-contained HTML report of a deployment's monitoring, and summarise it.

    Through --server the server builds the page; only where it was written is printed
    (the summary's numbers are the server's to gather).
    """
    length = None if since is None else parse_duration(since, "--since")
    first, last = _time(start, "--start"), _time(end, "--end")
    with open_session(ctx) as ws:
        if isinstance(ws, Client):
            page = ws.monitor_configs.report(deployment, length, first, last)
            _print_remote_report(deployment, page, output, as_json)
            return
        require_matplotlib()  # exit 7 before reading anything
        begin, finish = report_period(ws.store.clock.now(), length, first, last)
        written = write_monitor_report(ws.store, deployment, begin, finish, output)
    if as_json:
        emit_json({**written.report.summary(), "output": str(written.path),
                   "bytes": written.size})
        return
    _print_report(written)
