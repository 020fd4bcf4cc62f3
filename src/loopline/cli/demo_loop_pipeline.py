"""The closed loop's pipelines for ``loopline demo``: train the churn model, and retrain it.

``train_churn`` trains on a validated dataset snapshot; ``retrain_churn`` is what the
playbook starts when quality drops: it reads the deployment's prediction log over the
alert's window with the feedback labels that arrived (``PredictionLog.read`` with
``with_feedback``, expanded to one row per scored row by ``window_rows.expand_predictions``),
keeps the labelled rows, snapshots and validates them as ``churn-feedback``, and trains on
that. Both register the model through the policy gate with a card (owner, purpose,
description), lineage (the snapshot and the run, ``run=current_task().run_id``, so the
playbook can start a canary of what the run registered), per-slice metrics on a held-out
quarter, and ``reference=`` the training inputs (the profile drift is measured against).

Tasks find the demo's open workspace by its root (the tasks run on the scheduler's threads
in this process): it carries the demo's clock, which a second ``Workspace.open`` would not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc

from loopline.app import Workspace
from loopline.cli.demo_loop_data import FEATURES, LABEL, SUITE, new_model, slice_metrics
from loopline.core.predictions import PredictionWindow
from loopline.data.prediction_log import ReadOptions
from loopline.data.validation import Suite
from loopline.monitoring.window_rows import LABEL as WINDOW_LABEL
from loopline.monitoring.window_rows import expand_predictions
from loopline.pipelines import current_task, pipeline, task

MODEL = "churn"
FEEDBACK_DATASET = "churn-feedback"
WORKSPACES: dict[str, Workspace] = {}
"""Open workspaces by root, for the tasks (see the module docstring)."""


class BadTrainingData(ValueError):
    """The window's labelled rows failed validation: the run fails, nothing is registered."""


@task(cache=False)  # a snapshot of what the log holds now, not a pure function of its inputs
def window_snapshot(root: str, deployment: str, window_start: str, window_end: str) -> str:
    """Snapshot and validate the labelled rows ``deployment`` served in the window."""
    workspace = WORKSPACES[root]
    window = PredictionWindow(deployment=deployment, start=datetime.fromisoformat(window_start),
                              end=datetime.fromisoformat(window_end))
    rows = expand_predictions(workspace.predictions.read(window,
                                                         ReadOptions(with_feedback=True)))
    current_task().used(f"deployment:{deployment}")
    labelled = rows.filter(pc.is_valid(rows[WINDOW_LABEL]))
    frame = labelled.select(list(FEATURES)).to_pandas()
    frame[LABEL] = labelled[WINDOW_LABEL].to_numpy(zero_copy_only=False).astype("int64")
    version = workspace.datasets.snapshot(frame, FEEDBACK_DATASET).version
    report = workspace.validate_dataset(version.ref, Suite.from_yaml(SUITE))
    if not report.passed:
        raise BadTrainingData(f"{version.ref} failed validation: "
                              + "; ".join(f.label for f in report.failures))
    return version.ref


@task(cache=False)  # registering is an effect: never answered from the cache
def train_and_register(root: str, ref: str) -> dict[str, Any]:
    """Train on ``ref`` (three quarters; the rest measures it) and register the model."""
    workspace = WORKSPACES[root]
    frame = workspace.datasets.read(ref).to_pandas()
    order = np.random.default_rng(0).permutation(len(frame))
    cut = len(frame) * 3 // 4
    train, test = frame.iloc[order[:cut]], frame.iloc[order[cut:]]
    model = new_model().fit(train[list(FEATURES)], train[LABEL])
    metrics = slice_metrics(model, test)
    version = workspace.models.register(
        model, MODEL, input_example=train[list(FEATURES)].head(100), metrics=metrics,
        datasets=[ref], run=current_task().run_id, reference=train[list(FEATURES)],
        tags={"owner": "demo", "purpose": "flag customers likely to churn"},
        description=f"logistic regression on {len(train):,} rows of {ref}")
    return {"model": version.uri, "rows": len(frame),
            "accuracy": metrics["accuracy"]["overall"]}


@pipeline
def train_churn(root: str, ref: str) -> Any:
    """Train and register the churn model on a validated snapshot."""
    return train_and_register(root, ref)


@pipeline
def retrain_churn(root: str, deployment: str, window_start: str, window_end: str) -> Any:
    """Retrain on the labelled traffic of an alert's window (started by a playbook)."""
    return train_and_register(root, window_snapshot(root, deployment, window_start,
                                                    window_end))
