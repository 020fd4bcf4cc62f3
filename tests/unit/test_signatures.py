"""Signatures: inference from training data, the batch check, and the JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from loopline.core.errors import InvalidArgumentError
from loopline.registry.signature_checks import check_batch, require_batch
from loopline.registry.signatures import (
    DTYPES,
    MAX_CATEGORIES,
    ColumnSpec,
    OutputSpec,
    Signature,
    infer_signature,
)


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


def _mixed() -> pd.DataFrame:
    return pd.DataFrame({
        "age": np.array([30, 41, 25, 60], dtype="int64"),
        "income": [1.5, np.nan, 3.0, 2.0],
        "city": ["paris", "lyon", "paris", "nice"],
        "member": [True, False, True, True],
        "plan": pd.Categorical(["gold", "basic", "gold", "basic"]),
        "seen": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]),
    })


def _kinds(signature: Signature, batch: Any, **options: bool) -> dict[str, tuple[str, str]]:
    return {v.column: (v.kind, v.severity) for v in check_batch(signature, batch, **options)}


# -- inference ------------------------------------------------------------------------------

def test_iris_signature_records_columns_ranges_and_classes(iris: Any) -> None:
    X, y = iris
    model = LogisticRegression(max_iter=1000).fit(X, y)
    signature = infer_signature(X, y, model)
    assert signature.names == tuple(X.columns)
    for spec in signature.inputs:
        assert spec.dtype == "float64" and not spec.nullable
        assert spec.minimum == X[spec.name].min() and spec.maximum == X[spec.name].max()
    assert signature.output == OutputSpec("class", (0, 1, 2))
    assert infer_signature(X, y).output == OutputSpec("class", (0, 1, 2))
    assert check_batch(signature, X) == []


def test_an_array_gets_columns_named_f0_to_fn_and_a_regressor_a_number_output(
        iris: Any) -> None:
    X, y = iris
    model = LinearRegression().fit(X.to_numpy(), y)
    signature = infer_signature(X.to_numpy(), model=model)
    assert signature.names == ("f0", "f1", "f2", "f3")
    assert signature.output == OutputSpec("number")
    assert infer_signature(X.to_numpy(), y.to_numpy() * 0.5).output == OutputSpec("number")
    assert check_batch(signature, X.to_numpy()) == []


def test_each_column_type_is_inferred_with_nulls_ranges_and_categories() -> None:
    signature = infer_signature(_mixed(), np.array(["y", "n", "y", "n"]))
    specs = {spec.name: spec for spec in signature.inputs}
    assert specs["age"] == ColumnSpec("age", "int64", False, 25, 60)
    assert specs["income"] == ColumnSpec("income", "float64", True, 1.5, 3.0)
    assert specs["city"] == ColumnSpec("city", "category",
                                       categories=("lyon", "nice", "paris"))
    assert specs["member"] == ColumnSpec("member", "bool")
    assert specs["plan"] == ColumnSpec("plan", "category", categories=("basic", "gold"))
    assert specs["seen"] == ColumnSpec("seen", "datetime", False, "2024-01-01T00:00:00",
                                       "2024-04-01T00:00:00")
    assert signature.output == OutputSpec("class", ("n", "y"))


def test_object_columns_of_bools_and_nulls_are_nullable_bools() -> None:
    frame = pd.DataFrame({"ok": [True, None, False]}, dtype=object)
    (spec,) = infer_signature(frame, [1.0, 2.0, 3.0]).inputs
    assert spec == ColumnSpec("ok", "bool", nullable=True)


def test_text_with_more_distinct_values_than_the_bound_is_plain_string() -> None:
    frame = pd.DataFrame({"id": [f"user-{i}" for i in range(MAX_CATEGORIES + 1)]})
    (spec,) = infer_signature(frame, np.zeros(len(frame))).inputs
    assert spec == ColumnSpec("id", "string")


@pytest.mark.parametrize(("X", "y", "field"), [
    (pd.DataFrame({0: [1.0]}), [1.0], "X"),
    (pd.DataFrame({"a": ["x", 1]}, dtype=object), [1.0, 2.0], "X column 'a'"),
    (np.zeros(3), [1.0], "X"),
    (pd.DataFrame({"z": [1 + 2j]}), [1.0], "X column 'z'"),
    (pd.DataFrame({"a": [1.0]}), None, "y"),
])
def test_data_that_cannot_be_described_is_refused_naming_the_field(
        X: Any, y: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        infer_signature(X, y)
    assert caught.value.field == field


# -- checking batches -----------------------------------------------------------------------

def test_check_batch_names_each_violated_column_and_its_kind() -> None:
    signature = infer_signature(_mixed(), np.array([0, 1, 0, 1]))
    batch = pd.DataFrame({
        "age": [30, 99],  # out of range
        "income": [2.0, np.nan],  # nullable: fine
        "city": ["paris", "oslo"],  # unseen category
        "member": ["yes", "no"],  # wrong type
        "plan": pd.Categorical([None, "gold"]),  # null in a column trained without
        "extra": [1, 2],
    })
    assert _kinds(signature, batch) == {
        "seen": ("missing", "error"), "member": ("type", "error"),
        "plan": ("null", "error"), "age": ("range", "warning"),
        "city": ("category", "warning")}
    assert _kinds(signature, batch, allow_extra=False)["extra"] == ("extra", "error")


def test_violations_count_rows_and_errors_come_before_warnings() -> None:
    signature = infer_signature(_mixed(), np.array([0, 1, 0, 1]))
    batch = _mixed().assign(age=[10, 20, 70, 30], plan=pd.Categorical([None, None, "gold",
                                                                       "basic"]))
    found = check_batch(signature, batch)
    assert [(v.column, v.rows, v.severity) for v in found] == [
        ("plan", 2, "error"), ("age", 3, "warning")]
    assert "column 'age' has 3 values outside the range 25..60" in found[1].message


def test_an_int_column_takes_whole_floats_with_nulls_but_not_fractions() -> None:
    signature = Signature((ColumnSpec("n", "int64", nullable=True, minimum=0, maximum=10),),
                          OutputSpec("number"))
    assert check_batch(signature, pd.DataFrame({"n": [1.0, np.nan, 3.0]})) == []
    assert _kinds(signature, pd.DataFrame({"n": [1.5]})) == {"n": ("type", "error")}
    assert _kinds(signature, pd.DataFrame({"n": [True]})) == {"n": ("type", "error")}
    assert check_batch(signature, pd.DataFrame({"n": pd.array([1, None], dtype="Int64")})) == []


def test_datetimes_are_range_checked_and_other_types_refused() -> None:
    signature = infer_signature(_mixed()[["seen"]], np.zeros(4))
    late = pd.DataFrame({"seen": pd.to_datetime(["2024-02-01", "2030-01-01"])})
    assert _kinds(signature, late) == {"seen": ("range", "warning")}
    assert _kinds(signature, pd.DataFrame({"seen": ["2024-02-01"]})) == {
        "seen": ("type", "error")}
    aware = pd.DataFrame({"seen": pd.to_datetime(["2024-02-01"]).tz_localize("UTC")})
    assert _kinds(signature, aware) == {"seen": ("type", "error")}


def test_require_batch_raises_naming_every_failing_column_and_returns_warnings() -> None:
    signature = infer_signature(_mixed(), np.zeros(4))
    with pytest.raises(InvalidArgumentError) as caught:
        require_batch(signature, _mixed().drop(columns=["city"]).assign(member=[1, 2, 3, 4]))
    assert caught.value.field == "batch"
    assert "column 'city' is missing" in caught.value.problem
    assert "column 'member' has dtype int64; the model takes bool" in caught.value.problem
    warnings = require_batch(signature, _mixed().assign(age=[1, 30, 30, 30]))
    assert [(w.column, w.kind) for w in warnings] == [("age", "range")]


def test_an_array_batch_of_the_wrong_width_is_refused(iris: Any) -> None:
    X, y = iris
    signature = infer_signature(X, y)
    with pytest.raises(InvalidArgumentError, match="has 3 columns; the signature has 4"):
        check_batch(signature, X.to_numpy()[:, :3])


def test_a_repeated_batch_column_is_an_error() -> None:
    signature = Signature((ColumnSpec("a", "float64"),), OutputSpec("number"))
    batch = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
    assert _kinds(signature, batch) == {"a": ("type", "error")}


# -- definitions and JSON -------------------------------------------------------------------

@pytest.mark.parametrize(("build", "field"), [
    (lambda: ColumnSpec("a", "decimal"), "signature column 'a' dtype"),
    (lambda: ColumnSpec("a", "float64", minimum=3.0, maximum=1.0),
     "signature column 'a' minimum"),
    (lambda: ColumnSpec("a", "float64", minimum=float("nan")), "signature column 'a' minimum"),
    (lambda: ColumnSpec("a", "string", categories=("x",)), "signature column 'a' categories"),
    (lambda: ColumnSpec("a", "category", categories=("x", "x")),
     "signature column 'a' categories"),
    (lambda: OutputSpec("number", ("x",)), "signature output classes"),
    (lambda: OutputSpec("label"), "signature output type"),
    (lambda: Signature((ColumnSpec("a", "bool"), ColumnSpec("a", "bool")),
                       OutputSpec("number")), "signature inputs"),
])
def test_invalid_definitions_are_refused_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        build()
    assert caught.value.field == field


@pytest.mark.parametrize(("data", "field"), [
    ({"inputs": []}, "signature"),
    ({"inputs": [], "output": {"type": "number"}, "version": 2}, "signature"),
    ({"inputs": [{"name": "a"}], "output": {"type": "number"}}, "signature inputs[0]"),
    ({"inputs": [{"name": "a", "dtype": "float64", "typo": 1}], "output": {"type": "number"}},
     "signature inputs[0]"),
    ({"inputs": "a", "output": {"type": "number"}}, "signature inputs"),
])
def test_malformed_json_is_refused_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Signature.from_dict(data)
    assert caught.value.field == field


_LABELS = st.one_of(st.text(max_size=8), st.integers(-10**9, 10**9),
                    st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def _columns(draw: st.DrawFn, name: str) -> ColumnSpec:
    dtype = draw(st.sampled_from(DTYPES))
    bounds: list[Any] = [None, None]
    if dtype in ("int64", "float64"):
        number = st.integers(-10**12, 10**12) if dtype == "int64" else st.floats(
            allow_nan=False, allow_infinity=False)
        bounds = sorted(draw(st.lists(number, min_size=2, max_size=2)))
    elif dtype == "datetime":
        bounds = [t.isoformat() for t in sorted(draw(st.lists(st.datetimes(), min_size=2,
                                                              max_size=2)))]
    drop = draw(st.sampled_from([(), (0,), (1,), (0, 1)]))
    low, high = (None if i in drop else bounds[i] for i in (0, 1))
    categories = None
    if dtype == "category":
        categories = draw(st.none() | st.lists(_LABELS, unique=True, max_size=12).map(tuple))
    return ColumnSpec(name, dtype, draw(st.booleans()), low, high, categories)


@st.composite
def _signatures(draw: st.DrawFn) -> Signature:
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6,
                          unique=True))
    kind = draw(st.sampled_from(["class", "number", "probabilities"]))
    classes = None if kind == "number" else draw(
        st.none() | st.lists(_LABELS, unique=True, max_size=8).map(tuple))
    return Signature(tuple(draw(_columns(name)) for name in names), OutputSpec(kind, classes))


@given(_signatures())
def test_a_signature_round_trips_through_json(signature: Signature) -> None:
    text = json.dumps(signature.to_dict(), allow_nan=False)
    assert Signature.from_dict(json.loads(text)) == signature
