"""What a deployment may look like under each strategy, and parsing it from text.

Pure: no I/O. ``check_strategy`` holds the shape rules (``replace``: one primary at 100;
``shadow``: a primary at 100 plus mirrors; ``ab``: two or more answering arms and a sticky
key). The ``parse_*`` functions read what people type (``models:/M/2=50``, ``10,25,50,100``,
``90s``) and name the option in their errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from loopline.core.deployments import (
    ANSWERING,
    WEIGHT_TOTAL,
    Route,
    RouteRole,
    Strategy,
    check_routes,
    route_from_record,
)
from loopline.core.errors import InvalidArgumentError

STICKY_KEY = re.compile(r"^(header|field):([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
STICKY_FORMS = "use header:NAME (e.g. header:x-user-id) or field:NAME (e.g. field:user_id)"
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_INTERVAL = timedelta(days=1)


def parse_strategy(value: str | Strategy, field: str = "strategy") -> Strategy:
    """Return ``value`` as a strategy.

    Raises:
        InvalidArgumentError: naming ``field`` and the strategies there are.
    """
    try:
        return Strategy(str(value))
    except ValueError:
        raise InvalidArgumentError(field, f"{value!r} is not a strategy; use one of "
                                          f"{', '.join(Strategy)}") from None


def validate_sticky_key(value: str, field: str = "sticky_key") -> str:
    """Return ``value`` (a header name lower-cased) when it names a request header or field.

    Raises:
        InvalidArgumentError: naming ``field`` and the accepted forms.
    """
    match = STICKY_KEY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidArgumentError(field, f"{value!r} is not a request key; {STICKY_FORMS}")
    kind, name = match.groups()
    return f"header:{name.lower()}" if kind == "header" else value


def infer_strategy(routes: Sequence[Route]) -> Strategy:
    """Return the strategy fixed routes describe: ab (arms), shadow (mirrors) or replace."""
    if sum(1 for r in routes if r.role in ANSWERING) > 1:
        return Strategy.AB
    if any(r.role is RouteRole.SHADOW for r in routes):
        return Strategy.SHADOW
    return Strategy.REPLACE


def _positive_weights(routes: Sequence[Route], roles: tuple[RouteRole, ...],
                      field: str) -> None:
    for index, route in enumerate(routes):
        if route.role in roles and route.weight <= 0:
            raise InvalidArgumentError(f"{field}[{index}].weight",
                                       f"a {route.role} route needs a weight above 0")


def _shape(strategy: Strategy, routes: Sequence[Route], field: str) -> None:
    answering = sum(1 for r in routes if r.role in ANSWERING)
    shadows = sum(1 for r in routes if r.role is RouteRole.SHADOW)
    if strategy is Strategy.REPLACE and (answering, shadows) != (1, 0):
        raise InvalidArgumentError(field, "strategy replace takes one primary route at 100; "
                                          "use shadow to mirror traffic, ab to split it")
    if strategy is Strategy.SHADOW and (answering != 1 or shadows == 0):
        raise InvalidArgumentError(field, "strategy shadow takes one primary route at 100 "
                                          "and at least one shadow route")
    if strategy is Strategy.AB and answering < 2:
        raise InvalidArgumentError(field, "strategy ab needs at least two answering routes "
                                          "(the primary and canary-role arms)")


def check_strategy(strategy: Strategy, routes: Sequence[Route], sticky_key: str | None,
                   field: str = "routes") -> tuple[Route, ...]:
    """Return ``routes`` when they are a servable split of the shape ``strategy`` takes.

    A canary is not created: it is started on a deployment that has a primary.

    Raises:
        InvalidArgumentError: naming ``strategy``, ``sticky_key``, ``routes`` or
            ``routes[i].<field>`` (a model name, version, weight or role that is invalid).
    """
    if strategy is Strategy.CANARY:
        raise InvalidArgumentError("strategy", "a canary starts from a deployment that has "
                                               "a primary: create it (replace), then start "
                                               "a canary rollout")
    checked = check_routes([route_from_record(route.as_record(), f"{field}[{index}]")
                            for index, route in enumerate(routes)], field)
    _positive_weights(checked, (RouteRole.SHADOW,), field)
    _shape(strategy, checked, field)
    if strategy is Strategy.AB:
        _positive_weights(checked, ANSWERING, field)
        if sticky_key is None:
            raise InvalidArgumentError("sticky_key", f"strategy ab assigns arms by a request "
                                                     f"key; {STICKY_FORMS}")
    return checked


def parse_percent(text: str, field: str) -> float:
    """Return ``text`` as a percent in [0, 100].

    Raises:
        InvalidArgumentError: naming ``field`` when it is not a number from 0 to 100.
    """
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = float("nan")
    if not 0 <= value <= WEIGHT_TOTAL:
        raise InvalidArgumentError(field, f"{text!r} must be a percent from 0 to 100")
    return value


def parse_arm(text: str, field: str = "--arm") -> tuple[str, float]:
    """Return the model URI and weight of ``URI=PERCENT`` (``models:/fraud/3=50``).

    Raises:
        InvalidArgumentError: naming ``field`` when the form or the percent is wrong.
    """
    uri, equals, weight = text.rpartition("=")
    if not equals or not uri:
        raise InvalidArgumentError(field, f"{text!r} must be URI=PERCENT, e.g. "
                                          "models:/fraud/3=50")
    return uri, parse_percent(weight, field)


def parse_steps(text: str, field: str = "--steps") -> tuple[float, ...]:
    """Return the comma-separated percents of ``text`` (``10,25,50,100``).

    Raises:
        InvalidArgumentError: naming ``field`` when a step is not a number.
    """
    steps = []
    for part in text.split(","):
        try:
            steps.append(float(part.strip().removesuffix("%")))
        except ValueError:
            raise InvalidArgumentError(field, f"{part.strip()!r} in {text!r} is not a "
                                              "percent; e.g. 10,25,50,100") from None
    return tuple(steps)


def parse_interval(text: str, field: str = "--interval") -> timedelta:
    """Return ``text`` (``90``, ``90s``, ``5m``, ``1h``, ``500ms``) as a positive duration.

    Raises:
        InvalidArgumentError: naming ``field`` when it is malformed, zero or over a day.
    """
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        raise InvalidArgumentError(field, f"{text!r} must be a duration such as 60s, 5m or 1h")
    value = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    if not timedelta(0) < value <= MAX_INTERVAL:
        raise InvalidArgumentError(field, f"{text!r} must be above 0 and at most a day")
    return value
