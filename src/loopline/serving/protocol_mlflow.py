"""MLflow's scoring protocol: ``POST /invocations`` with one of its four JSON formats.

    dataframe_split    {"columns": [...], "data": [[...], ...]}
    dataframe_records  [{column: value}, ...]
    instances          records, rows (in signature order), or {column: [values]}
    inputs             as instances

The deployment is the ``X-Loopline-Deployment`` header, or the only one served. The answer is
``{"predictions": [...]}`` plus ``model_version`` and ``request_id`` (MLflow clients read
``predictions`` and ignore the rest).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from starlette.requests import Request

from loopline.core.errors import NotFoundError
from loopline.core.names import validate_name
from loopline.core.ports import ServableModel
from loopline.serving.answers import RequestRefused
from loopline.serving.payloads import (
    Limits,
    frame_from_columns,
    frame_from_records,
    frame_from_rows,
)
from loopline.serving.routing import RoutingTable
from loopline.serving.scoring import Outcome, Parsed

DEPLOYMENT_HEADER = "x-loopline-deployment"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _split(value: Any, limits: Limits) -> pd.DataFrame:
    if not isinstance(value, dict):
        raise RequestRefused(422, "dataframe_split", 'must be {"columns": [...], "data": '
                                                     "[[...], ...]}")
    columns = value.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or \
            len(set(columns)) != len(columns) or not columns:
        raise RequestRefused(422, "dataframe_split.columns", "must be a list of distinct "
                                                             "column names")
    return frame_from_rows(value.get("data"), columns, "dataframe_split.data", limits)


def _instances(value: Any, field: str, model: ServableModel, limits: Limits
               ) -> pd.DataFrame:
    if isinstance(value, dict):
        return frame_from_columns(value, field, limits)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return frame_from_records(value, field, limits)
    if isinstance(value, list) and value and not isinstance(value[0], list) and \
            len(model.input_names) == 1:  # scalars for a one-column model
        value = [[item] for item in value]
    return frame_from_rows(value, model.input_names, field, limits)


def _logged(key: str, value: Any, frame: pd.DataFrame) -> Any:
    """Return what the prediction log keeps: the value under its format key.

    Rows without names (``instances``/``inputs`` as lists of values) are kept as
    ``dataframe_split`` with the columns they were read as, so the log can be read back by
    column.
    """
    if key in ("instances", "inputs") and isinstance(value, list) and value and \
            not isinstance(value[0], dict):
        rows = value if isinstance(value[0], list) else [[item] for item in value]
        return {"dataframe_split": {"columns": [str(name) for name in frame.columns],
                                    "data": rows}}
    return {key: value}


class MlflowWire:
    """``POST /invocations``."""

    def deployment(self, request: Request, body: Any, table: RoutingTable) -> str:
        """Return the deployment the header names, or the only one served.

        Raises:
            InvalidArgumentError: 422 naming the header when it is not a valid name.
            RequestRefused: 422 naming the header when several are served and none is named.
            NotFoundError: when nothing is served.
        """
        named = request.headers.get(DEPLOYMENT_HEADER)
        if named:
            return validate_name(named, "X-Loopline-Deployment")
        served = table.deployments()
        if len(served) == 1:
            return served[0]
        if not served:
            raise NotFoundError("deployment", "(any)", "this server serves no deployment")
        raise RequestRefused(422, "X-Loopline-Deployment", f"name one of {', '.join(served)}")

    def parse(self, body: Any, model: ServableModel, limits: Limits) -> Parsed:
        """Return the rows of whichever format the body uses.

        Raises:
            RequestRefused: naming ``body`` unless exactly one format key is given, or the
                format's field that is malformed.
        """
        present = [key for key in FORMATS if key in body] if isinstance(body, dict) else []
        if len(present) != 1:
            raise RequestRefused(422, "body", f"must be a JSON object with exactly one of "
                                              f"{', '.join(FORMATS)}")
        key = present[0]
        value = body[key]
        if key == "dataframe_split":
            frame = _split(value, limits)
        elif key == "dataframe_records":
            frame = frame_from_records(value, key, limits)
        else:
            frame = _instances(value, key, model, limits)
        return Parsed(frame, _logged(key, value, frame))

    def render(self, outcome: Outcome) -> Any:
        """Return MLflow's answer, with the version and request id beside it."""
        return {"predictions": outcome.predictions, "model_version": outcome.version,
                "request_id": outcome.request_id}
