"""The canary analysis: compare a canary's window with the primary's, and keep the numbers.

Pure: no I/O. ``analyse`` returns ``"pass"``, ``"fail"`` or ``"inconclusive"`` and the
numbers it used, so a stored verdict can be re-evaluated to the same answer:

- ``min_samples``: both sides served at least ``policy.min_samples`` requests; otherwise the
  verdict is inconclusive unless the early error check below fails it (the other checks'
  values are still recorded).
- ``error_rate_increase``: canary error rate minus primary error rate, at most
  ``policy.max_error_rate_increase`` (absolute).
- ``canary_errors_at_min_samples`` (decides early, whatever the sample count): the canary's
  errors may be at most ``(primary error rate + max_error_rate_increase) * n`` with ``n`` the
  larger of ``min_samples`` and the canary's requests. More errors than that fail the canary
  even before ``min_samples`` is reached: however its next requests go, its error rate at
  ``min_samples`` requests would exceed the allowed one. So a low-traffic canary failing
  every request fails as soon as it has failed enough, rather than staying inconclusive.
- ``p99_ratio``: canary p99 latency at most ``policy.max_p99_ratio`` times the primary's;
  inconclusive when either side has no latency data.
- every key of ``policy.extra`` (drift, quality deltas): recorded with its threshold as "not
  supplied" until monitoring measures it; it does not decide the verdict.

A failed check fails the verdict; otherwise an inconclusive check makes it inconclusive;
otherwise it passes. ``numbers["decided_by"]`` names the checks that decided: the failed ones,
else the undecided ones, else every deciding check. More canary errors or more canary
latency never turn a failing verdict into a passing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loopline.core.deployments import AnalysisPolicy, WindowStats
from loopline.data.serving_windows import p99

__all__ = ["FAIL", "INCONCLUSIVE", "NOT_SUPPLIED", "PASS", "analyse", "policy_record"]

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
NOT_SUPPLIED = "not supplied"
_EPSILON = 1e-12  # float noise: 0.3 - 0.2 must not exceed a 0.1 threshold


def _check(name: str, observed: float | None, threshold: float, passed: bool | None,
           ) -> dict[str, Any]:
    return {"name": name, "observed": observed, "threshold": threshold, "passed": passed}


def _side(stats: WindowStats, latency: float | None) -> dict[str, Any]:
    return {"requests": stats.requests, "errors": stats.errors,
            "error_rate": stats.error_rate, "p99_ms": latency}


def _p99_check(policy: AnalysisPolicy, canary: float | None, primary: float | None,
               enough: bool) -> dict[str, Any]:
    if canary is None or primary is None:
        return _check("p99_ratio", None, policy.max_p99_ratio, None)
    if primary > 0:
        ratio: float | None = canary / primary
    else:
        ratio = 1.0 if canary <= 0 else None  # no finite ratio above a zero primary
    passed = canary <= policy.max_p99_ratio * primary * (1 + _EPSILON) + _EPSILON
    return _check("p99_ratio", ratio, policy.max_p99_ratio, passed if enough else None)


def policy_record(policy: AnalysisPolicy) -> dict[str, Any]:
    """Return the policy as JSON-ready data (kept with each verdict)."""
    return {"interval_seconds": policy.interval.total_seconds(),
            "max_error_rate_increase": policy.max_error_rate_increase,
            "max_p99_ratio": policy.max_p99_ratio, "min_samples": policy.min_samples,
            "passes_to_promote": policy.passes_to_promote,
            "failures_to_rollback": policy.failures_to_rollback,
            "extra": dict(policy.extra)}


def _verdict(checks: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """Return the verdict and the names of the checks that decided it."""
    deciding = [check for check in checks if check.get("status") != NOT_SUPPLIED]
    for verdict, passed in ((FAIL, False), (INCONCLUSIVE, None)):
        names = [check["name"] for check in deciding if check["passed"] is passed]
        if names:
            return verdict, names
    return PASS, [check["name"] for check in deciding]


def _early_errors_check(policy: AnalysisPolicy, canary: WindowStats, primary: WindowStats,
                        ) -> dict[str, Any]:
    """Fail when the canary's errors alone exceed what ``min_samples`` requests may hold."""
    allowed_rate = primary.error_rate + policy.max_error_rate_increase
    allowed = allowed_rate * max(policy.min_samples, canary.requests)
    passed = canary.errors <= allowed * (1 + _EPSILON) + _EPSILON
    return _check("canary_errors_at_min_samples", canary.errors, allowed, passed)


def analyse(policy: AnalysisPolicy, canary: WindowStats, primary: WindowStats,
            ) -> tuple[str, dict[str, Any]]:
    """Judge ``canary`` against ``primary`` by ``policy``; return the verdict and its numbers.

    The numbers: ``checks`` (each ``{name, observed, threshold, passed}``, ``passed`` None
    when it could not be decided), ``decided_by`` (the deciding checks' names), ``canary``
    and ``primary`` (requests, errors, error rate, p99 in ms) and ``policy``.

    Raises:
        InvalidArgumentError: when a latency sketch is malformed.
    """
    samples = min(canary.requests, primary.requests)
    enough = samples >= policy.min_samples
    delta = canary.error_rate - primary.error_rate
    canary_p99, primary_p99 = p99(canary), p99(primary)
    checks: list[dict[str, Any]] = [
        _check("min_samples", samples, policy.min_samples, True if enough else None),
        _check("error_rate_increase", delta, policy.max_error_rate_increase,
               delta <= policy.max_error_rate_increase + _EPSILON if enough else None),
        _p99_check(policy, canary_p99, primary_p99, enough),
        _early_errors_check(policy, canary, primary),
    ]
    for name in sorted(policy.extra):
        checks.append({**_check(name, None, float(policy.extra[name]), None),
                       "status": NOT_SUPPLIED})
    verdict, decided_by = _verdict(checks)
    numbers = {"checks": checks, "decided_by": decided_by,
               "canary": _side(canary, canary_p99), "primary": _side(primary, primary_p99),
               "policy": policy_record(policy)}
    return verdict, numbers
