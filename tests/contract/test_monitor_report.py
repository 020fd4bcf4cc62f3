"""The monitoring report on every backend, from a loop run through the real services: a model
registered with its reference, requests and labels logged, serving stats written, the rules
evaluated every 15 minutes by the evaluator with the real measurer (a planted shift fires a
drift alert), the alert's playbook run by the automation (a notify and a rollback). The
gathered report holds every evaluation, each column's drift and each slice's quality as the
evaluations stored them, the served requests, the alert and its actions; the page shows
them escaped, loads nothing, parses as XML and renders byte-identically twice; a period
without records says so; the file is written whole or not at all."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import Route
from loopline.core.errors import ConfigurationError, InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.monitoring import ActionState, AlertState, EvaluationStatus, SignalKind
from loopline.core.predictions import FeedbackRecord, PredictionRecord
from loopline.data.quantile_sketch import QuantileSketch
from loopline.monitoring import report_charts, report_gather
from loopline.monitoring.report import write_monitor_report
from loopline.monitoring.report_file import write_report
from loopline.monitoring.report_gather import gather, sample_points
from loopline.monitoring.report_html import render
from loopline.monitoring.report_model import MonitorReport, report_period
from loopline.store.monitor_history import MonitorHistory
from loopline.store.serving_stats import StatsRow, add_stats

T0 = datetime(2026, 3, 1, 10, 0, 20, tzinfo=UTC)
ROUND = timedelta(minutes=15)
ROUNDS = 6
SHIFTED_FROM = 3  # rounds 3, 4, 5 carry the planted shift
ODD = "<b>x3</b>"  # a column name with markup: it must come out escaped
COLUMNS = ("x1", "x2", ODD)
ROWS_PER_REQUEST = 4
REQUESTS_PER_ROUND = 60
CONFIG: dict[str, Any] = {
    "drift": {"method": "psi", "share": 0.3},
    "slices": {"high": {"x2": {"min": 0.0}}},
    "playbooks": {"respond": {"cooldown": "0s", "steps": [
        {"action": "notify", "message": "drift on fraud <i>now</i>"},
        {"action": "rollback"}]}},
    "rules": [
        {"name": "input-drift", "signal": "dataset_drift", "deployment": "fraud",
         "window": "15m", "threshold": 0.2, "min_samples": 50, "severity": "critical",
         "playbook": "respond"},
        {"name": "acc-high", "signal": "quality", "metric": "accuracy", "slice": "high",
         "deployment": "fraud", "window": "15m", "threshold": 0.8, "comparison": "below",
         "min_samples": 10},
        {"name": "errors", "signal": "error_rate", "deployment": "fraud", "window": "15m",
         "threshold": 0.05, "min_samples": 1},
    ]}


def _frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"x1": rng.normal(shift, 1.0, rows), "x2": rng.normal(0.0, 1.0, rows),
                         ODD: rng.normal(0.0, 1.0, rows)})


def _truth(frame: pd.DataFrame, shift: float = 0.0) -> np.ndarray:
    """Label the rows; under the planted shift the labels move with ``x1`` (quality drops)."""
    return (frame["x1"] - shift - 1.5 * frame["x2"] > 0).astype(int).to_numpy()


@dataclass
class Loop:
    """What the loop left behind, to compare the report with."""

    ws: Workspace
    clock: ManualClock
    digest: str
    requests: int
    errors: int
    evaluated: list[Any]


def _log_round(ws: Workspace, model: LogisticRegression, rng: np.random.Generator,
               index: int, now: datetime) -> None:
    """Log one round's requests (with labels) and serving stats just before ``now``."""
    shift = 3.0 if index >= SHIFTED_FROM else 0.0
    frame = _frame(rng, REQUESTS_PER_ROUND * ROWS_PER_REQUEST, shift)
    predictions, truth = model.predict(frame), _truth(frame, shift)
    records, feedback = [], []
    for request in range(REQUESTS_PER_ROUND):
        rows = slice(request * ROWS_PER_REQUEST, (request + 1) * ROWS_PER_REQUEST)
        at = now - ROUND + timedelta(seconds=30 + request * 12)
        records.append(PredictionRecord(
            f"r{index}-{request}", at, "fraud", "fraud.v2",
            frame.iloc[rows].to_dict(orient="records"),
            [int(value) for value in predictions[rows]], 5.0))
        feedback.append(FeedbackRecord(f"r{index}-{request}", at + timedelta(seconds=1),
                                       [int(value) for value in truth[rows]]))
    ws.predictions.append(records)
    ws.predictions.log_feedback(feedback)
    errors = 6 if index >= SHIFTED_FROM else 0
    latencies = rng.gamma(2.0, 4.0 if index < SHIFTED_FROM else 9.0, REQUESTS_PER_ROUND)
    add_stats(ws.store, [StatsRow("fraud", "models:/fraud/2", "server-a",
                                  now - ROUND + timedelta(seconds=10 * (index % 2 + 3)),
                                  REQUESTS_PER_ROUND, errors,
                                  QuantileSketch.of(latencies).to_dict())])


