"""Quality metrics equal scikit-learn's (binary, multiclass, probabilities as mappings or
lists, regression) on seeded data; the task is inferred from the rows or given; undefined
metrics are left out; malformed input is refused naming the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from loopline.core.errors import InvalidArgumentError
from loopline.monitoring.quality import quality_metrics
from loopline.monitoring.quality_scores import infer_task, model_classes, positive_class

RNG_SEED = 8


def softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    labels = rng.integers(0, 2, 500)
    proba = softmax(rng.normal(size=(500, 2)) + np.eye(2)[labels] * 1.2)
    return labels, proba.argmax(axis=1), proba


@pytest.fixture
def multiclass() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED + 1)
    labels = rng.integers(0, 4, 800)
    proba = softmax(rng.normal(size=(800, 4)) + np.eye(4)[labels] * 1.5)
    return labels, proba.argmax(axis=1), proba


def test_binary_metrics_equal_scikit_learns_for_the_positive_class_1(binary: Any) -> None:
    labels, predicted, _ = binary
    found = quality_metrics(labels, predicted)
    assert found == pytest.approx({
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted),
        "recall": skm.recall_score(labels, predicted),
        "f1": skm.f1_score(labels, predicted)}, abs=1e-12)


def test_binary_probabilities_as_mappings_add_roc_auc_and_log_loss(binary: Any) -> None:
    labels, predicted, proba = binary
    rows = [{"0": float(p[0]), "1": float(p[1])} for p in proba]  # JSON keys are text
    found = quality_metrics(labels.tolist(), rows)
    assert found["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, proba[:, 1]), abs=1e-12)
    assert found["log_loss"] == pytest.approx(skm.log_loss(labels, proba), abs=1e-12)
    assert found["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert found["f1"] == pytest.approx(skm.f1_score(labels, predicted))


def test_multiclass_metrics_are_macro_averages_equal_to_scikit_learns(multiclass: Any) -> None:
    labels, predicted, proba = multiclass
    found = quality_metrics(labels, proba.tolist())  # lists of probabilities, classes sorted
    assert found == pytest.approx({
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted, average="macro"),
        "recall": skm.recall_score(labels, predicted, average="macro"),
        "f1": skm.f1_score(labels, predicted, average="macro"),
        "roc_auc": skm.roc_auc_score(labels, proba, multi_class="ovr", average="macro"),
        "log_loss": skm.log_loss(labels, proba)}, abs=1e-12)


def test_probabilities_beside_scalar_predictions_keep_the_given_predictions(
        multiclass: Any) -> None:
    labels, _, proba = multiclass
    names = np.array(["ant", "bee", "cat", "dog"])
    first = np.zeros(len(labels), dtype=int)  # a model that always says "ant"
    found = quality_metrics(names[labels], names[first], probabilities=[
        dict(zip(names.tolist(), row, strict=True)) for row in proba.tolist()])
    assert found["accuracy"] == pytest.approx(skm.accuracy_score(labels, first))
    assert found["log_loss"] == pytest.approx(skm.log_loss(labels, proba), abs=1e-12)


def test_list_probabilities_follow_the_given_class_order() -> None:
    labels = ["no", "yes", "yes", "no", "yes"]
    p_yes = np.array([0.2, 0.9, 0.6, 0.4, 0.3])
    rows = [[y, 1 - y] for y in p_yes]  # the model's order: yes, then no
    found = quality_metrics(labels, rows, classes=["yes", "no"])
    truth = np.array(labels) == "yes"
    assert found["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p_yes))
    assert found["log_loss"] == pytest.approx(
        skm.log_loss(truth, np.column_stack([1 - p_yes, p_yes])))
    assert found["recall"] == pytest.approx(skm.recall_score(truth, p_yes > 0.5))


def test_string_classes_take_the_larger_as_positive_and_compare_labels_as_text() -> None:
    assert positive_class(["no", "yes"]) == "yes"
    assert positive_class([0, 1]) == 1
    assert positive_class([1, 2]) == 1
    assert positive_class([2, 5]) == 5
    labels, predicted = [1, 0, 1, 1], ["1", "0", "0", "1"]
    assert quality_metrics(labels, predicted)["recall"] == pytest.approx(2 / 3)


def test_regression_metrics_equal_scikit_learns() -> None:
    rng = np.random.default_rng(RNG_SEED + 2)
    truth = rng.normal(10, 3, 400)
    predicted = truth + rng.normal(0, 1, 400)
    found = quality_metrics(pa.array(truth), pa.array(predicted))
    assert found == pytest.approx({
        "mae": skm.mean_absolute_error(truth, predicted),
        "rmse": float(np.sqrt(skm.mean_squared_error(truth, predicted))),
        "r2": skm.r2_score(truth, predicted)}, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40))
def test_binary_metrics_agree_with_scikit_learn_on_any_rows(pairs: list[tuple[int, int]]
                                                             ) -> None:
    labels = [a for a, _ in pairs]
    predicted = [b for _, b in pairs]
    found = quality_metrics(labels, predicted, task="classification", classes=[0, 1])
    assert found["precision"] == pytest.approx(
        skm.precision_score(labels, predicted, labels=[0, 1], zero_division=0.0))
    assert found["f1"] == pytest.approx(
        skm.f1_score(labels, predicted, labels=[0, 1], zero_division=0.0))
    assert found["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))


@pytest.mark.parametrize(("labels", "predictions", "task"), [
    ([0, 1, 1, 0], [0, 1, 0, 0], "classification"),
    (["a", "b"], ["a", "a"], "classification"),
    ([True, False], [True, True], "classification"),
    ([1.0, 0.0, 1.0], [1, 0, 0], "classification"),
    ([1.5, 2.25, 3.0], [1.4, 2.0, 3.1], "regression"),
    ([1, 2, 3], [1.5, 2.0, 2.5], "regression"),
    (list(range(100)), list(range(100)), "regression"),
])
def test_the_task_is_inferred_from_labels_and_predictions(
        labels: list[Any], predictions: list[Any], task: str) -> None:
    assert infer_task(labels, predictions) == task


def test_the_given_task_overrides_inference() -> None:
    assert set(quality_metrics([1, 2, 3, 4], [1, 2, 3, 5], task="regression")) == {
        "mae", "rmse", "r2"}
    assert set(quality_metrics([1.0, 2.0], [1.0, 3.0], task="classification")) == {
        "accuracy", "precision", "recall", "f1"}


def test_undefined_metrics_are_left_out() -> None:
    one_class = quality_metrics([1, 1, 1], [{"0": 0.2, "1": 0.8}] * 3)
    assert "roc_auc" not in one_class and "log_loss" in one_class
    assert set(quality_metrics([2.5], [2.0], task="regression")) == {"mae", "rmse"}
    assert quality_metrics([], []) == {}


def test_slices_score_alike_when_given_the_windows_classes() -> None:
    classes = model_classes([0, 1, 2, 2], [0, 1, 2, 1])
    assert classes == [0, 1, 2]
    part = quality_metrics([2, 2], [2, 1], classes=classes)  # two classes seen, still macro
    assert part["recall"] == pytest.approx(
        skm.recall_score([2, 2], [2, 1], average="macro", zero_division=0.0))


@pytest.mark.parametrize(("call", "field"), [
    (lambda: quality_metrics([0, 1], [0]), "predictions"),
    (lambda: quality_metrics([0, None], [0, 1]), "labels"),
    (lambda: quality_metrics([0, 1], [0, None]), "predictions"),
    (lambda: quality_metrics("01", [0, 1]), "labels"),
    (lambda: quality_metrics([0, 1], [0, 1], task="ranking"), "task"),
    (lambda: quality_metrics([0, 1], [{"0": 1.0}, {"1": 1.0}]), "predictions"),
    (lambda: quality_metrics([0, 1, 2], [[0.5, 0.5], [0.2, 0.8], [1, 0]]), "classes"),
    (lambda: quality_metrics([0, 1], [[0.5, -0.5], [0.2, 0.8]]), "predictions"),
    (lambda: quality_metrics([0.5, 1.5], ["a", "b"], task="regression"), "predictions"),
    (lambda: quality_metrics(["a", "b"], [0.5, 1.5], task="regression"), "labels"),
    (lambda: quality_metrics([0, 1], [0, 1], probabilities=[[1.0, 0.0]]), "probabilities"),
])
def test_malformed_input_is_refused_naming_the_field(call: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        call()
    assert caught.value.field == field


@pytest.mark.parametrize(("labels", "predictions", "task", "reason"), [
    ([0.5, 1.0, 0.0], [True, False, True], None, "mix of continuous and binary"),
    ([0.5, 1.5, 2.5], [0, 1, 2], "classification", "continuous"),
], ids=["fraction-labels-for-booleans", "continuous-labels-as-classes"])
def test_rows_scikit_learn_refuses_are_refused_naming_the_labels_with_its_reason(
        labels: list[Any], predictions: list[Any], task: str | None, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=reason) as caught:
        quality_metrics(labels, predictions, task)
    assert caught.value.field == "labels"
