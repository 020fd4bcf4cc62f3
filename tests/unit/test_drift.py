"""Column and dataset drift from profiles: planted shifts flagged, same-distribution samples
quiet at the stated false-positive rates, ``auto``'s choices, overrides and bad inputs.

False-positive bounds tested (seeded, same distribution on both sides, 200 trials each):
KS at p < 0.05 (n = m = 400 and 1000) and chi-square at p < 0.05 (n = m = 400, four
categories) flag at most 9.5 % (19) of trials: the 99.5th percentile of Binomial(200, 0.05),
so a test at exactly its nominal level fails the bound with probability 0.5 %. (Over 2000
trials the sketch KS flagged 4.0 %, conservative as its bound says, and chi-square 5.3 %.)
The distances at their default thresholds (Wasserstein 0.1 and Jensen-Shannon 0.1 with
m = 5000, PSI 0.2 with n = m = 2000) flag at most 1 % (2) of trials. Each test also flags its
planted shift (mean shift, scale change, category mix change) in at least 95 % of 40 trials.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import ColumnDriftSpec, DriftMethod, DriftSettings
from loopline.data.profiling import (
    ColumnKind,
    ColumnProfile,
    Profile,
    ProfileOptions,
    profile_table,
)
from loopline.monitoring.drift import column_drift, dataset_drift

COLORS = np.array(["red", "green", "blue", "grey"])
MIX = [0.4, 0.3, 0.2, 0.1]
SHIFTED_MIX = [0.25, 0.25, 0.25, 0.25]
NOMINAL = 19 / 200  # the 99.5th percentile of Binomial(200, 0.05), as a share


def _profile(values: Any, name: str = "x", options: ProfileOptions | None = None
             ) -> ColumnProfile:
    return profile_table(pa.table({name: values}), options).column(name)


def _colors(rng: np.random.Generator, size: int, mix: list[float]) -> list[str]:
    return list(rng.choice(COLORS, size, p=mix))


Draw = Callable[[np.random.Generator, bool], tuple[Any, Any]]


def _normal(n: int, m: int, loc: float = 0.0, scale: float = 1.0) -> Draw:
    def draw(rng: np.random.Generator, shifted: bool) -> tuple[Any, Any]:
        current = rng.normal(loc, scale, m) if shifted else rng.normal(0, 1, m)
        return rng.normal(0, 1, n), current
    return draw


def _categories(n: int, m: int, mix: list[float]) -> Draw:
    def draw(rng: np.random.Generator, shifted: bool) -> tuple[Any, Any]:
        return _colors(rng, n, MIX), _colors(rng, m, mix if shifted else MIX)
    return draw


def _flag_rate(draw: Draw, spec: ColumnDriftSpec, trials: int, shifted: bool,
               seed: int) -> tuple[float, DriftMethod]:
    flagged, method = 0, DriftMethod.AUTO
    for trial in range(trials):
        rng = np.random.default_rng([seed, trial])
        reference, current = draw(rng, shifted)
        found = column_drift(_profile(reference), _profile(current), spec)
        flagged += found.drifted
        method = found.method
    return flagged / trials, method


TESTS = [  # (id, spec, expected method, draw for quiet and shifted, false-positive bound)
    ("ks-mean", ColumnDriftSpec(), DriftMethod.KS, _normal(400, 400, loc=0.5), NOMINAL),
    ("ks-scale", ColumnDriftSpec(DriftMethod.KS), DriftMethod.KS,
     _normal(1000, 1000, scale=1.5), NOMINAL),
    ("wasserstein-mean", ColumnDriftSpec(), DriftMethod.WASSERSTEIN,
     _normal(5000, 5000, loc=0.3), 0.01),
    ("wasserstein-scale", ColumnDriftSpec(DriftMethod.WASSERSTEIN), DriftMethod.WASSERSTEIN,
     _normal(5000, 5000, scale=1.5), 0.01),
    ("psi-numeric", ColumnDriftSpec(DriftMethod.PSI), DriftMethod.PSI,
     _normal(2000, 2000, loc=0.6), 0.01),
    ("chi-square", ColumnDriftSpec(), DriftMethod.CHI_SQUARE,
     _categories(400, 400, SHIFTED_MIX), NOMINAL),
    ("jensen-shannon", ColumnDriftSpec(), DriftMethod.JENSEN_SHANNON,
     _categories(5000, 5000, [0.1, 0.2, 0.3, 0.4]), 0.01),
    ("psi-categorical", ColumnDriftSpec(DriftMethod.PSI), DriftMethod.PSI,
     _categories(2000, 2000, [0.1, 0.2, 0.3, 0.4]), 0.01),
]


@pytest.mark.parametrize(("spec", "method", "draw", "bound"),
                         [case[1:] for case in TESTS], ids=[case[0] for case in TESTS])
def test_each_test_flags_its_planted_shift_and_stays_quiet_at_its_stated_rate(
        spec: ColumnDriftSpec, method: DriftMethod, draw: Draw, bound: float) -> None:
    false_rate, used = _flag_rate(draw, spec, trials=200, shifted=False, seed=1)
    assert used is method
    assert false_rate <= bound
    power, _ = _flag_rate(draw, spec, trials=40, shifted=True, seed=2)
    assert power >= 0.95


def test_ks_false_positive_rate_is_near_its_level_not_merely_below_it() -> None:
    # a test that never flags would pass the bound above; this one must flag sometimes
    rate, _ = _flag_rate(_normal(400, 400), ColumnDriftSpec(DriftMethod.KS), 200, False, 3)
    assert 0.005 <= rate <= NOMINAL


def test_auto_picks_by_kind_and_current_sample_size_and_says_why() -> None:
    rng = np.random.default_rng(0)
    reference = _profile(rng.normal(size=5000))
    small = column_drift(reference, _profile(rng.normal(size=1000)), ColumnDriftSpec())
    large = column_drift(reference, _profile(rng.normal(size=1001)), ColumnDriftSpec())
    assert (small.method, large.method) == (DriftMethod.KS, DriftMethod.WASSERSTEIN)
    assert small.details["reason"] == "numeric, current sample 1000 <= 1000"
    assert small.details["asked"] == "auto" and small.details["p_value"] == small.score
    assert (small.reference_count, small.current_count) == (5000, 1000)
    flags = column_drift(_profile([True, False] * 300), _profile([True] * 500 + [False] * 100),
                         ColumnDriftSpec())
    assert flags.kind is ColumnKind.BOOLEAN and flags.method is DriftMethod.CHI_SQUARE
    assert flags.drifted and flags.details["categories"] == 2


def test_a_numeric_column_of_few_values_is_tested_as_categories_under_auto() -> None:
    rng = np.random.default_rng(4)
    reference = _profile(rng.integers(0, 3, 800))
    current = _profile(rng.choice([0, 1, 2], 800, p=[0.2, 0.2, 0.6]))
    found = column_drift(reference, current, ColumnDriftSpec())
    assert found.method is DriftMethod.CHI_SQUARE and found.drifted
    assert "3 distinct buckets" in found.details["reason"]
    asked = column_drift(reference, current, ColumnDriftSpec(DriftMethod.KS))
    assert asked.method is DriftMethod.KS and asked.details["reason"] == "asked for"


def test_a_threshold_override_moves_the_verdict() -> None:
    rng = np.random.default_rng(5)
    reference, current = _profile(rng.normal(size=5000)), _profile(rng.normal(0.3, 1, 5000))
    assert column_drift(reference, current, ColumnDriftSpec()).drifted
    lenient = column_drift(reference, current, ColumnDriftSpec(threshold=0.5))
    assert lenient.threshold == 0.5 and not lenient.drifted
    ks = column_drift(reference, current, ColumnDriftSpec(DriftMethod.KS, 1e-6))
    assert ks.drifted and ks.threshold == 1e-6 and ks.score < 1e-6


def test_drift_from_stored_profile_dicts_equals_drift_from_the_profiles() -> None:
    rng = np.random.default_rng(6)
    table = pa.table({"x": rng.normal(size=3000), "c": _colors(rng, 3000, MIX)})
    shifted = pa.table({"x": rng.normal(0.2, 1, 800), "c": _colors(rng, 800, SHIFTED_MIX)})
    reference, current = profile_table(table), profile_table(shifted)
    stored = Profile.from_dict(reference.to_dict())
    settings = DriftSettings()
    assert dataset_drift(stored, current, settings) == dataset_drift(reference, current,
                                                                     settings)


def _frame(rng: np.random.Generator, rows: int, shifted: bool) -> pa.Table:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + (dt.timedelta(days=30) if shifted
                                                       else dt.timedelta(0))
    return pa.table({
        "a": rng.normal(1.0 if shifted else 0.0, 1, rows),
        "b": rng.normal(0, 1, rows),
        "color": _colors(rng, rows, SHIFTED_MIX if shifted else MIX),
        "flag": rng.random(rows) < 0.5,
        "note": [f"free text {i}" for i in range(rows)],
        "at": pa.array([start + dt.timedelta(minutes=i) for i in range(rows)]),
        "tags": pa.array([[1]] * rows),
    })


def test_dataset_drift_tests_each_column_skips_the_untestable_and_gives_the_verdict() -> None:
    rng = np.random.default_rng(7)
    reference = profile_table(_frame(rng, 3000, shifted=False))
    current = profile_table(_frame(rng, 2000, shifted=True))
    report = dataset_drift(reference, current, DriftSettings(share=0.5))
    assert [c.column for c in report.columns] == ["a", "b", "color", "flag"]
    assert report.drifted_columns == ("a", "color")
    assert report.share == 0.5 and report.drifted
    assert set(report.skipped) == {"note", "at", "tags"}
    assert report.skipped["at"].startswith("datetime")
    assert report.skipped["note"].startswith("text")
    assert report.skipped["tags"] == "other columns have no drift test"
    assert not dataset_drift(reference, current, DriftSettings(share=0.75)).drifted
    as_dict = report.to_dict()
    assert as_dict["drifted_columns"] == ["a", "color"] and as_dict["share_threshold"] == 0.5
    assert as_dict["columns"][0]["method"] == "wasserstein"


def test_a_datetime_column_is_tested_as_numeric_under_a_named_method() -> None:
    rng = np.random.default_rng(8)
    reference = profile_table(_frame(rng, 3000, shifted=False))
    current = profile_table(_frame(rng, 2000, shifted=True))
    settings = DriftSettings(columns={"at": ColumnDriftSpec(DriftMethod.WASSERSTEIN)})
    report = dataset_drift(reference, current, settings, columns=["at", "b"])
    assert report.column("at").drifted and report.column("at").kind is ColumnKind.DATETIME
    assert not report.column("b").drifted and report.skipped == {}
    with pytest.raises(InvalidArgumentError) as refused:
        column_drift(reference.column("at"), current.column("at"), ColumnDriftSpec())
    assert refused.value.field == "drift.columns.at.method"


def test_columns_missing_from_the_window_or_all_null_are_skipped_with_the_reason() -> None:
    reference = profile_table(pa.table({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0],
                                        "z": ["a", "b", "a"]}))
    current = profile_table(pa.table({"x": pa.array([None, None], pa.float64()),
                                      "z": ["a", "b"], "extra": [1, 2]}))
    report = dataset_drift(reference, current, DriftSettings())
    assert report.skipped == {"y": "not in the current window",
                              "x": "no values in the current window (all null)"}
    assert [c.column for c in report.columns] == ["z"]


def test_a_surge_of_new_categories_turning_a_window_into_text_is_drift() -> None:
    options = ProfileOptions(categorical_threshold=3, category_cap=3, sample_size=2)
    reference = profile_table(pa.table({"c": ["a", "b", "a"]}), options)
    current = profile_table(pa.table({"c": ["a", "b", "c", "d", "e"]}), options)
    report = dataset_drift(reference, current, DriftSettings())
    [surge] = report.columns
    assert (surge.column, surge.drifted, surge.score) == ("c", True, 1.0)
    assert "surge of new categories" in surge.details["reason"]
    assert report.skipped == {} and report.share == 1.0 and report.drifted
    text_both = dataset_drift(current, current, DriftSettings())
    assert text_both.skipped["c"].startswith("text") and not text_both.drifted


@pytest.mark.parametrize(("spec", "field"), [
    (ColumnDriftSpec(DriftMethod.CHI_SQUARE), "drift.columns.x.method"),
    (ColumnDriftSpec(DriftMethod.JENSEN_SHANNON), "drift.columns.x.method"),
    (ColumnDriftSpec("nope"), "drift.columns.x.method"),  # type: ignore[arg-type]
    (ColumnDriftSpec(DriftMethod.KS, 1.5), "drift.columns.x.threshold"),
    (ColumnDriftSpec(DriftMethod.KS, 0.0), "drift.columns.x.threshold"),
    (ColumnDriftSpec(DriftMethod.WASSERSTEIN, -0.1), "drift.columns.x.threshold"),
    (ColumnDriftSpec(DriftMethod.PSI, float("nan")), "drift.columns.x.threshold"),
    (ColumnDriftSpec(DriftMethod.PSI, float("inf")), "drift.columns.x.threshold"),
    (ColumnDriftSpec(threshold=True), "drift.columns.x.threshold"),
    (ColumnDriftSpec(threshold=2.0), "drift.columns.x.threshold"),
], ids=["chi-on-numeric", "js-on-numeric", "unknown", "p-above-1", "p-zero",
        "negative-distance", "nan", "inf", "bool", "auto-above-1"])
def test_a_method_or_threshold_that_does_not_fit_is_refused_naming_the_field(
        spec: ColumnDriftSpec, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        column_drift(_profile([1.0, 2.0]), _profile([1.0, 3.0]), spec)
    assert refused.value.field == field


def test_categorical_methods_refuse_numeric_ones_and_js_refuses_above_one() -> None:
    reference, current = _profile(["a", "b"], "c"), _profile(["a"], "c")
    for spec in (ColumnDriftSpec(DriftMethod.KS), ColumnDriftSpec(DriftMethod.WASSERSTEIN)):
        with pytest.raises(InvalidArgumentError, match="does not apply to a categorical"):
            column_drift(reference, current, spec)
    with pytest.raises(InvalidArgumentError) as refused:
        column_drift(reference, current, ColumnDriftSpec(DriftMethod.JENSEN_SHANNON, 1.5))
    assert refused.value.field == "drift.columns.c.threshold"


@pytest.mark.parametrize(("reference", "current", "problem"), [
    (_profile([1.0, 2.0]), _profile(["a", "b"]), "kinds differ"),
    (_profile([1.0, 2.0]), _profile(pa.array([None], pa.float64())), "current profile has no"),
    (_profile(pa.array([None], pa.float64())), _profile([1.0]), "reference profile has no"),
    (_profile([1.0]), _profile([1.0], "y"), "compared with column 'y'"),
    (_profile(["long text"] * 3, options=ProfileOptions(categorical_threshold=0)),
     _profile(["long text"], options=ProfileOptions(categorical_threshold=0)),
     "text columns have no drift test"),
    (_profile([1.0, 2.0]), _profile([1.0, 2.0], options=ProfileOptions(alpha=0.02)),
     "accuracies differ"),
], ids=["kinds", "empty-current", "empty-reference", "names", "text", "alpha"])
def test_profiles_that_cannot_be_compared_are_refused_naming_the_column(
        reference: ColumnProfile, current: ColumnProfile, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem) as refused:
        column_drift(reference, current, ColumnDriftSpec())
    assert refused.value.field == "column 'x'"


def test_dataset_drift_refuses_empty_profiles_and_unknown_columns() -> None:
    some = profile_table(pa.table({"x": [1.0, 2.0]}))
    for reference, current, field in ((Profile(), some, "reference"), (some, Profile(), "current")):
        with pytest.raises(InvalidArgumentError) as refused:
            dataset_drift(reference, current, DriftSettings())
        assert refused.value.field == field
    for columns in (["x", "nope"], "x"):
        with pytest.raises(InvalidArgumentError) as refused:
            dataset_drift(some, some, DriftSettings(), columns=columns)
        assert refused.value.field == "columns"


def test_a_column_of_another_kind_in_the_window_is_skipped_and_the_others_tested() -> None:
    rng = np.random.default_rng(4)
    reference = profile_table(pa.table({"x": rng.normal(size=500), "y": rng.normal(size=500),
                                        "z": rng.normal(size=500)}))
    current = profile_table(pa.table({"x": pa.nulls(300),  # Arrow's null type: all null
                                      "y": ["a", "b", "c"] * 100,
                                      "z": rng.normal(3.0, 1.0, size=300)}))
    report = dataset_drift(reference, current, DriftSettings(share=0.5))
    assert report.skipped == {
        "x": "no values in the current window (all null)",
        "y": "kinds differ: the reference is numeric, the current window categorical"}
    assert [c.column for c in report.columns] == ["z"] and report.drifted_columns == ("z",)
    assert report.share == 1.0 and report.drifted
    backwards = dataset_drift(current, reference, DriftSettings(), columns=["x", "y"])
    assert backwards.skipped == {
        "x": "no values in the reference (all null)",
        "y": "kinds differ: the reference is categorical, the current window numeric"}


def test_report_column_names_a_skipped_column_with_its_reason() -> None:
    reference = profile_table(pa.table({"x": [1.0, 2.0], "y": [1.0, 2.0]}))
    current = profile_table(pa.table({"x": [1.0, 2.0]}))
    report = dataset_drift(reference, current, DriftSettings())
    assert report.column("x").column == "x"
    with pytest.raises(InvalidArgumentError, match="not in the current window"):
        report.column("y")


def test_values_at_the_ends_of_the_float_range_give_a_report_storable_as_json() -> None:
    import json

    huge = [1e308, 1.7e308, 5.0]  # the sum overflows to inf
    reference = profile_table(pa.table({"x": huge * 10}))
    current = profile_table(pa.table({"x": [1.0, 2.0] * 20}))
    for method in (DriftMethod.WASSERSTEIN, DriftMethod.KS, DriftMethod.PSI):
        report = dataset_drift(reference, current, DriftSettings(
            default=ColumnDriftSpec(method)))
        json.dumps(report.to_dict(), allow_nan=False)
        assert report.column("x").drifted
