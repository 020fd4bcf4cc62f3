"""``loopline monitor report``: after a planted shift fires a drift alert, the command writes a
self-contained HTML page showing the rule, the columns (a name with markup escaped), the
serving stats and the alert, byte-identical when run again, prints a summary table (or JSON
with the file's size), says so where a period holds nothing, and refuses bad input with its
exit code, writing nothing: an unknown deployment (3), bad periods and outputs (5), no
matplotlib (7). In-process on every backend; one subprocess run proves the console entry."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_runner import InProcessCli, WorkspaceCli, run_console
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.core.clock import SystemClock
from loopline.core.deployments import Route
from loopline.core.events import EventType
from loopline.core.predictions import PredictionRecord
from loopline.data.quantile_sketch import QuantileSketch
from loopline.store.serving_stats import StatsRow, add_stats

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
ODD = "<b>x3</b>"
CONFIG = textwrap.dedent("""\
    drift:
      method: psi
      share: 0.3
    playbooks:
      tell:
        steps:
          - action: notify
            message: input drift on fraud
    rules:
      - name: input-drift
        signal: dataset_drift
        deployment: fraud
        window: 15m
        threshold: 0.2
        min_samples: 50
        severity: critical
        playbook: tell
      - name: errors
        signal: error_rate
        deployment: fraud
        window: 15m
        threshold: 0.01
        min_samples: 1
    """)


@pytest.fixture
def cli(ws: Workspace, db_url: str, run_cli: InProcessCli,
        monkeypatch: pytest.MonkeyPatch) -> WorkspaceCli:
    # The commands open the workspace on the system clock: stop it, so every run below
    # reports on the same period however long the test takes.
    monkeypatch.setattr(SystemClock, "now", lambda self: NOW)
    return WorkspaceCli(ws, db_url, run_cli)


def _register(ws: Workspace) -> pd.DataFrame:
    """Register fraud v1 with its reference and deploy it; return the training frame."""
    rng = np.random.default_rng(21)
    train = pd.DataFrame({name: rng.normal(0.0, 1.0, 2000) for name in ("x1", "x2", ODD)})
    model = LogisticRegression().fit(train, (train["x1"] > 0).astype(int))
    ws.models.register(model, "fraud", input_example=train.head(5), reference=train)
    ws.deployments.create("fraud", [Route("fraud", 1, 100.0)], "replace")
    return train


def _traffic(ws: Workspace) -> None:
    """Log a shifted window of fraud's traffic and the servers' stats for it."""
    shifted = _register(ws).head(400).assign(x1=lambda frame: frame["x1"] + 3.0)
    ws.predictions.append([PredictionRecord(
        f"r{index}", NOW - timedelta(minutes=5), "fraud", "fraud.v1",
        shifted.iloc[index * 4:index * 4 + 4].to_dict(orient="records"), [1, 1, 1, 1], 3.0)
        for index in range(100)])
    latencies = np.random.default_rng(3).gamma(2.0, 4.0, 100)
    add_stats(ws.store, [StatsRow("fraud", "models:/fraud/1", "server-a",
                                  NOW - timedelta(minutes=5, seconds=30), 100, 2,
                                  QuantileSketch.of(latencies).to_dict())])


def _fired(cli: WorkspaceCli) -> None:
    _traffic(cli.ws)
    path = Path(cli.ws.root) / "monitor.yaml"
    path.write_text(CONFIG)
    assert cli("monitor", "apply", str(path))[0] == 0
    code, out, err = cli("monitor", "run")
    assert code == 0 and "FIRED" in out, err
    automation = cli.ws.automation()  # what the scheduler does with the alerts
    try:
        for event in cli.ws.store.events.read_after(0, 100, types=[EventType.ALERT_FIRED]):
            automation.handle(event)
        automation.tick()
    finally:
        automation.close()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    return parsed


def test_report_writes_the_page_and_prints_what_it_shows(cli: WorkspaceCli) -> None:
    _fired(cli)
    target = Path(cli.ws.root) / "out.html"
    code, out, err = cli("monitor", "report", "--deployment", "fraud", "--output", str(target))
    assert code == 0, err
    assert "monitoring report of fraud" in out and f"wrote {target}" in out
    for shown in ("2 of 2 rules: 2 breached", "drifted in the latest: x1",
                  "100 requests, error rate 2.00%", "2 (2 firing)", "1 done"):
        assert shown in out, shown
    page = target.read_text(encoding="utf-8")
    for shown in ("Monitoring report: fraud", "input-drift", "errors", "x1", "critical",
                  "notify", "input drift on fraud", "models:/fraud/1 100% primary"):
        assert shown in page, shown
    assert "<script" not in page and ODD not in page and "&lt;b&gt;x3&lt;/b&gt;" in page
    parsed = _parsed(page)
    assert ODD in "".join(parsed.text) and "script" not in parsed.tags
    assert parsed.tags.count("svg") == 5  # drift, latency, error rate, throughput, timeline
    assert "no quality evaluations were recorded" in page

    first = target.read_bytes()
    assert cli("monitor", "report", "-d", "fraud", "-o", str(target))[0] == 0
    assert target.read_bytes() == first  # the same data renders to the same bytes

    summary: Any = cli.json("monitor", "report", "-d", "fraud", "-o", str(target))
    assert summary["output"] == str(target) and summary["bytes"] == len(first)
    assert summary["evaluations"]["total"] == 2 and summary["alerts"] == {"total": 2,
                                                                         "firing": 2}
    assert summary["drift"]["drifted_now"] == ["x1"]
    assert summary["health"]["requests"] == 100 and summary["health"]["errors"] == 2
    assert summary["end"] == NOW.isoformat()
    assert summary["start"] == (NOW - timedelta(days=7)).isoformat()


def test_the_default_file_and_a_quiet_period(cli: WorkspaceCli) -> None:
    _fired(cli)
    code, out, err = cli("monitor", "report", "-d", "fraud", "--since", "90s")
    assert code == 0, err
    assert (Path(cli.ws.root) / "monitor-report-fraud.html").is_file()
    summary: Any = cli.json("monitor", "report", "-d", "fraud", "--start",
                            "2026-02-01T00:00", "--end", "2026-02-02T00:00+00:00",
                            "-o", "quiet.html")
    assert summary["start"] == "2026-02-01T00:00:00+00:00"  # no zone given: UTC
    assert summary["evaluations"]["total"] == 0 and summary["health"] is None
    page = (Path(cli.ws.root) / "quiet.html").read_text(encoding="utf-8")
    assert "<svg" not in page
    for said in ("no drift evaluations were recorded", "no serving stats were recorded",
                 "no alert was firing"):
        assert said in page, said
    code, out, _ = cli("monitor", "report", "-d", "fraud", "--start", "2026-02-01T00:00",
                       "--end", "2026-02-02T00:00", "-o", "quiet.html")
    assert code == 0 and "nothing recorded" in out


def test_bad_input_is_refused_with_its_exit_code_and_writes_nothing(
        cli: WorkspaceCli, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(cli.ws)
    root = Path(cli.ws.root)
    before = sorted(path.name for path in root.iterdir())
    refused = {
        ("-d", "nowhere"): (3, "nowhere"),
        ("-d", "fraud", "--since", "7x"): (5, "--since"),
        ("-d", "fraud", "--since", "0m"): (5, "--since: must be longer than 0"),
        ("-d", "fraud", "--since", "100d"): (5, "at most 90 days"),
        ("-d", "fraud", "--since", "1h", "--start", "2026-02-01T00:00"): (5, "not both"),
        ("-d", "fraud", "--start", "yesterday"): (5, "--start"),
        ("-d", "fraud", "--start", "2026-03-01T00:00", "--end", "2026-02-01T00:00"):
            (5, "--end"),
        ("-d", "fraud", "-o", str(root / "missing" / "r.html")): (5, "--output"),
        ("-d", "fraud", "-o", str(root)): (5, "is a folder"),
    }
    for args, (status, said) in refused.items():
        code, _, err = cli("monitor", "report", *args)
        assert (code, said in err) == (status, True), (args, code, err)
    assert sorted(path.name for path in root.iterdir()) == before

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were missing
    code, _, err = cli("monitor", "report", "-d", "fraud")
    assert code == 7 and "pip install 'loopline[report]'" in err
    assert sorted(path.name for path in root.iterdir()) == before


@pytest.mark.e2e
def test_the_console_writes_a_report(tmp_path: Path) -> None:
    workspace = Workspace.init(tmp_path)
    try:
        _register(workspace)
    finally:
        workspace.close()
    ran = run_console(tmp_path, "monitor", "report", "--deployment", "fraud", "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    page = (tmp_path / "monitor-report-fraud.html").read_text(encoding="utf-8")
    assert summary["bytes"] == len(page.encode("utf-8"))
    assert "Monitoring report: fraud" in page and "no drift evaluations were recorded" in page
