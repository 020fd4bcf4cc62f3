"""Canary analysis: pass, fail on errors or p99, inconclusive on too few samples; the numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.deployments import AnalysisPolicy, WindowStats
from loopline.core.errors import InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.data.serving_windows import merge_rows, p99
from loopline.loop.rollout_analysis import (
    FAIL,
    INCONCLUSIVE,
    NOT_SUPPLIED,
    PASS,
    analyse,
)
from loopline.store.serving_stats import StatsRow

POLICY = AnalysisPolicy(interval=timedelta(minutes=1), max_error_rate_increase=0.01,
                        max_p99_ratio=1.5, min_samples=100)


def stats(requests: int, errors: int, latency_ms: float | None = 10.0) -> WindowStats:
    """A window of ``requests`` requests, each taking ``latency_ms``."""
    sketch = {} if latency_ms is None else QuantileSketch.of([latency_ms] * requests).to_dict()
    return WindowStats(requests, errors, sketch)


def check(numbers: dict[str, object], name: str) -> dict[str, object]:
    checks = numbers["checks"]
    assert isinstance(checks, list)
    return next(c for c in checks if c["name"] == name)


def test_similar_canary_and_primary_pass_with_every_check_passed() -> None:
    verdict, numbers = analyse(POLICY, stats(200, 1), stats(1000, 5))
    assert verdict == PASS
    assert all(check(numbers, n)["passed"] is True
               for n in ("min_samples", "error_rate_increase", "p99_ratio"))


def test_canary_error_rate_above_the_allowed_increase_fails() -> None:
    verdict, numbers = analyse(POLICY, stats(200, 20), stats(1000, 5))
    assert verdict == FAIL
    errors = check(numbers, "error_rate_increase")
    assert errors["passed"] is False
    assert errors["observed"] == pytest.approx(0.1 - 0.005)
    assert errors["threshold"] == 0.01


def test_error_rate_increase_exactly_at_the_threshold_passes_despite_float_noise() -> None:
    policy = AnalysisPolicy(max_error_rate_increase=0.1, min_samples=10)
    verdict, _ = analyse(policy, stats(10, 3), stats(10, 2))  # 0.3 - 0.2 > 0.1 in floats
    assert verdict == PASS


def test_canary_p99_above_the_allowed_ratio_fails() -> None:
    verdict, numbers = analyse(POLICY, stats(200, 0, latency_ms=40.0), stats(1000, 0, 10.0))
    assert verdict == FAIL
    ratio = check(numbers, "p99_ratio")
    assert ratio["passed"] is False
    assert ratio["observed"] == pytest.approx(4.0, rel=0.03)
    assert ratio["threshold"] == 1.5


def test_too_few_samples_on_either_side_is_inconclusive_even_with_bad_numbers() -> None:
    for canary, primary in ((stats(99, 1), stats(1000, 0)), (stats(500, 0), stats(50, 0))):
        verdict, numbers = analyse(POLICY, canary, primary)
        assert verdict == INCONCLUSIVE
        samples = check(numbers, "min_samples")
        assert samples["passed"] is None
        assert samples["observed"] == min(canary.requests, primary.requests)
        assert samples["threshold"] == 100
        assert check(numbers, "error_rate_increase")["passed"] is None


def test_canary_errors_beyond_what_min_samples_allows_fail_before_min_samples() -> None:
    # 0.5 % primary errors + 1 % allowed: at most 1.5 errors in 100 canary requests
    verdict, numbers = analyse(POLICY, stats(30, 30), stats(1000, 5))
    assert verdict == FAIL
    assert numbers["decided_by"] == ["canary_errors_at_min_samples"]
    early = check(numbers, "canary_errors_at_min_samples")
    assert early["observed"] == 30
    assert early["threshold"] == pytest.approx(1.5)
    assert early["passed"] is False
    assert check(numbers, "min_samples")["passed"] is None
    assert check(numbers, "error_rate_increase")["passed"] is None


def test_canary_errors_within_what_min_samples_allows_stay_inconclusive() -> None:
    verdict, numbers = analyse(POLICY, stats(30, 1), stats(1000, 5))
    assert verdict == INCONCLUSIVE
    assert numbers["decided_by"] == ["min_samples", "error_rate_increase", "p99_ratio"]
    assert check(numbers, "canary_errors_at_min_samples")["passed"] is True


def test_the_early_error_check_counts_the_canary_requests_beyond_min_samples() -> None:
    # 5 errors in 1000 canary requests is 0.5 %: allowed, though 5 > 1 % of min_samples
    verdict, numbers = analyse(POLICY, stats(1000, 5), stats(50, 0))
    assert verdict == INCONCLUSIVE
    assert check(numbers, "canary_errors_at_min_samples")["threshold"] == pytest.approx(10.0)


def test_decided_by_names_the_failed_checks_or_every_check_of_a_pass() -> None:
    _, passed = analyse(POLICY, stats(200, 1), stats(1000, 5))
    assert passed["decided_by"] == ["min_samples", "error_rate_increase", "p99_ratio",
                                    "canary_errors_at_min_samples"]
    _, failed = analyse(POLICY, stats(200, 0, latency_ms=40.0), stats(1000, 0, 10.0))
    assert failed["decided_by"] == ["p99_ratio"]


def test_no_latency_data_on_the_primary_makes_the_p99_check_and_verdict_inconclusive() -> None:
    verdict, numbers = analyse(POLICY, stats(200, 0), stats(1000, 0, latency_ms=None))
    assert verdict == INCONCLUSIVE
    assert check(numbers, "p99_ratio") == {"name": "p99_ratio", "observed": None,
                                           "threshold": 1.5, "passed": None}


def test_error_rate_failure_wins_over_missing_latency_data() -> None:
    verdict, _ = analyse(POLICY, stats(200, 100), stats(1000, 0, latency_ms=None))
    assert verdict == FAIL


def test_zero_primary_latency_passes_a_zero_canary_and_fails_a_slower_one() -> None:
    assert analyse(POLICY, stats(200, 0, 0.0), stats(200, 0, 0.0))[0] == PASS
    verdict, numbers = analyse(POLICY, stats(200, 0, 5.0), stats(200, 0, 0.0))
    assert verdict == FAIL
    assert check(numbers, "p99_ratio")["observed"] is None


def test_extra_thresholds_are_recorded_as_not_supplied_and_do_not_decide() -> None:
    policy = AnalysisPolicy(min_samples=10, extra={"drift_psi": 0.2, "accuracy_drop": 0.02})
    verdict, numbers = analyse(policy, stats(50, 0), stats(50, 0))
    assert verdict == PASS
    for name, threshold in (("accuracy_drop", 0.02), ("drift_psi", 0.2)):
        assert check(numbers, name) == {"name": name, "observed": None,
                                        "threshold": threshold, "passed": None,
                                        "status": NOT_SUPPLIED}


def test_numbers_record_both_sides_raw_counts_and_the_policy() -> None:
    _, numbers = analyse(POLICY, stats(200, 2, 12.0), stats(1000, 5, 10.0))
    assert numbers["canary"]["requests"] == 200
    assert numbers["canary"]["errors"] == 2
    assert numbers["canary"]["error_rate"] == 0.01
    assert numbers["canary"]["p99_ms"] == pytest.approx(12.0, rel=0.02)
    assert numbers["primary"]["requests"] == 1000
    assert numbers["primary"]["errors"] == 5
    assert numbers["policy"] == {
        "interval_seconds": 60.0, "max_error_rate_increase": 0.01, "max_p99_ratio": 1.5,
        "min_samples": 100, "passes_to_promote": 1, "failures_to_rollback": 1, "extra": {}}


def test_analysis_is_a_pure_function_of_its_inputs() -> None:
    assert analyse(POLICY, stats(300, 3), stats(900, 4)) == \
        analyse(POLICY, stats(300, 3), stats(900, 4))


def test_malformed_latency_sketch_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match="latency_sketch"):
        analyse(POLICY, WindowStats(200, 0, {"alpha": "x"}), stats(200, 0))


def test_merging_rows_adds_counts_and_merges_sketches_per_version() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [StatsRow("d", "models:/m/1", inst, at + timedelta(seconds=10 * b), 10, 1,
                     QuantileSketch.of([float(b + 1)] * 10).to_dict())
            for inst in ("a", "b") for b in range(3)]
    rows.append(StatsRow("d", "models:/m/2", "a", at, 5, 0, {}))
    merged = merge_rows(rows)
    assert merged["models:/m/1"].requests == 60
    assert merged["models:/m/1"].errors == 6
    assert QuantileSketch.from_dict(dict(merged["models:/m/1"].latency_sketch)).count == 60
    assert p99(merged["models:/m/1"]) == pytest.approx(3.0, rel=0.02)
    assert merged["models:/m/2"] == WindowStats(5, 0, {})
    assert p99(merged["models:/m/2"]) is None


counts = st.integers(100, 2_000)


@settings(max_examples=150, deadline=None)
@given(counts, st.data(), st.floats(1.0, 100.0), st.floats(1.0, 100.0))
def test_more_canary_errors_or_latency_never_turn_a_fail_into_a_pass(
        requests: int, data: st.DataObject, canary_ms: float, primary_ms: float) -> None:
    primary = stats(1000, data.draw(st.integers(0, 1000)), primary_ms)
    errors = data.draw(st.integers(0, requests))
    more_errors = data.draw(st.integers(errors, requests))
    slower = canary_ms * data.draw(st.floats(1.0, 10.0))
    base, _ = analyse(POLICY, stats(requests, errors, canary_ms), primary)
    worse, _ = analyse(POLICY, stats(requests, more_errors, slower), primary)
    rank = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}
    assert rank[worse] >= rank[base]
