"""``/monitoring`` and ``/playbooks``: monitoring config, evaluations, alerts, report, actions.

Rules kept here:

- Applying a config needs ``admin`` (``MonitorConfigs.apply`` says why: a config decides
  which playbooks act on their own); running the rules in force needs ``write``; the rest
  reads. ``rerun`` is a POST (an action) that writes nothing, so ``read`` is enough.
- A webhook URL's path is often its secret (``automation.notify``): callers without
  ``admin`` see every http(s) URL by its origin only (``url_origin``, as audit entries show
  a step's parameters), wherever it stands in a config's document or in an action's
  parameters and result: a step's ``url``, or text such as a ``message`` that holds one.
- Listings read at most the newest ``MAX_PAGE`` records (the stores' bound) and page
  through them (a cursor past it is refused naming ``cursor``); a JSON number cannot be
  infinite, so a stored value that is (a score the row keeps as ``inf``) answers null.
- The report and ``rerun`` read a deployment's traffic over a whole window, so each takes a
  slot of its kind of work (``api.capacity``; 503 ``busy`` when every one is taken). The
  report is the page ``loopline monitor report`` writes, built in memory. Its charts set
  matplotlib's settings while they draw (``rc_context``), which are global, so one report
  renders at a time.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from loopline.api.auth import Admin, Reader, Writer
from loopline.api.capacity import Limits, Work
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText, aware
from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError, ConflictError, InvalidArgumentError
from loopline.core.governance import Permission
from loopline.core.monitoring import (
    Alert,
    AlertState,
    Evaluation,
    EvaluationStatus,
    PlaybookAction,
)
from loopline.core.ports import authorize_if_wired
from loopline.governance.policy_yaml import MAX_FILE_BYTES, SourceDocument, read_documents
from loopline.monitoring.config_store import AppliedConfig
from loopline.monitoring.config_yaml import parse_duration
from loopline.monitoring.evaluator import Rerun
from loopline.monitoring.report_charts import require_matplotlib
from loopline.monitoring.report_gather import gather
from loopline.monitoring.report_html import CSP, render
from loopline.monitoring.report_model import report_period
from loopline.store.monitor_records import MAX_PAGE, MonitorConfigRecord
from loopline.store.playbook_records import MAX_LIST, url_origin

router = APIRouter(tags=["monitoring"])

RecordId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A record's id.")]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NameFilter = Annotated[FilterText | None, Query(max_length=128)]
YAML_SOURCE = "monitor.yaml"
_RENDER = threading.Lock()
# An http(s) URL wherever it stands in text: up to white space, a quote or an angle bracket.
_URL = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)


# ---------------------------------------------------------------------------- shapes

class ConfigDocument(BaseModel):
    """A monitoring config to apply: the document as JSON, or YAML text; and where it is from."""

    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any] | None = Field(
        default=None, description="The config document (what the YAML file holds), as JSON.")
    yaml: str | None = Field(default=None, max_length=MAX_FILE_BYTES,
                             description="The config as YAML text (one document).")
    source: str | None = Field(default=None, min_length=1, max_length=256,
                               description="Where it came from (a file name), kept with it.")


class AppliedConfigView(BaseModel):
    """A config as applied: its row, the document, and whether this call wrote it."""

    id: str
    digest: str
    applied_at: datetime
    applied_by: str
    source: str | None
    document: dict[str, Any]
    changed: bool = True
    warnings: list[str] = []


class RunRequest(BaseModel):
    """Which rules of the config in force to evaluate."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        default=None, max_length=1000, description="Only these deployments' rules.")
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="Refuse (409) unless this config is in force.")


class RerunView(BaseModel):
    """A stored evaluation measured again, beside what it said then."""

    evaluation: Evaluation
    value: float | None
    samples: int
    status: EvaluationStatus
    numbers: dict[str, Any]
    same: bool


# ---------------------------------------------------------------------------- helpers

def _sees_urls(ws: Workspace) -> bool:
    """Tell whether the caller may see webhook URLs whole (admins may)."""
    try:
        authorize_if_wired(ws.authorizer, ws.actor, Permission.ADMIN)
    except AccessDeniedError:
        return False
    return True