def _run_loop(ws: Workspace, clock: ManualClock) -> Loop:
    rng = np.random.default_rng(7)
    train = _frame(rng, 3000)
    model = LogisticRegression().fit(train, _truth(train))
    accuracy = float(accuracy_score(_truth(train), model.predict(train)))
    for _ in range(2):
        ws.models.register(model, "fraud", input_example=train.head(5), reference=train,
                           metrics={"accuracy": {"overall": accuracy, "high": 0.9}})
    ws.deployments.create("fraud", [Route("fraud", 1, 100.0)], "replace")
    ws.deployments.replace("fraud", "fraud", 2)
    applied = ws.monitor_configs.apply(ws.actor, CONFIG)
    automation = ws.automation()
    evaluated: list[Any] = []
    cursor = 0
    try:
        for index in range(ROUNDS):
            clock.advance(ROUND)
            _log_round(ws, model, rng, index, clock.now())
            evaluated.extend(ws.evaluator.run(applied.config))
            for event in ws.store.events.read_after(cursor, 100,
                                                    types=[EventType.ALERT_FIRED]):
                automation.handle(event)
                cursor = event.seq
            for _ in range(3):
                automation.tick()
    finally:
        automation.close()
    errors = sum(6 for index in range(ROUNDS) if index >= SHIFTED_FROM)
    return Loop(ws, clock, applied.digest, ROUNDS * REQUESTS_PER_ROUND, errors, evaluated)


@pytest.fixture
def loop(db_url: str, tmp_path: Path) -> Iterator[Loop]:
    clock = ManualClock(T0)
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": db_url}, clock=clock)
    try:
        yield _run_loop(workspace, clock)
    finally:
        workspace.close()


def _gathered(loop: Loop) -> MonitorReport:
    return gather(loop.ws.store, "fraud", T0 - timedelta(minutes=5), loop.clock.now())


def _of(loop: Loop, rule: str) -> list[Any]:
    return sorted((e for e in loop.evaluated if e.rule == rule), key=lambda e: e.window_end)


def test_the_report_holds_every_evaluation_column_slice_request_alert_and_action(
        loop: Loop) -> None:
    report = _gathered(loop)
    statuses = [e.status for e in loop.evaluated]
    assert (report.counts.total, report.counts.rules) == (3 * ROUNDS, 3)
    assert report.counts.breached == statuses.count(EvaluationStatus.BREACHED) > 0
    assert report.counts.ok == statuses.count(EvaluationStatus.OK)
    header = report.header
    assert header.config_digest == loop.digest and header.digests_used == (loop.digest,)
    # the playbook rolled fraud back to v1: the routes now, and the change in the period
    assert header.routes == ("models:/fraud/1 100% primary",)
    assert [c.routes for c in header.route_changes][-1] == "models:/fraud/1 100% primary"

    [chart] = report.drift_charts
    assert (chart.rule, chart.method, chart.window) == ("input-drift", "psi", "15m")
    assert sorted(line.name for line in chart.columns) == sorted(COLUMNS)
    drift = _of(loop, "input-drift")
    x1 = next(line for line in chart.columns if line.name == "x1")
    assert [p.at for p in x1.points] == [e.window_end for e in drift]
    stored = [next(c["score"] for c in e.numbers["versions"]["models:/fraud/2"]["columns"]
                   if c["column"] == "x1") for e in drift]
    assert [p.value for p in x1.points] == pytest.approx(stored)
    assert all(v < 0.2 for v in stored[:SHIFTED_FROM]) and all(
        v >= 0.2 for v in stored[SHIFTED_FROM:])
    assert x1.threshold == 0.2
    [latest] = report.drift_latest
    assert latest.share == pytest.approx(1 / 3) and latest.model_version == "models:/fraud/2"
    assert {c.column: c.drifted for c in latest.columns} == {"x1": True, "x2": False,
                                                             ODD: False}

    [quality] = report.quality_series
    accuracy = _of(loop, "acc-high")
    assert (quality.metric, quality.slice, quality.training, quality.threshold) == (
        "accuracy", "high", 0.9, 0.8)
    assert [p.value for p in quality.points] == [e.value for e in accuracy]
    [newest] = report.quality_latest
    assert newest.value == accuracy[-1].value and newest.training == 0.9
    assert newest.labelled == accuracy[-1].samples and newest.label_share == 1.0

    health = report.health
    assert health.overall is not None
    assert (health.overall.requests, health.overall.errors) == (loop.requests, loop.errors)
    assert list(health.versions) == ["models:/fraud/2"]
    assert sum(p.requests for p in health.points) == loop.requests
    assert health.overall.p95_ms is not None and health.overall.p50_ms < health.overall.p95_ms

    [alert] = [a for a in report.alerts if a.rule == "input-drift"]
    assert alert.state is AlertState.FIRING and alert.severity == "critical"
    assert {a.rule for a in report.alerts} <= {"input-drift", "acc-high", "errors"}
    drift_actions = [a for a in report.actions if a.alert_id == alert.id]
    assert [(a.step, str(a.kind), a.state) for a in drift_actions] == [
        (0, "notify", ActionState.DONE), (1, "rollback", ActionState.DONE)]
    summary = report.summary()
    assert summary["drift"]["drifted_now"] == ["x1"]
    assert summary["actions"]["done"] == len([a for a in report.actions
                                              if a.state is ActionState.DONE])


