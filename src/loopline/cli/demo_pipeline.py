"""The pipeline part of ``loopline demo``: a small training pipeline, run, retried and cached.

It reads the demo's ``orders@1`` snapshot, fans out one task per country (one of them fails
its first attempt on purpose, like a flaky upstream, and is retried), gathers the results,
and shows the run, the cache hits of a second run, and the lineage from data to result.
"""

from __future__ import annotations

from typing import Any

from loopline.app import Workspace
from loopline.cli.output import console, table
from loopline.core.runs import TaskRun
from loopline.pipelines import current_task, pipeline, task

COUNTRIES = ("de", "fr", "nl", "se", "es")
_WORKSPACES: dict[str, Workspace] = {}  # the demo's tasks read through the open workspace
_FLAKY_CALLS: dict[str, int] = {}


@task(retries=2, retry_delay=0.2)
def country_stats(root: str, ref: str, country: str) -> dict[str, Any]:
    """Return the mean and spread of order amounts of one country (a tiny "model")."""
    _FLAKY_CALLS[country] = _FLAKY_CALLS.get(country, 0) + 1
    if country == "se" and _FLAKY_CALLS[country] == 1:
        raise ConnectionError("the warehouse dropped the connection")  # transient: retried
    frame = _WORKSPACES[root].datasets.read(ref).to_pandas()
    amounts = frame.loc[frame["country"] == country, "amount"].dropna()
    return {"country": country, "rows": int(amounts.size),
            "mean": round(float(amounts.mean()), 2), "std": round(float(amounts.std()), 2)}


@task
def evaluate(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Gather the per-country models into one report."""
    best = max(models, key=lambda m: m["mean"])
    return {"countries": len(models), "rows": sum(m["rows"] for m in models),
            "highest_mean": best["country"], "task": current_task().task_key}


@task
def fetch_exchange_rates() -> dict[str, float]:
    """Stand in for an upstream call (a constant here: the demo makes no network calls)."""
    return {"eur": 1.0}


@pipeline
def revenue_model(root: str, ref: str = "orders@1") -> Any:
    """Fit one model per country on a snapshot and evaluate them together."""
    fetch_exchange_rates()
    return evaluate([country_stats(root, ref, country) for country in COUNTRIES])


def _table(title: str, tasks: list[TaskRun]) -> None:
    table(title, ["task", "state", "attempts", "error"],
          [(t.task_key, str(t.state), t.attempt, (t.error or "")[:60]) for t in tasks])


def run_pipeline(workspace: Workspace) -> None:
    """Run the demo pipeline twice (the second time from the cache) and show its lineage."""
    root = str(workspace.root)
    _WORKSPACES[root] = workspace
    _FLAKY_CALLS.clear()
    try:
        # country_stats retries transient errors only; the flaky one is a ConnectionError.
        runner = workspace.runner(max_workers=4)
        first = runner.run(revenue_model, {"root": root})
        _table(f"run {first.run.id}: {first.run.state}", runner.runs.tasks(first.run.id))
        console.print(f"   result: {first.result}")
        attempts = runner.runs.attempts(first.run.id, "country_stats-4")
        console.print(f"   country_stats-4 took {len(attempts)} attempts; the first failed with "
                      f"{attempts[0].error!r} and was retried")
        second = runner.run(revenue_model, {"root": root})
        states = sorted({str(t.state) for t in runner.runs.tasks(second.run.id)})
        console.print(f"   second run {second.run.id}: {second.run.state}, tasks {states} — "
                      "same code, same inputs, nothing recomputed")
        view = workspace.lineage.upstream(f"task_run:{first.run.id}/evaluate", depth=2)
        reads = sorted(n.id for n in view.nodes if n.id.startswith("dataset_snapshot:"))
        console.print(f"   lineage: evaluate ← country_stats ← {', '.join(reads)}; code "
                      f"{(first.run.code_version or {}).get('commit') or 'outside git'}, "
                      f"environment {(first.run.environment or {}).get('digest', '')[:12]}")
    finally:
        _WORKSPACES.pop(root, None)
