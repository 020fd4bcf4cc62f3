"""Signals measured from real data on every backend: a registered version with its reference
profile, requests logged to the prediction log with feedback labels, and serving stats.
Drift stays quiet on the training distribution and flags a planted shift (dataset, column
and prediction drift); a window served by two versions is judged per version and the worst
reported; quality agrees with scikit-learn, against training too, on a slice, and ignores
labels timed after the evaluation; label share, error rate, latency and throughput; a
version without a reference has no value and says why; the evaluator with this measurer
fires on a shift and re-runs an evaluation to the same value after more labels arrive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import Route
from loopline.core.monitoring import EvaluationStatus, MonitorConfig
from loopline.core.predictions import FeedbackRecord, PredictionRecord, PredictionWindow
from loopline.data.quantile_sketch import QuantileSketch
from loopline.monitoring.config_yaml import parse_config
from loopline.monitoring.evaluator import Evaluator
from loopline.monitoring.references import ReferenceProfiles
from loopline.monitoring.signals import SignalMeasurer, log_name, version_of_log_name
from loopline.monitoring.windows import MeasureTask
from loopline.serving.scoring import log_version
from loopline.store.serving_stats import StatsRow, add_stats

END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AS_OF = END + timedelta(seconds=30)
COLUMNS = ("x1", "x2", "x3")
ROWS_PER_REQUEST = 4


def _frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"x1": rng.normal(shift, 1.0, rows), "x2": rng.normal(0.0, 1.0, rows),
                         "x3": rng.normal(0.0, 1.0, rows)})


def _truth(frame: pd.DataFrame) -> np.ndarray:
    return (frame["x1"] + frame["x2"] > 0).astype(int).to_numpy()


@pytest.fixture(scope="module")
def trained() -> tuple[LogisticRegression, pd.DataFrame, float]:
    rng = np.random.default_rng(11)
    train = _frame(rng, 3000)
    model = LogisticRegression().fit(train, _truth(train))
    return model, train, float(accuracy_score(_truth(train), model.predict(train)))


@pytest.fixture
def served(ws: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float],
           ) -> Iterator[Workspace]:
    """``fraud`` v1 and v2 registered with references (v3 without one)."""
    model, train, accuracy = trained
    for _ in range(2):
        ws.models.register(model, "fraud", input_example=train.head(5), reference=train,
                           metrics={"accuracy": {"overall": accuracy, "high": 0.9}})
    ws.models.register(model, "fraud", input_example=train.head(5))
    yield ws


def _log(ws: Workspace, model: LogisticRegression, frame: pd.DataFrame, version: int,
         labels: dict[str, Any] | None = None, prefix: str = "r") -> list[str]:
    """Log ``frame`` as requests of four rows spread over the window; return request ids."""
    records, ids = [], []
    predictions = model.predict(frame)
    requests = len(frame) // ROWS_PER_REQUEST
    for index in range(requests):
        rows = slice(index * ROWS_PER_REQUEST, (index + 1) * ROWS_PER_REQUEST)
        request_id = f"{prefix}{version}-{index}"
        ids.append(request_id)
        records.append(PredictionRecord(
            request_id=request_id, time=END - timedelta(minutes=14) + timedelta(
                seconds=index * 800 / requests),
            deployment="fraud", model_version=log_version(Route("fraud", version, 100.0)),
            inputs=frame.iloc[rows].to_dict(orient="records"),
            outputs=[int(value) for value in predictions[rows]], latency_ms=5.0))
    ws.predictions.append(records)
    if labels is not None:
        truth = _truth(frame)
        ws.predictions.log_feedback([FeedbackRecord(
            request_id, labels.get("time", END - timedelta(minutes=1)),
            [int(value) for value in truth[index * ROWS_PER_REQUEST:
                                           (index + 1) * ROWS_PER_REQUEST]])
            for index, request_id in enumerate(ids) if index % labels.get("every", 1) == 0])
    return ids


def _config(**rule: Any) -> MonitorConfig:
    return parse_config({
        "drift": {"method": "psi", "share": 0.3},
        "slices": {"high": {"x2": {"min": 0.0}}},
        "rules": [{"name": "r", "deployment": "fraud", "window": "15m", "threshold": 0.2,
                   "min_samples": 50, **rule}]})


def _measure(ws: Workspace, config: MonitorConfig) -> Any:
    measurer = SignalMeasurer(ws.predictions, ReferenceProfiles(ws.store, ws._blobs), ws.store)
    return measurer.measure(MeasureTask(config.rules[0], END - timedelta(minutes=15), END,
                                        AS_OF, config.drift, config.slices))


def test_dataset_drift_is_quiet_on_the_training_distribution_and_flags_a_shift(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    model = trained[0]
    rng = np.random.default_rng(3)
    _log(served, model, _frame(rng, 2000), version=1)
    quiet = _measure(served, _config(signal="dataset_drift"))
    assert quiet.value == 0.0 and quiet.samples == 2000
    assert quiet.numbers["model_version"] == "models:/fraud/1"
    report = quiet.numbers["versions"]["models:/fraud/1"]
    assert {column["column"] for column in report["columns"]} == set(COLUMNS)

    _log(served, model, _frame(rng, 2000, shift=2.0), version=2)
    shifted = _measure(served, _config(signal="dataset_drift"))
    assert shifted.numbers["model_version"] == "models:/fraud/2"  # the worst version
    assert shifted.value == pytest.approx(1 / 3) and shifted.samples == 2000
    versions = shifted.numbers["versions"]
    assert set(versions) == {"models:/fraud/1", "models:/fraud/2"}
    assert versions["models:/fraud/2"]["drifted_columns"] == ["x1"]
    only_first = _measure(served, _config(signal="dataset_drift", version="models:/fraud/1"))
    assert only_first.value == 0.0 and set(only_first.numbers["versions"]) == {
        "models:/fraud/1"}


def test_a_model_whose_inputs_are_named_like_the_logs_columns_is_monitored(ws: Workspace,
                                                                           ) -> None:
    rng = np.random.default_rng(21)
    names = {"x1": "time", "x2": "label", "x3": "prediction"}
    train = _frame(rng, 3000).rename(columns=names)
    model = LogisticRegression().fit(train, (train["time"] + train["label"] > 0).astype(int))
    ws.models.register(model, "odd", input_example=train.head(5), reference=train)
    frame = _frame(rng, 400, shift=2.0).rename(columns=names)
    predictions = model.predict(frame)
    ws.predictions.append([PredictionRecord(
        request_id=f"o{index}", time=END - timedelta(minutes=5), deployment="odd",
        model_version=log_version(Route("odd", 1, 100.0)),
        inputs=frame.iloc[index * 4:(index + 1) * 4].to_dict(orient="records"),
        outputs=[int(v) for v in predictions[index * 4:(index + 1) * 4]], latency_ms=1.0)
        for index in range(100)])
    config = parse_config({"drift": {"method": "psi", "share": 0.3}, "rules": [
        {"name": "r", "signal": "dataset_drift", "deployment": "odd", "window": "15m",
         "threshold": 0.2}]})
    found = _measure(ws, config)
    report = found.numbers["versions"]["models:/odd/1"]
    assert {c["column"] for c in report["columns"]} == {"time", "label", "prediction"}
    assert report["drifted_columns"] == ["time"] and found.value == pytest.approx(1 / 3)


def _append(ws: Workspace, frame: pd.DataFrame, prefix: str, version: int = 1) -> None:
    """Log ``frame`` as one segment of four-row requests predicting 0."""
    ws.predictions.append([PredictionRecord(
        request_id=f"{prefix}-{index}", time=END - timedelta(minutes=10),
        deployment="fraud", model_version=log_version(Route("fraud", version, 100.0)),
        inputs=frame.iloc[index * 4:(index + 1) * 4].to_dict(orient="records"),
        outputs=[0] * 4, latency_ms=1.0) for index in range(len(frame) // 4)])


class Counting:
    """Counts the reads of a prediction log and of references."""

    def __init__(self, ws: Workspace) -> None:
        self.log, self.refs = ws.predictions, ReferenceProfiles(ws.store, ws._blobs)
        self.reads = self.segment_reads = self.reference_reads = 0

    def read(self, window: Any = None, options: Any = None) -> Any:
        self.reads += 1
        return self.log.read(window, options)

    def read_segments(self, window: Any = None) -> Iterator[Any]:
        self.segment_reads += 1
        yield from self.log.read_segments(window)

    def reference_of(self, model: str, version: int) -> Any:
        self.reference_reads += 1
        return self.refs.reference_of(model, version)


def test_drift_streams_the_window_in_batches_and_agrees_with_the_whole_window(
        served: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopline.data.profiling import profile_table
    from loopline.monitoring import signals
    from loopline.monitoring.drift import dataset_drift
    from loopline.monitoring.window_rows import expand_predictions

    monkeypatch.setattr(signals, "BATCH_REQUESTS", 7)  # many batches, split mid-segment
    rng = np.random.default_rng(31)
    quiet, shifted = _frame(rng, 400), _frame(rng, 400, shift=3.0)
    holes = _frame(rng, 120).astype(object)
    holes["x3"] = None  # a segment whose x3 is all null: Arrow's null type in its batches
    for index, frame in enumerate((quiet, holes, shifted)):
        _append(served, frame, f"s{index}")
    counting = Counting(served)
    config = _config(signal="dataset_drift")
    found = SignalMeasurer(counting, counting, served.store).measure(MeasureTask(
        config.rules[0], END - timedelta(minutes=15), END, AS_OF, config.drift))
    assert (counting.reads, counting.segment_reads) == (0, 1)
    assert found.samples == 920

    whole = expand_predictions(served.predictions.read(PredictionWindow(
        deployment="fraud", start=END - timedelta(minutes=15), end=END)))
    reference = ReferenceProfiles(served.store, served._blobs).reference_of("fraud", 1)
    assert reference is not None
    expected = dataset_drift(reference.inputs, profile_table(whole.select(list(COLUMNS))),
                             config.drift, list(COLUMNS))
    report = found.numbers["versions"]["models:/fraud/1"]
    assert found.value == expected.share and report["drifted_columns"] == ["x1"]
    for mine, theirs in zip(report["columns"], expected.to_dict()["columns"], strict=True):
        assert (mine["column"], mine["current_count"]) == (theirs["column"],
                                                           theirs["current_count"])
        assert mine["score"] == pytest.approx(theirs["score"])
    assert report["columns"][2]["current_count"] == 800  # x3's nulls are not values


def test_a_column_of_another_kind_in_the_window_is_skipped_with_the_reason(
        served: Workspace) -> None:
    rng = np.random.default_rng(32)
    _append(served, _frame(rng, 400, shift=2.0), "n")
    words = _frame(rng, 200).astype(object)
    words["x2"] = "high"  # text where the reference has numbers
    _append(served, words, "t")
    found = _measure(served, _config(signal="dataset_drift"))
    report = found.numbers["versions"]["models:/fraud/1"]
    assert report["skipped"] == {
        "x2": "kinds differ: the reference is numeric, the current window string"}
    assert [c["column"] for c in report["columns"]] == ["x1", "x3"]
    assert found.value == 0.5 and report["drifted_columns"] == ["x1"]
    x2 = _measure(served, _config(signal="column_drift", column="x2"))
    assert x2.value is None and x2.numbers["versions"]["models:/fraud/1"]["reason"] == (
        "'x2': kinds differ: the reference is numeric, the current window string")


def test_labels_a_boolean_model_cannot_be_scored_by_are_an_insufficient_evaluation(
        served: Workspace) -> None:
    rng = np.random.default_rng(34)
    frame = _frame(rng, 200)
    route = log_version(Route("fraud", 1, 100.0))
    served.predictions.append([PredictionRecord(
        request_id=f"b-{index}", time=END - timedelta(minutes=10), deployment="fraud",
        model_version=route, inputs=frame.iloc[index * 4:(index + 1) * 4].to_dict(
            orient="records"), outputs=[True, False, True, False], latency_ms=1.0)
        for index in range(50)])
    served.predictions.log_feedback([FeedbackRecord(f"b-{index}", END - timedelta(minutes=1),
                                                    [0.5, 1.0, 0.0, 0.5])
                                     for index in range(50)])
    config = parse_config({"rules": [
        {"name": "accuracy", "signal": "quality", "metric": "accuracy", "deployment": "fraud",
         "window": "15m", "threshold": 0.5, "comparison": "below", "min_samples": 10},
        {"name": "drift", "signal": "dataset_drift", "deployment": "fraud", "window": "15m",
         "threshold": 0.5}]})
    measurer = SignalMeasurer(served.predictions, ReferenceProfiles(served.store,
                                                                    served._blobs),
                              served.store)
    accuracy, drift = Evaluator(served.store, measurer, ManualClock(AS_OF)).run(config)
    assert (accuracy.status, accuracy.value) == (EvaluationStatus.INSUFFICIENT, None)
    assert accuracy.numbers["error"].startswith("invalid labels: cannot be scored as "
                                                "classification")
    assert "mix of continuous and binary" in accuracy.numbers["error"]
    assert drift.status is EvaluationStatus.OK  # the other rule is judged


def test_one_run_reads_a_window_once_for_all_its_rules(served: Workspace,
        trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    rng = np.random.default_rng(33)
    _log(served, trained[0], _frame(rng, 800, shift=1.0), version=1, labels={"every": 2})
    _log(served, trained[0], _frame(rng, 400), version=2, prefix="b")
    rules = [{"name": "drift", "signal": "dataset_drift"},
             {"name": "x1", "signal": "column_drift", "column": "x1"},
             {"name": "outputs", "signal": "prediction_drift"},
             {"name": "accuracy", "signal": "quality", "metric": "accuracy"},
             {"name": "high", "signal": "quality", "metric": "accuracy", "slice": "high"},
             {"name": "labels", "signal": "label_share"}]
    config = parse_config({
        "drift": {"method": "psi", "share": 0.3}, "slices": {"high": {"x2": {"min": 0.0}}},
        "rules": [{"deployment": "fraud", "window": "15m", "threshold": 0.2,
                   "min_samples": 10, **rule} for rule in rules]})
    counting = Counting(served)
    evaluator = Evaluator(served.store, SignalMeasurer(counting, counting, served.store),
                          ManualClock(AS_OF))
    found = evaluator.run(config)
    assert all(e.value is not None for e in found), [e.numbers for e in found]
    assert (counting.segment_reads, counting.reads, counting.reference_reads) == (1, 1, 2)
    alone = [SignalMeasurer(served.predictions, ReferenceProfiles(served.store, served._blobs),
                            served.store).measure(MeasureTask(
                                rule, END - timedelta(minutes=15), END, AS_OF, config.drift,
                                config.slices)) for rule in config.rules]
    assert [e.value for e in found] == [m.value for m in alone]  # sharing changes nothing


def test_column_and_prediction_drift_score_the_shifted_column_and_the_outputs(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    rng = np.random.default_rng(5)
    _log(served, trained[0], _frame(rng, 2000, shift=2.0), version=1)
    x1 = _measure(served, _config(signal="column_drift", column="x1"))
    x3 = _measure(served, _config(signal="column_drift", column="x3"))
    assert x1.value > 1.0 > 0.1 > x3.value  # PSI: a big shift, then none
    assert x1.numbers["versions"]["models:/fraud/1"]["method"] == "psi"
    outputs = _measure(served, _config(signal="prediction_drift"))
    assert outputs.value is not None and outputs.value > 0.2
    assert outputs.numbers["versions"]["models:/fraud/1"]["column"] == "prediction"


def test_quality_agrees_with_scikit_learn_overall_against_training_and_on_a_slice(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    model, _, training = trained
    rng = np.random.default_rng(8)
    frame = _frame(rng, 2000, shift=1.0)
    ids = _log(served, model, frame, version=1, labels={"every": 2})
    labelled = np.concatenate([np.arange(i * 4, i * 4 + 4) for i in range(0, len(ids), 2)])
    truth, predicted = _truth(frame)[labelled], model.predict(frame)[labelled]
    accuracy = _measure(served, _config(signal="quality", metric="accuracy"))
    assert accuracy.value == pytest.approx(accuracy_score(truth, predicted))
    assert accuracy.samples == len(labelled)
    drop = _measure(served, _config(signal="quality", metric="accuracy", baseline="training"))
    assert drop.value == pytest.approx(training - accuracy_score(truth, predicted))
    high = frame["x2"].to_numpy()[labelled] >= 0.0
    sliced = _measure(served, _config(signal="quality", metric="accuracy", slice="high",
                                      baseline="training"))
    assert sliced.value == pytest.approx(0.9 - accuracy_score(truth[high], predicted[high]))
    assert sliced.samples == int(high.sum())
    share = _measure(served, _config(signal="label_share"))
    assert (share.value, share.samples) == (pytest.approx(len(labelled) / 2000), 2000)


def test_labels_timed_after_the_evaluation_are_not_counted(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    rng = np.random.default_rng(9)
    _log(served, trained[0], _frame(rng, 400), version=1,
         labels={"time": AS_OF + timedelta(seconds=1)})
    late = _measure(served, _config(signal="quality", metric="accuracy"))
    assert (late.value, late.samples) == (None, 0)
    assert late.numbers["versions"]["models:/fraud/1"]["reason"] == "no labelled rows"


def test_a_version_without_a_reference_has_no_value_and_says_why(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    _log(served, trained[0], _frame(np.random.default_rng(1), 400), version=3)
    found = _measure(served, _config(signal="dataset_drift"))
    assert (found.value, found.samples) == (None, 400)
    assert found.numbers["versions"]["models:/fraud/3"]["reason"] == (
        "models:/fraud/3 has no reference profile")
    empty = _measure(served, _config(signal="dataset_drift", version="models:/fraud/1"))
    assert (empty.value, empty.samples, empty.numbers) == (
        None, 0, {"reason": "no predictions in the window"})


def test_health_signals_judge_each_version_and_throughput_the_deployment(
        served: Workspace) -> None:
    def row(version: int, bucket: int, latency: float, requests: int,
            errors: int) -> StatsRow:
        return StatsRow("fraud", f"models:/fraud/{version}", "a",
                        END - timedelta(minutes=10) + timedelta(seconds=10 * bucket), requests,
                        errors, QuantileSketch.of(np.full(requests, latency)).to_dict())

    add_stats(served.store, [row(1, 0, 10.0, 900, 9), row(2, 1, 80.0, 100, 20)])
    errors = _measure(served, _config(signal="error_rate", min_samples=10))
    assert errors.value == pytest.approx(0.2) and errors.samples == 100
    assert errors.numbers["model_version"] == "models:/fraud/2"
    assert errors.numbers["versions"]["models:/fraud/1"]["value"] == pytest.approx(0.01)
    latency = _measure(served, _config(signal="latency", metric="p99", min_samples=10))
    assert latency.value == pytest.approx(80.0, rel=0.02)
    rate = _measure(served, _config(signal="throughput", comparison="below"))
    assert rate.value == pytest.approx(1000 / 900) and rate.samples == 1000
    first = _measure(served, _config(signal="error_rate", version="models:/fraud/1"))
    assert first.value == pytest.approx(0.01) and first.samples == 900


def test_throughput_below_fires_when_nothing_was_served(served: Workspace) -> None:
    measurer = SignalMeasurer(served.predictions, ReferenceProfiles(served.store,
                                                                    served._blobs),
                              served.store)
    config = parse_config({"rules": [
        {"name": "silent", "signal": "throughput", "deployment": "fraud", "window": "15m",
         "threshold": 1, "comparison": "below", "min_samples": 100, "for": 1},
        {"name": "errors", "signal": "error_rate", "deployment": "fraud", "window": "15m",
         "threshold": 0.1, "min_samples": 1}]})
    silent, errors = Evaluator(served.store, measurer, ManualClock(AS_OF)).run(config)
    assert (silent.status, silent.value, silent.samples) == (EvaluationStatus.BREACHED, 0.0,
                                                             0)
    assert silent.alert_id is not None
    assert (errors.status, errors.value) == (EvaluationStatus.INSUFFICIENT, None)


def test_the_evaluator_fires_on_a_shift_and_reruns_to_the_same_value(
        served: Workspace, trained: tuple[LogisticRegression, pd.DataFrame, float]) -> None:
    model = trained[0]
    rng = np.random.default_rng(12)
    frame = _frame(rng, 2000, shift=1.5)
    ids = _log(served, model, frame, version=1, labels={"every": 2})
    measurer = SignalMeasurer(served.predictions, ReferenceProfiles(served.store,
                                                                    served._blobs),
                              served.store)
    config = parse_config({"drift": {"method": "psi", "share": 0.3}, "rules": [
        {"name": "drift", "signal": "dataset_drift", "deployment": "fraud", "window": "15m",
         "threshold": 0.3, "comparison": "above", "for": 1},
        {"name": "accuracy", "signal": "quality", "metric": "accuracy", "deployment": "fraud",
         "window": "15m", "threshold": 0.5, "comparison": "above", "min_samples": 100}]})
    evaluator = Evaluator(served.store, measurer, ManualClock(AS_OF))
    drift, accuracy = evaluator.run(config)
    assert drift.status is EvaluationStatus.BREACHED and drift.alert_id is not None
    assert accuracy.status is EvaluationStatus.BREACHED and accuracy.samples == 1000

    # The other half of the labels arrives later, timed after the evaluation.
    served.predictions.log_feedback([FeedbackRecord(
        request_id, AS_OF + timedelta(minutes=5),
        [int(v) for v in _truth(frame)[index * 4:(index + 1) * 4]])
        for index, request_id in enumerate(ids) if index % 2 == 1])
    for evaluation in (drift, accuracy):
        rerun = Evaluator(served.store, measurer, ManualClock(AS_OF + timedelta(days=1))).rerun(
            evaluation.id)
        assert rerun.same and rerun.value == evaluation.value


@pytest.mark.parametrize("model", ["fraud", "m" * 127, "a.v2"])
def test_log_names_are_the_model_servers_and_read_back_when_whole(model: str) -> None:
    assert log_name(f"models:/{model}/7") == log_version(Route(model, 7, 100.0))
    back = version_of_log_name(log_name(f"models:/{model}/7"))
    if len(model) < 120:
        assert back is not None and (back.name, back.version) == (model, 7)
    else:
        assert back is None  # a cut name does not hold its model's whole name
    assert version_of_log_name("not-a-version") is None