def _settings() -> dict[str, Any]:
    """Return matplotlib's settings but ``backend``, which it resolves once on first use."""
    return {key: value for key, value in matplotlib.rcParams.items() if key != "backend"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.policy: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "meta" and found.get("http-equiv") == "Content-Security-Policy":
            self.policy = found.get("content")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_page_shows_it_escaped_self_contained_well_formed_and_the_same_twice(
        loop: Loop) -> None:
    report = _gathered(loop)
    settings = _settings()
    page = render(report)
    assert _settings() == settings  # no global state left behind
    assert page == render(_gathered(loop))  # byte-identical from the store twice
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page
    assert "<b>x3</b>" not in page and "&lt;b&gt;x3&lt;/b&gt;" in page
    assert "<i>now</i>" not in page and "&lt;i&gt;now&lt;/i&gt;" in page
    for shown in ("input-drift", "acc-high", "models:/fraud/1 100% primary", loop.digest,
                  "notify", "rollback", "critical", "Drift per column", "Quality per slice",
                  "Latency and errors", "Alerts and playbooks"):
        assert shown in page, shown
    parsed = _Tags()
    parsed.feed(page)
    parsed.close()
    assert parsed.policy is not None and parsed.policy.startswith("default-src 'none';")
    text = "".join(parsed.text)
    assert "<b>x3</b>" in text  # the escaped name reads back as the name
    # drift, quality, latency, error rate, throughput and the timeline
    assert parsed.tags.count("svg") == 6 and "script" not in parsed.tags
    root = ET.fromstring(page.split("\n", 1)[1])  # well-formed XML after the doctype
    ids = [node.get("id") for node in root.iter() if node.get("id")]
    assert len(ids) == len(set(ids)) > 0


def test_a_period_without_records_says_so_instead_of_drawing(loop: Loop) -> None:
    before = gather(loop.ws.store, "fraud", T0 - timedelta(days=2), T0 - timedelta(days=1))
    assert before.counts.total == 0 and before.alerts == () and before.actions == ()
    assert before.drift_charts == () and before.health.overall is None
    page = render(before)
    assert "<svg" not in page
    for said in ("no drift evaluations were recorded", "no quality evaluations were recorded",
                 "no serving stats were recorded", "no alert was firing"):
        assert said in page, said


def test_charts_use_the_newest_evaluation_of_each_slice_of_the_period(
        loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    start, end = T0 - timedelta(minutes=5), loop.clock.now()
    points = MonitorHistory(loop.ws.store.engine).evaluation_points("fraud", start, end)
    assert len(points) == 3 * ROUNDS
    kept = sample_points(points, start, end, limit=2)
    drift = [p for p in kept if p.rule == "input-drift"]
    newest = _of(loop, "input-drift")
    middle = start + (end - start) / 2  # 10:42:50; windows end 10:15, 10:30, ... 11:30
    first_half = [e.window_end for e in newest if e.window_end < middle]
    assert len(first_half) == 2
    # the newest evaluation of each half of the period (the last of all is always kept)
    assert [p.window_end for p in drift] == [first_half[-1], newest[-1].window_end]
    monkeypatch.setattr(report_gather, "MAX_POINTS", 2)
    [chart] = gather(loop.ws.store, "fraud", start, end).drift_charts
    assert [p.at for p in chart.columns[0].points] == [p.window_end for p in drift]
    assert gather(loop.ws.store, "fraud", start, end).counts.total == 3 * ROUNDS


def test_alerts_in_the_period_are_those_firing_at_some_moment_of_it(loop: Loop) -> None:
    [alert] = [a for a in _gathered(loop).alerts if a.rule == "input-drift"]
    later = gather(loop.ws.store, "fraud", loop.clock.now(),
                   loop.clock.now() + timedelta(hours=1))
    assert alert.id in {a.id for a in later.alerts}  # still firing after it opened
    earlier = gather(loop.ws.store, "fraud", T0, alert.opened_at - timedelta(seconds=1))
    assert alert.id not in {a.id for a in earlier.alerts}
    # the evaluation that opened it is the period's last: so is the alert
    until = gather(loop.ws.store, "fraud", T0, alert.opened_at)
    assert alert.id in {a.id for a in until.alerts}
    assert until.drift_latest[0].at == alert.opened_at.replace(second=0)


def test_bad_periods_and_names_are_refused(loop: Loop) -> None:
    store = loop.ws.store
    now = loop.clock.now()
    with pytest.raises(NotFoundError):
        gather(store, "nowhere", now - timedelta(hours=1), now)
    with pytest.raises(InvalidArgumentError) as caught:
        gather(store, "fraud", now, now - timedelta(hours=1))
    assert caught.value.field == "--end"
    with pytest.raises(InvalidArgumentError) as caught:
        gather(store, "fraud", now - timedelta(days=91), now)
    assert caught.value.field == "--start"
    with pytest.raises(InvalidArgumentError) as caught:
        report_period(now, timedelta(hours=1), now - timedelta(hours=2))
    assert caught.value.field == "--since/--start"
    with pytest.raises(InvalidArgumentError):
        gather(store, "fraud", now.replace(tzinfo=None) - timedelta(hours=1), now)
    assert report_period(now) == (now - timedelta(days=7), now)


def test_the_file_is_written_whole_or_not_at_all(loop: Loop, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    now = loop.clock.now()
    target = tmp_path / "out" / "report.html"
    with pytest.raises(InvalidArgumentError) as caught:
        write_monitor_report(loop.ws.store, "fraud", now - timedelta(hours=2), now, target)
    assert caught.value.field == "--output" and not target.parent.exists()
    target.parent.mkdir()
    written = write_monitor_report(loop.ws.store, "fraud", now - timedelta(hours=2), now,
                                   target)
    assert written.size == target.stat().st_size and written.path == target
    before = target.read_bytes()
    assert b"input-drift" in before

    def refuse(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(InvalidArgumentError) as caught:
        write_report(target, "<html>half</html>")
    assert "No space left on device" in caught.value.problem
    assert target.read_bytes() == before  # the old report stands
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temp file


def test_without_matplotlib_nothing_is_read_and_the_extra_is_named(
        loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    target = tmp_path / "report.html"

    def never(*args: Any) -> Any:
        raise AssertionError("the store was read")

    monkeypatch.setattr(report_gather.MonitorHistory, "evaluation_points", never)
    with pytest.raises(ConfigurationError) as caught:
        write_monitor_report(loop.ws.store, "fraud", T0, loop.clock.now(), target)
    assert report_charts.INSTALL_HINT in str(caught.value)
    assert not target.exists()


def test_drift_numbers_of_a_version_scoped_rule_and_odd_values_read_as_stored() -> None:
    from loopline.core.monitoring import Evaluation
    from loopline.monitoring.report_series import column_scores, drift_sections, number

    def evaluation(numbers: dict[str, Any], at: datetime) -> Evaluation:
        return Evaluation("e", "r", "k", "fraud", SignalKind.COLUMN_DRIFT, at - ROUND, at,
                          None, 10, EvaluationStatus.INSUFFICIENT, 0,
                          {"rule": {"window": "15m"}}, numbers, "d", at)

    top = {"column": "x1", "method": "ks", "score": "inf", "threshold": 0.05,
           "drifted": False, "kind": "numeric"}
    [score] = column_scores(evaluation(top, T0))
    assert (score.column, score.score, score.p_value) == ("x1", math.inf, True)
    assert column_scores(evaluation({"reason": "no predictions in the window"}, T0)) == []
    assert [number(v) for v in ("nan", float("nan"), True, "-inf", 2)] == [
        None, None, None, -math.inf, 2.0]
    charts, latest = drift_sections([evaluation({"reason": "nothing served"}, T0),
                                     evaluation(top, T0 + ROUND)])
    assert [c.p_value for c in charts] == [True] and latest[0].columns[0].column == "x1"
    charts, latest = drift_sections([evaluation({"error": "bad body"}, T0)])
    assert charts == () and latest[0].reason == "bad body"