def _hidden(value: Any) -> Any:
    """Return ``value`` with every http(s) URL in it, at any depth, cut to its origin."""
    if isinstance(value, str):
        return _URL.sub(lambda found: url_origin(found.group()), value)
    if isinstance(value, Mapping):
        return {key: _hidden(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_hidden(item) for item in value]
    return value


def _hide_urls(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``document`` with every URL in it cut to its origin."""
    return {key: _hidden(item) for key, item in document.items()}


def _applied_view(applied: AppliedConfig, whole: bool) -> AppliedConfigView:
    document = dict(applied.document) if whole else _hide_urls(applied.document)
    return AppliedConfigView(
        id=applied.id, digest=applied.digest, applied_at=applied.applied_at,
        applied_by=applied.applied_by, source=applied.source, document=document,
        changed=applied.changed, warnings=list(applied.warnings))


def _action(action: PlaybookAction, whole: bool) -> PlaybookAction:
    return action if whole else dataclasses.replace(
        action, params=_hide_urls(action.params), result=_hide_urls(action.result))


def _finite(evaluation: Evaluation) -> Evaluation:
    value = evaluation.value
    return evaluation if value is None or math.isfinite(value) \
        else dataclasses.replace(evaluation, value=None)


def _one_document(text: str, source: str) -> SourceDocument:
    """Return the one YAML document of ``text`` and its locator, as the CLI reads a file."""
    try:
        documents = list(read_documents(source, text))
    except yaml.YAMLError as exc:  # PyYAML refuses a control character before read_documents'
        # own handling begins (in the loader's constructor)
        raise InvalidArgumentError(source, f"is not valid YAML: {exc}") from exc
    if not documents:
        raise InvalidArgumentError(source, "holds no document; write at least `rules: []` to "
                                           "apply a config without rules")
    if len(documents) > 1:
        raise InvalidArgumentError(documents[1].where(), "a monitoring config is one "
                                                         "document; this is a second")
    return documents[0]


# ---------------------------------------------------------------------------- config

@router.put("/monitoring/config", response_model=AppliedConfigView)
def apply_config(body: ConfigDocument, ws: Admin) -> AppliedConfigView:
    """Apply a config as the one in force (needs admin); the same one again writes nothing.

    Give ``document`` (JSON) or ``yaml`` (text). A problem is refused with 422 naming its
    place (``rules[0].threshold``; ``monitor.yaml:4: rules[0].threshold`` for YAML) and
    nothing is written; a rule naming a deployment that does not exist yet is a warning.
    """
    if (body.document is None) == (body.yaml is None):
        raise InvalidArgumentError("document", "give the config as `document` (JSON) or as "
                                               "`yaml` (text), one of the two")
    configs = ws.monitor_configs
    if body.yaml is not None:
        found = _one_document(body.yaml, body.source or YAML_SOURCE)
        applied = configs.apply(ws.actor, found.data, source=body.source, where=found.where)
    else:
        applied = configs.apply(ws.actor, body.document, source=body.source)
    return _applied_view(applied, whole=True)


@router.get("/monitoring/config", response_model=AppliedConfigView | None)
def current_config(ws: Reader) -> AppliedConfigView | None:
    """Return the config in force (null before the first apply)."""
    applied = ws.monitor_configs.current()
    return None if applied is None else _applied_view(applied, _sees_urls(ws))


@router.get("/monitoring/configs", response_model=Page[MonitorConfigRecord])
def list_configs(ws: Reader, paging: Paging) -> Page[MonitorConfigRecord]:
    """List applied configs, newest (the one in force) first."""
    found = ws.monitor_configs.records.configs(paging.window(MAX_PAGE))
    if not _sees_urls(ws):
        found = [dataclasses.replace(r, document=_hide_urls(r.document)) for r in found]
    return paginate(found, paging)


# ---------------------------------------------------------------------------- evaluations

@router.post("/monitoring/run", response_model=list[Evaluation])
def run_rules(body: RunRequest, ws: Writer) -> list[Evaluation]:
    """Evaluate the rules of the config in force once, as ``loopline monitor run``.

    Answers the evaluations in rule order: new ones, or those stored already for this
    minute's windows. 409 when no config is in force, or not the one ``digest`` names.
    """
    applied = ws.monitor_configs.current()
    if applied is None:
        raise ConflictError("no monitoring config is in force; apply one first "
                            "(PUT /monitoring/config)")
    if body.digest is not None and body.digest != applied.digest:
        raise ConflictError(f"the monitoring config in force is {applied.digest[:12]}, not "
                            f"{body.digest[:12]}; read it again (GET /monitoring/config)")
    return [_finite(e) for e in ws.evaluator.run(applied.config, body.deployments)]


@router.get("/monitoring/evaluations", response_model=Page[Evaluation])
def list_evaluations(ws: Reader, paging: Paging, rule: NameFilter = None,
                     deployment: NameFilter = None) -> Page[Evaluation]:
    """List stored evaluations, newest window first."""
    found = ws.monitor_configs.records.evaluations(rule, deployment, paging.window(MAX_PAGE))
    return paginate([_finite(e) for e in found], paging)


@router.get("/monitoring/evaluations/{evaluation_id}", response_model=Evaluation)
def show_evaluation(evaluation_id: RecordId, ws: Reader) -> Evaluation:
    """Return one evaluation."""
    return _finite(ws.monitor_configs.records.evaluation(evaluation_id))


@router.post("/monitoring/evaluations/{evaluation_id}/rerun", response_model=RerunView)
def rerun_evaluation(evaluation_id: RecordId, ws: Reader, limits: Limits) -> RerunView:
    """Measure a stored evaluation again from its stored rule and window; nothing is written.

    Raises:
        ApiError: 503 ``busy`` when every rerun slot is taken.
    """
    with limits.slot(Work.EVALUATION_RERUN):
        again: Rerun = ws.evaluator.rerun(evaluation_id)
    value = again.value if again.value is None or math.isfinite(again.value) else None
    return RerunView(evaluation=_finite(again.evaluation), value=value, samples=again.samples,
                     status=again.status, numbers=dict(again.numbers), same=again.same)


# ---------------------------------------------------------------------------- alerts

@router.get("/monitoring/alerts", response_model=Page[Alert])
def list_alerts(ws: Reader, paging: Paging, state: AlertState | None = None,
                deployment: NameFilter = None) -> Page[Alert]:
    """List alerts, newest opened first."""
    return paginate(ws.monitor_configs.records.alerts(state, deployment,
                                                      paging.window(MAX_PAGE)), paging)


@router.get("/monitoring/alerts/{alert_id}", response_model=Alert)
def show_alert(alert_id: RecordId, ws: Reader) -> Alert:
    """Return one alert."""
    return ws.monitor_configs.records.alert(alert_id)


# ---------------------------------------------------------------------------- report

def _period(ws: Workspace, since: str | None, start: datetime | None,
            end: datetime | None) -> tuple[datetime, datetime]:
    length = None if since is None else parse_duration(since, "since")
    first, last = aware(start, "start"), aware(end, "end")
    try:
        return report_period(ws.store.clock.now(), length, first, last)
    except InvalidArgumentError as exc:  # the CLI's flags (--since) are query parameters here
        raise InvalidArgumentError(exc.field.replace("--", ""), exc.problem) from exc


@router.get("/monitoring/report", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}},
                             "description": "The self-contained HTML report."}})
def monitoring_report(
        ws: Reader, limits: Limits,
        deployment: Annotated[str, Query(pattern=NAME, description="The deployment.")],
        since: Annotated[str | None, Query(max_length=16, description=(
            "How far back from the end: 90s, 15m, 1h, 7d (default 7d)."))] = None,
        start: Annotated[datetime | None, Query(description=(
            "Start time, ISO 8601 (UTC without a zone); instead of since."))] = None,
        end: Annotated[datetime | None, Query(description=(
            "End time, ISO 8601 (UTC without a zone); default now."))] = None,
) -> HTMLResponse:
    """Return a deployment's monitoring report over a period, as ``loopline monitor report``.

    404 for an unknown deployment; 422 naming ``since``, ``start`` or ``end`` for a period
    out of order or longer than 90 days; 503 ``busy`` when every report slot is taken.
    """
    require_matplotlib()
    begin, finish = _period(ws, since, start, end)
    with limits.slot(Work.MONITORING_REPORT):
        report = gather(ws.store, deployment, begin, finish)
        with _RENDER:
            page = render(report)
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP,
                                       "X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------------------- playbooks

@router.get("/playbooks/actions", response_model=Page[PlaybookAction], tags=["playbooks"])
def list_actions(ws: Reader, paging: Paging,
                 alert_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
                 state: Annotated[FilterText | None, Query(max_length=32)] = None,
                 ) -> Page[PlaybookAction]:
    """List playbook actions, newest first (an alert's in step order)."""
    found: Sequence[PlaybookAction] = ws.playbook_actions.list(alert_id, state,
                                                               paging.window(MAX_LIST))
    whole = _sees_urls(ws)
    return paginate([_action(a, whole) for a in found], paging)


@router.get("/playbooks/actions/{action_id}", response_model=PlaybookAction,
            tags=["playbooks"])
def show_action(action_id: RecordId, ws: Reader) -> PlaybookAction:
    """Return one playbook action: its alert, step, parameters, approval and result."""
    return _action(ws.playbook_actions.get(action_id), _sees_urls(ws))
