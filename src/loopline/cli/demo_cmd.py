"""``loopline demo``: the main job end to end on the embedded default, with a readable summary.

It exercises a workspace, the metadata store, content-addressed artifacts, the event outbox
with a durable subscriber, the tamper-evident audit log (including catching an edit on a copy
of the database), the data layer, a pipeline run with a retried task, a cached second run and
lineage from data to result, a model registered, aliased and verified in a fresh process,
governance, serving, and then the closed loop (``demo_loop``): a churn model serves real
HTTP traffic and labels, the customers shift, drift and quality alerts fire, the retrain
playbook trains v2 on the labelled traffic, v2 passes the gate into a canary that is promoted
on its own, and quality recovers; it prints the timeline with its numbers.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from loopline.app import Workspace, workspace_status
from loopline.cli.demo_data import log_predictions, show_lineage, snapshot_and_validate
from loopline.cli.demo_governance import govern_production
from loopline.cli.demo_loop import run_loop
from loopline.cli.demo_loop_config import DEMO, SMALL
from loopline.cli.demo_loop_story import LoopFailed
from loopline.cli.demo_loop_timeline import report_period, show_timeline, timeline, write_report
from loopline.cli.demo_loop_traffic import DemoStalled
from loopline.cli.demo_models import register_model
from loopline.cli.demo_pipeline import run_pipeline
from loopline.cli.demo_serving import serve_requests
from loopline.cli.output import console, ok_or_fail, table
from loopline.core.events import Event, EventType


def _sample_csv(rows: int, seed: int) -> bytes:
    rng = random.Random(seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["sepal_length", "sepal_width", "petal_length", "species"])
    for _ in range(rows):
        kind = rng.choice(["setosa", "versicolor", "virginica"])
        writer.writerow([round(rng.gauss(5.8, 0.8), 2), round(rng.gauss(3.0, 0.4), 2),
                         round(rng.gauss(3.7, 1.7), 2), kind])
    return buffer.getvalue().encode()


def _step(number: int, text: str) -> None:
    console.print(f"\n{number}. {text}", style="bold cyan")


def _store_artifacts(workspace: Workspace) -> list[str]:
    digests = []
    for seed, rows in ((7, 150), (8, 5_000)):
        info = workspace.artifacts.put_bytes(_sample_csv(rows, seed))
        digests.append(info.digest)
        console.print(f"   stored {info.digest[:16]}… {info.size:>7} bytes (new: {info.created})")
    again = workspace.artifacts.put_bytes(_sample_csv(150, 7))
    console.print(f"   same bytes again → {again.digest[:16]}… (new: {again.created}); "
                  "identity is content")
    return digests


def _dispatch(workspace: Workspace) -> list[Event]:
    seen: list[Event] = []
    with workspace.dispatcher() as dispatcher:
        dispatcher.subscribe("demo-indexer", seen.append, {EventType.ARTIFACT_STORED})
        report = dispatcher.run_once()
        console.print(f"   delivered {report.handled} artifact.stored event(s) to 'demo-indexer'")
        again = dispatcher.run_once()
    console.print(f"   second round delivered {again.handled}: the durable cursor remembers")
    return seen


def _tamper_copy(workspace: Workspace, db_file: Path) -> str:
    copy = db_file.with_name("tampered-copy.db")
    # The backup API copies committed pages still in the WAL, which a file copy would miss.
    with closing(sqlite3.connect(db_file)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        target.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
        target.commit()
    with Workspace.open(workspace.root, overrides={"db_url": f"sqlite:///{copy}"}) as forged:
        report = forged.store.audit.verify()
    copy.unlink()
    return report.first_break.describe() if report.first_break else "no break found"


def _closed_loop(root: Path, quick: bool) -> str:
    """Run the loop and print its timeline; return the where-to-look lines about it."""
    _step(12, "Closed loop, set-up: govern, snapshot and validate, train in a run, register "
              "with a reference profile, deploy, apply monitoring")
    try:
        loop_workspace, outcome = run_loop(root, SMALL if quick else DEMO)
    except (LoopFailed, DemoStalled) as exc:
        console.print(f"   the loop did not recover: {exc}\n   see `loopline monitor alerts`, "
                      "`loopline playbooks actions` and `loopline deploy history churn` in "
                      f"{root}", style="bold red")
        raise typer.Exit(1) from exc
    with loop_workspace:
        _step(13, "Closed loop, timeline (simulated minutes: the loop's clock is moved by the "
                  "demo; traffic, models, runs and decisions are real)")
        show_timeline(timeline(loop_workspace, outcome))
        report = write_report(loop_workspace, root, outcome)
    start, end = (f"{when:%Y-%m-%dT%H:%M}Z" for when in report_period(outcome))
    return ("  the closed loop (its records carry the loop's simulated times):\n"
            "  loopline monitor show\n  loopline monitor alerts\n"
            "  loopline monitor evaluations --rule accuracy-drop\n  loopline playbooks actions\n"
            "  loopline deploy history churn\n  loopline deploy show churn\n"
            "  loopline lineage show model_version:churn/2\n  loopline models card churn/2\n"
            f"  loopline monitor report --deployment churn --start {start} --end {end}"
            + (f"\n  open {report}" if report is not None else ""))


def demo(directory: Annotated[Path | None, typer.Option(
        "--dir", help="Where to create the demo workspace (default: a new temporary folder).",
        )] = None, quick: Annotated[bool, typer.Option(
            "--quick", help="Run a smaller closed loop (fewer requests; for tests).")] = False,
         ) -> None:
    """Run loopline end to end in a fresh workspace and print what happened and where to look."""
    root = directory or Path(tempfile.mkdtemp(prefix="loopline-demo-"))
    console.print(Panel.fit("loopline demo: stores, logs, data, pipelines and models",
                            style="bold"))
    _step(1, f"Initialise a workspace in {root}")
    with Workspace.init(root) as workspace:
        console.print(f"   metadata  {workspace.store.display_url}")
        console.print(f"   artifacts {workspace.settings.artifact_root}")
        _step(2, "Store content-addressed artifacts (atomic, verified on every read)")
        digests = _store_artifacts(workspace)
        back = workspace.artifacts.get_bytes(digests[0])
        console.print(f"   read back {len(back)} bytes; SHA-256 verified while streaming")
        _step(3, "Dispatch events from the transactional outbox")
        _dispatch(workspace)
        _step(4, "Audit log: every change, chained by SHA-256")
        entries = workspace.store.audit.entries()
        table("", ["#", "actor", "action", "subject"],
              [(e.seq, e.actor, e.action, e.subject[:40]) for e in reversed(entries)])
        report = workspace.store.audit.verify()
        console.print(f"   chain verified: {report.entries} entries intact")
        if workspace.store.backend == "sqlite":
            db_file = Path(workspace.store.engine.url.database or "")
            console.print(f"   on an edited copy: {_tamper_copy(workspace, db_file)}", style="red")
        _step(5, "Datasets: snapshot, profile and validate two weeks of orders")
        snapshot_and_validate(workspace, root)
        _step(6, "Lineage: where orders@2 came from")
        show_lineage(workspace)
        _step(7, "Prediction log: batched Parquet segments, feedback joined by request id")
        log_predictions(workspace)
        _step(8, "Pipelines: fan out per country, retry a flaky task, reuse the cache")
        run_pipeline(workspace)
        _step(9, "Models: register with signature and lineage, alias, verify reproducibility")
        register_model(workspace)
        _step(10, "Governance: a policy gates production; a second person approves")
        govern_production(workspace, root)
        _step(11, "Serving: deploy it and answer through each protocol")
        serve_requests(workspace)
        loop_lines = _closed_loop(root, quick)
        _step(14, "Status")
        checks = workspace_status(workspace)
        table("", ["part", "location", "health", "detail"],
              [(c.name, c.location, ok_or_fail(c.healthy), c.detail) for c in checks])
    console.print(Panel.fit(
        f"Done. Look around (the CLI is .venv/bin/loopline; `source .venv/bin/activate`):\n"
        f"  cd {root}\n  loopline status\n  loopline audit log\n"
        "  loopline audit verify\n  loopline data list\n  loopline data diff orders@1 orders@2\n"
        "  loopline lineage show dataset_snapshot:orders@2\n  loopline events list\n"
        "  loopline runs list\n  loopline runs logs RUN_ID\n"
        "  loopline models show models:/refunds@champion\n  loopline models card refunds/1\n"
        "  loopline policy check models:/refunds/1 --gate alias --target production\n"
        "  loopline approvals list\n  loopline governance report\n"
        "  loopline deploy show refunds\n  loopline serve --port 8080\n" + loop_lines,
        title="where to look"))
    if not all(c.healthy for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the demo command to the root application."""
    app.command()(demo)
