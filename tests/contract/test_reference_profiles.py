"""Reference profiles on every backend: registering with ``reference=`` records the profile of
the signature's input columns and of the model's outputs, read back verified with the training
metrics; large references are profiled in batches and scored on a bounded, deterministic
sample; no reference (even with an input example) records none; bad references write nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.core.errors import IntegrityError, InvalidArgumentError, UserCodeError
from loopline.core.predictions import PredictionRecord
from loopline.data.json_text import json_text
from loopline.data.profiling import Profile, profile_table
from loopline.monitoring.config_yaml import parse_config
from loopline.monitoring.references import ReferenceProfiles
from loopline.monitoring.signals import SignalMeasurer
from loopline.monitoring.windows import MeasureTask
from loopline.registry import reference_profile
from loopline.registry.holdout import select_rows
from loopline.registry.registration import Registration, prepare

METRICS = {"accuracy": 0.96, "recall": {"overall": 0.95, "petal=long": 0.9}}


class Fussy:
    """A model that breaks on batches of more than ten rows."""

    def predict(self, batch: Any) -> Any:
        if len(batch) > 10:
            raise RuntimeError("out of memory")
        return np.zeros(len(batch))


class Refusing(Fussy):
    """A model that refuses batches of more than ten rows as bad input (``ValueError``)."""

    def predict(self, batch: Any) -> Any:
        if len(batch) > 10:
            raise ValueError("too many rows")
        return np.zeros(len(batch))


class Pair:
    """A model with two outputs per row."""

    def predict(self, batch: Any) -> Any:
        values = np.asarray(batch, dtype=float)
        return np.column_stack([values[:, 0], values[:, 0] * 2])


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="module")
def model(iris: tuple[pd.DataFrame, pd.Series]) -> LogisticRegression:
    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


def references(ws: Workspace) -> ReferenceProfiles:
    return ReferenceProfiles(ws.store, ws._blobs)


def assert_same_profile(found: Profile, expected: Profile) -> None:
    assert found.rows == expected.rows
    assert found.names == expected.names
    for mine, theirs in zip(found.columns, expected.columns, strict=True):
        assert (mine.count, mine.nulls, mine.min, mine.max) == (
            theirs.count, theirs.nulls, theirs.min, theirs.max)
        assert mine.values == theirs.values  # sketches merge exactly
        assert mine.categories == theirs.categories
        assert mine.sum == pytest.approx(theirs.sum)


def test_a_reference_records_the_input_and_output_profiles_and_the_metrics(
        ws: Workspace, iris: Any, model: LogisticRegression) -> None:
    X, _ = iris
    version = ws.models.register(model, "iris", input_example=X.head(5), reference=X,
                                 metrics=METRICS)
    record = version.extra["reference_profile"]
    assert record["rows"] == 150 and record["scored_rows"] == 150
    assert record["columns"] == list(X.columns)
    assert record["selection"] == "all"
    found = references(ws).reference_of("iris", 1)
    assert found is not None
    assert found.digest == record["digest"]
    assert_same_profile(found.inputs, profile_table(pa.Table.from_pandas(X)))
    assert found.outputs is not None
    assert_same_profile(found.outputs,
                        profile_table(pa.table({"prediction": model.predict(X)})))
    assert found.metrics == version.metrics
    assert found.metrics["slices"] == {"petal=long": {"recall": 0.9}}
    assert references(ws).reference_at(version.uri) == found


def test_only_the_signatures_input_columns_are_profiled_from_a_table(
        ws: Workspace, iris: Any, model: LogisticRegression) -> None:
    X, y = iris
    table = pa.Table.from_pandas(X.assign(target=y, note="training"), preserve_index=False)
    ws.models.register(model, "iris", input_example=X.head(5), reference=table)
    found = references(ws).reference_of("iris", 1)
    assert found is not None
    assert found.inputs.names == tuple(X.columns)
    assert found.inputs.column("petal width (cm)").max == pytest.approx(X["petal width (cm)"]
                                                                         .max())


def test_a_large_reference_is_profiled_in_batches_and_scored_on_a_fixed_sample(
        ws: Workspace, iris: Any, model: LogisticRegression,
        monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = iris
    monkeypatch.setattr(reference_profile, "BATCH_ROWS", 16)
    monkeypatch.setattr(reference_profile, "SCORE_ROWS", 7)
    monkeypatch.setattr(reference_profile, "MAX_SCORED", 40)
    first = ws.models.register(model, "iris", input_example=X.head(5), reference=X)
    again = ws.models.register(model, "iris", input_example=X.head(5), reference=X)
    record = first.extra["reference_profile"]
    assert (record["scored_rows"], record["selection"]) == (40, "random(seed=0)")
    assert again.extra["reference_profile"]["digest"] == record["digest"]  # deterministic
    found = references(ws).reference_of("iris", 1)
    assert found is not None and found.outputs is not None
    assert_same_profile(found.inputs, profile_table(pa.Table.from_pandas(X)))
    rows, _ = select_rows(150, 40)
    sample = X.iloc[rows]
    assert_same_profile(found.outputs,
                        profile_table(pa.table({"prediction": model.predict(sample)})))


def test_two_outputs_per_row_are_profiled_as_json_text(ws: Workspace, iris: Any) -> None:
    X, _ = iris
    data = X.iloc[:, :2]
    ws.models.register(Pair(), "pair", flavor="python", reference=data)
    found = references(ws).reference_of("pair", 1)
    assert found is not None and found.outputs is not None
    column = found.outputs.column("prediction")
    assert column.kind == "categorical" and column.categories is not None
    expected = pd.Series([json_text([a, a * 2]) for a in data.iloc[:, 0]]).value_counts()
    assert dict(column.categories.counts) == expected.to_dict()


def test_two_outputs_per_row_logged_as_the_reference_scored_them_do_not_drift(
        ws: Workspace, iris: Any) -> None:
    X, _ = iris
    data = X.iloc[:, :2]
    ws.models.register(Pair(), "pair", flavor="python", reference=data)
    end = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    outputs = Pair().predict(data).tolist()
    ws.predictions.append([PredictionRecord(
        request_id=f"r{index}", time=end - timedelta(minutes=5), deployment="pairs",
        model_version="pair.v1", inputs=[row], outputs=[outputs[index]], latency_ms=1.0)
        for index, row in enumerate(data.to_dict(orient="records"))])
    config = parse_config({"drift": {"method": "jensen_shannon"}, "rules": [
        {"name": "outputs", "signal": "prediction_drift", "deployment": "pairs",
         "window": "15m", "threshold": 0.1, "min_samples": 1}]})
    measurer = SignalMeasurer(ws.predictions, references(ws), ws.store)
    found = measurer.measure(MeasureTask(config.rules[0], end - timedelta(minutes=15), end,
                                         end, config.drift))
    details = found.numbers["versions"]["models:/pair/1"]
    assert (details["method"], details["drifted"]) == ("jensen_shannon", False)
    assert found.value == 0.0 and found.samples == len(data)


def test_without_a_reference_none_is_recorded_even_with_an_input_example(
        ws: Workspace, iris: Any, model: LogisticRegression) -> None:
    X, _ = iris
    version = ws.models.register(model, "iris", input_example=X, metrics={"accuracy": 0.9})
    assert "reference_profile" not in version.extra
    assert references(ws).reference_of("iris", 1) is None
    assert references(ws).training_metrics("iris", 1) == {"accuracy": 0.9}


@pytest.mark.parametrize(("make", "words"), [
    (lambda X: X.drop(columns=["petal width (cm)"]), "'petal width (cm)'"),
    (lambda X: X.head(0), "no rows"),
    (lambda X: X.to_numpy(), "DataFrame or a pyarrow Table"),
    (lambda X: X.set_axis([0, 1, 2, 3], axis=1), "distinct strings"),
])
def test_a_bad_reference_is_refused_naming_it_and_nothing_is_written(
        ws: Workspace, iris: Any, model: LogisticRegression, make: Any, words: str) -> None:
    X, _ = iris
    with pytest.raises(InvalidArgumentError) as caught:
        ws.models.register(model, "iris", input_example=X.head(5), reference=make(X))
    assert caught.value.field == "reference"
    assert words in caught.value.problem
    assert ws.models.models() == []


def test_a_model_failing_on_the_reference_is_the_users_error(ws: Workspace,
                                                              iris: Any) -> None:
    X, _ = iris
    with pytest.raises(UserCodeError, match="scoring the reference: RuntimeError"):
        ws.models.register(Fussy(), "fussy", flavor="python", input_example=X.head(5),
                           reference=X)
    with pytest.raises(InvalidArgumentError, match="refused it: too many rows") as caught:
        ws.models.register(Refusing(), "fussy", flavor="python", input_example=X.head(5),
                           reference=X)
    assert caught.value.field == "reference"
    assert ws.models.models() == []


def test_a_reference_payload_missing_from_the_store_is_an_integrity_error(
        ws: Workspace, iris: Any, model: LogisticRegression) -> None:
    X, _ = iris
    prepared = prepare(model, "iris", Registration(input_example=X.head(5), reference=X))
    kept = [p for p in prepared.payloads() if p.what != "reference profile"]
    ws.models.record_version(prepared.new, kept)
    with pytest.raises(IntegrityError, match="models:/iris/1"):
        references(ws).reference_of("iris", 1)
