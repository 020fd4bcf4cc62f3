"""The quality report: overall and per slice, metrics on labelled rows only, label shares,
training values found by slice key or name, drops that are positive when worse."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import SliceSpec
from loopline.monitoring.quality import quality_report
from loopline.monitoring.window_rows import LABEL, PREDICTION

SLICES = {"reds": SliceSpec("reds", {"color": "red"}),
          "adults": SliceSpec("adults", {"age": {"min": 18}})}


def window(seed: int = 3, rows: int = 400) -> pa.Table:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    wrong = rng.random(rows) < np.where(np.arange(rows) % 2 == 0, 0.1, 0.4)
    predicted = np.where(wrong, 1 - labels, labels)
    unlabelled = rng.random(rows) < 0.25
    return pa.table({
        "color": np.where(np.arange(rows) % 2 == 0, "red", "blue"),
        "age": rng.integers(10, 60, rows),
        PREDICTION: predicted,
        LABEL: pa.array(labels, mask=unlabelled),
    })


def test_metrics_are_computed_on_labelled_rows_overall_and_per_slice() -> None:
    rows = window()
    report = quality_report(rows, SLICES, None)
    labels = np.asarray(rows[LABEL].to_pylist(), dtype=object)
    known = labels != None  # noqa: E711 - elementwise
    red = np.asarray(rows["color"].to_pylist()) == "red"
    truth = labels[known].astype(int)
    predicted = np.asarray(rows[PREDICTION])[known]
    assert report.task == "classification"
    assert report.overall.total == 400
    assert report.overall.labelled == int(known.sum())
    assert report.overall.label_share == pytest.approx(known.mean())
    assert report.overall.metrics["f1"] == pytest.approx(skm.f1_score(truth, predicted))
    reds = report.get("reds")
    assert reds.total == int(red.sum())
    assert reds.labelled == int((red & known).sum())
    assert reds.metrics["accuracy"] == pytest.approx(skm.accuracy_score(
        labels[red & known].astype(int), np.asarray(rows[PREDICTION])[red & known]))
    assert reds.metrics["accuracy"] > report.overall.metrics["accuracy"]  # the easy half


def test_training_values_are_found_by_slice_key_then_name_with_drops_positive_when_worse(
        ) -> None:
    training = {"accuracy": 0.95, "f1": {"overall": 0.9, "adults": 0.5},
                "slices": {"color=red": {"accuracy": 0.99, "f1_score": 0.97}}}
    report = quality_report(window(), SLICES, training)
    overall, reds, adults = report.overall, report.get("reds"), report.get("adults")
    assert overall.training == {"accuracy": 0.95, "f1": 0.9}
    assert overall.drop["accuracy"] == pytest.approx(0.95 - overall.metrics["accuracy"])
    assert reds.training_key == "color=red"
    assert reds.training == {"accuracy": 0.99, "f1": 0.97}
    assert reds.drop["f1"] == pytest.approx(0.97 - reds.metrics["f1"])
    assert adults.training_key == "adults"
    assert adults.training == {"f1": 0.5}
    assert adults.drop["f1"] < 0  # better than at training: a negative drop


def test_an_error_metric_drops_when_it_grows() -> None:
    rows = pa.table({PREDICTION: [1.0, 2.0, 3.0, 4.0], LABEL: [1.5, 2.5, 2.0, 5.0]})
    report = quality_report(rows, {}, {"mae": 0.25, "r2": 0.9})
    assert report.task == "regression"
    assert report.overall.metrics["mae"] == pytest.approx(0.75)
    assert report.overall.drop["mae"] == pytest.approx(0.75 - 0.25)
    assert report.overall.drop["r2"] == pytest.approx(0.9 - report.overall.metrics["r2"])


def test_a_slice_with_one_class_is_scored_as_the_windows_binary_task() -> None:
    rows = pa.table({"color": ["red", "red", "blue", "blue"], PREDICTION: [1, 0, 2, 2],
                     LABEL: [1, 1, 2, 0]})
    report = quality_report(rows, {"reds": SliceSpec("reds", {"color": "red"})}, None)
    # three classes in the window: every slice is a macro average over what it shows
    assert report.get("reds").metrics["recall"] == pytest.approx(
        skm.recall_score([1, 1], [1, 0], average="macro", zero_division=0.0))


def test_probabilities_in_json_text_give_roc_auc_and_log_loss() -> None:
    proba = [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]
    rows = pa.table({PREDICTION: [json.dumps({"0": a, "1": b}) for a, b in proba],
                     LABEL: [0, 1, 1, 1]})
    found = quality_report(rows, {}, None).overall.metrics
    assert found["roc_auc"] == pytest.approx(skm.roc_auc_score([0, 1, 1, 1],
                                                               [p[1] for p in proba]))
    assert found["log_loss"] == pytest.approx(skm.log_loss([0, 1, 1, 1], proba))


def test_a_window_without_labels_has_counts_and_no_metrics() -> None:
    rows = pa.table({"color": ["red", "blue"], PREDICTION: [0, 1],
                     LABEL: pa.nulls(2)})
    report = quality_report(rows, {"reds": SLICES["reds"]}, {"accuracy": 0.9})
    assert report.task is None
    assert (report.overall.total, report.overall.labelled, report.overall.label_share) == (
        2, 0, 0.0)
    assert report.overall.metrics == {} and report.overall.drop == {}
    assert report.get("reds").total == 1
    no_label_column = quality_report(rows.drop_columns([LABEL]), {}, None)
    assert no_label_column.overall.labelled == 0


def test_the_report_round_trips_through_json() -> None:
    report = quality_report(window(), SLICES, {"accuracy": 0.9})
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"task", "overall", "slices"}
    assert set(data["slices"]) == {"reds", "adults"}
    assert data["overall"]["drop"]["accuracy"] == pytest.approx(report.overall.drop["accuracy"])


def test_bad_rows_slices_and_task_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        quality_report(pa.table({LABEL: [1]}), {}, None)
    assert caught.value.field == "rows"
    with pytest.raises(InvalidArgumentError) as caught:
        quality_report(window(), {"x": SliceSpec("x", {"colour": "red"})}, None)
    assert caught.value.field == "slices.x.colour"
    with pytest.raises(InvalidArgumentError) as caught:
        quality_report(window(), {}, None, task="ranking")
    assert caught.value.field == "task"
    with pytest.raises(InvalidArgumentError) as caught:
        quality_report(window(), {}, None).get("nope")
    assert caught.value.field == "slice"


def test_inputs_named_label_or_prediction_are_inputs_not_the_window_s_own() -> None:
    rows = pa.table({"label": ["gold", "gold", "blue", "blue"], "prediction": [9, 9, 9, 9],
                     PREDICTION: [1, 0, 1, 1], LABEL: [1, 1, 1, 0]})
    report = quality_report(rows, {"gold": SliceSpec("gold", {"label": "gold"})}, None)
    assert report.overall.metrics["accuracy"] == 0.5
    assert report.get("gold").metrics["accuracy"] == 0.5
    assert report.get("gold").total == 2
