"""``loopline monitor``: apply (a malformed file refused naming file, line and field, writing
nothing; a missing deployment a warning; the same file twice writes nothing), show, run on
logged traffic with a planted shift (an alert fires; running again in the same minute writes
nothing), evaluations, alerts, rerun, and bad input refused with its exit code. In-process
on every backend; one subprocess run proves the console entry point."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_runner import InProcessCli, WorkspaceCli, run_console
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.core.clock import SystemClock
from loopline.core.predictions import PredictionRecord

CONFIG = textwrap.dedent("""\
    drift:
      method: psi
      share: 0.3
    playbooks:
      recover:
        steps:
          - action: notify
            url: https://hooks.example.com/monitoring
    rules:
      - name: input-drift
        signal: dataset_drift
        deployment: fraud
        window: 15m
        threshold: 0.2
        min_samples: 50
        severity: critical
        playbook: recover
      - name: errors
        signal: error_rate
        deployment: fraud
        window: 5m
        threshold: 0.05
    """)


@pytest.fixture
def cli(ws: Workspace, db_url: str, run_cli: InProcessCli) -> WorkspaceCli:
    return WorkspaceCli(ws, db_url, run_cli)


def _file(cli: WorkspaceCli, text: str = CONFIG) -> str:
    path = Path(cli.ws.root) / "monitor.yaml"
    path.write_text(text)
    return str(path)


def _traffic(ws: Workspace, now: datetime) -> None:
    """Register fraud v1 with its reference, and log a shifted window of its traffic."""
    rng = np.random.default_rng(21)
    train = pd.DataFrame({name: rng.normal(0.0, 1.0, 2000) for name in ("x1", "x2", "x3")})
    model = LogisticRegression().fit(train, (train["x1"] > 0).astype(int))
    ws.models.register(model, "fraud", input_example=train.head(5), reference=train)
    shifted = train.head(400).assign(x1=lambda frame: frame["x1"] + 3.0)
    ws.predictions.append([PredictionRecord(
        f"r{index}", now - timedelta(minutes=5), "fraud", "fraud.v1",
        shifted.iloc[index * 4:index * 4 + 4].to_dict(orient="records"), [1, 1, 1, 1], 3.0)
        for index in range(100)])


def test_apply_refuses_a_malformed_file_then_applies_shows_and_writes_nothing_twice(
        cli: WorkspaceCli) -> None:
    before = cli.written()
    code, _, err = cli("monitor", "apply", _file(cli, CONFIG.replace("threshold: 0.2",
                                                                     "threshold: high")))
    assert code == 5 and "monitor.yaml:14: rules[0].threshold: must be a valid number" in err
    assert cli.written() == before
    code, out, _ = cli("monitor", "apply", "--dry-run", _file(cli))
    assert code == 0 and "is valid: 2 rules, 1 playbook, 0 slices" in out
    assert cli.written() == before

    code, out, err = cli("monitor", "apply", _file(cli))
    assert code == 0, err
    assert "applied monitoring config" in out and "2 rules, 1 playbook, 0 slices" in out
    assert "warning: deployment 'fraud' does not exist (yet)" in err
    shown: Any = cli.json("monitor", "show")
    assert shown["applied_by"] == cli.ws.actor and shown["source"] == "monitor.yaml"
    assert shown["digest"][:12] in out and shown["document"]["drift"]["share"] == 0.3
    written = cli.written()
    code, out, _ = cli("monitor", "apply", _file(cli, "# reworded\n" + CONFIG))
    assert code == 0 and "is in force already" in out and cli.written() == written
    code, out, _ = cli("monitor", "show")
    assert code == 0 and "input-drift" in out and "recover" in out and "> 0.2" in out


def test_run_fires_on_a_shift_then_lists_evaluations_alerts_and_reruns(
        cli: WorkspaceCli, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    # The commands open the workspace on the system clock: stop it, so every run below
    # falls in the same minute however long the test takes.
    monkeypatch.setattr(SystemClock, "now", lambda self: now)
    _traffic(cli.ws, now)
    assert cli("monitor", "apply", _file(cli))[0] == 0
    code, out, err = cli("monitor", "run")
    assert code == 0, err
    assert "input-drift" in out and "breached" in out and "FIRED" in out
    assert "no requests in the window" in out  # the error-rate rule: no serving stats
    evaluations: Any = cli.json("monitor", "run", "--deployment", "fraud")  # the same minute
    drift = next(e for e in evaluations if e["rule"] == "input-drift")
    assert drift["status"] == "breached" and drift["value"] == pytest.approx(1 / 3)
    assert drift["samples"] == 400 and drift["alert_id"] is not None
    written = cli.written()
    assert cli("monitor", "run")[0] == 0 and cli.written() == written

    alerts: Any = cli.json("monitor", "alerts", "--state", "firing")
    assert [(a["id"], a["rule"], a["severity"], a["playbook"]) for a in alerts] == [
        (drift["alert_id"], "input-drift", "critical", "recover")]
    assert cli.json("monitor", "alerts", "--state", "resolved") == []
    listed: Any = cli.json("monitor", "evaluations", "--rule", "input-drift")
    assert [e["id"] for e in listed] == [drift["id"]]
    code, out, _ = cli("monitor", "evaluations", "--limit", "5")
    assert code == 0 and "2 evaluations" in out
    code, out, _ = cli("monitor", "rerun", drift["id"])
    assert code == 0 and "the same answer" in out
    assert cli.json("monitor", "run", "--deployment", "elsewhere") == []


def test_bad_input_is_refused_with_its_exit_code(cli: WorkspaceCli, tmp_path: Path) -> None:
    code, _, err = cli("monitor", "run")
    assert code == 5 and "none is applied; run `loopline monitor apply FILE` first" in err
    code, _, err = cli("monitor", "apply", str(tmp_path / "missing.yaml"))
    assert code == 5 and "missing.yaml: cannot be read" in err
    code, _, err = cli("monitor", "apply", _file(cli, "rules: []\n---\nrules: []\n"))
    assert code == 5 and "monitor.yaml:3: a monitoring config is one document" in err
    code, _, err = cli("monitor", "apply", _file(cli, "# nothing\n"))
    assert code == 5 and "holds no document" in err
    code, _, err = cli("monitor", "alerts", "--state", "loud")
    assert code == 2 and "loud" in err
    code, _, err = cli("monitor", "rerun", "nope")
    assert code == 3 and "evaluation 'nope' not found" in err


@pytest.mark.e2e
def test_the_console_applies_and_shows_a_config(tmp_path: Path) -> None:
    Workspace.init(tmp_path).close()
    (tmp_path / "monitor.yaml").write_text(CONFIG)
    applied = run_console(tmp_path, "monitor", "apply", "monitor.yaml")
    assert applied.returncode == 0, applied.stderr
    assert "applied monitoring config" in applied.stdout
    shown = run_console(tmp_path, "monitor", "show")
    assert shown.returncode == 0 and "input-drift" in shown.stdout
