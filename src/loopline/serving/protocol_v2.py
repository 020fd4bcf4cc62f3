"""The Open Inference Protocol (V2, as KServe, Triton and MLServer speak it), JSON tensors.

``{name}`` in the paths is a deployment; its primary version describes the model. An infer
request sends either one tensor per input column (shape ``[N]`` or ``[N, 1]``) or, for a
model whose signature names its columns, one 2-D tensor of shape ``[N, K]`` whose columns are
the signature's in order. ``data`` is flat (row-major) or nested; each value must fit the
tensor's ``datatype`` (a string is never taken for a number, a number never for a BOOL) and
integers its range: INT8 takes -128..127, UINT8 0..255 and so on. Columns hold 64-bit signed
integers, so UINT64 takes 0..2**63-1 here. The answer holds
``model_name``, ``model_version`` (``models:/NAME/VERSION``), ``id`` and one output tensor,
``predict``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from starlette.requests import Request

from loopline.core.ports import ServableModel
from loopline.serving.answers import RequestRefused
from loopline.serving.payloads import Limits, check_rows
from loopline.serving.routing import RoutingTable
from loopline.serving.scoring import Outcome, Parsed

_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_INT64_MAX = (1 << 63) - 1
# integer datatype -> (lowest, highest) value; every column is int64, hence UINT64's top
RANGES: dict[str, tuple[int, int]] = {
    **{f"INT{bits}": (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (0, min((1 << bits) - 1, _INT64_MAX)) for bits in (8, 16, 32, 64)},
}
# datatype -> (Python types its values may have, NumPy dtype of the column)
DATATYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "BOOL": ((bool,), "bool"), "FP16": ((int, float), "float64"),
    "FP32": ((int, float), "float64"), "FP64": ((int, float), "float64"),
    "BYTES": ((str,), "object"), **{name: ((int,), "int64") for name in _INTS},
}


def _tensor_fields(tensor: Any, where: str) -> tuple[str, list[int], str, Any]:
    if not isinstance(tensor, dict):
        raise RequestRefused(422, where, 'must be {"name", "shape", "datatype", "data"}')
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise RequestRefused(422, f"{where}.name", "must be a non-empty string")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestRefused(422, f"{where}.shape", "must be [rows] or [rows, columns] of "
                                                    "whole numbers")
    if datatype not in DATATYPES:
        raise RequestRefused(422, f"{where}.datatype", f"{datatype!r} is not one of "
                                                       f"{', '.join(DATATYPES)}")
    if "data" not in tensor or not isinstance(tensor["data"], list):
        raise RequestRefused(422, f"{where}.data", "must be a list of values")
    return name, shape, datatype, tensor["data"]


def _values(data: list[Any], shape: list[int], datatype: str, where: str) -> np.ndarray:
    """Return the tensor's values as an array of ``shape``, each checked against its type."""
    flat = data
    while flat and isinstance(flat[0], list):  # nested data: flatten one level at a time
        if not all(isinstance(part, list) for part in flat):
            raise RequestRefused(422, f"{where}.data", "mixes lists and values")
        flat = [value for part in flat for value in part]
    allowed, dtype = DATATYPES[datatype]
    found = set(map(type, flat))
    if not found <= set(allowed):
        names = ", ".join(sorted("null" if t is type(None) else t.__name__
                                 for t in found - set(allowed)))
        beyond = " (JSON integers beyond 64 bits read as float)" if datatype in RANGES \
            and float in found else ""
        raise RequestRefused(422, f"{where}.data", f"holds {names} values{beyond}; {datatype} "
                                                   f"takes {allowed[0].__name__} values")
    if len(flat) != math.prod(shape):
        raise RequestRefused(422, f"{where}.data", f"has {len(flat)} values; shape {shape} "
                                                   f"needs {math.prod(shape)}")
    if datatype in RANGES and flat:
        _check_range(flat, datatype, where)
    return np.asarray(flat, dtype=dtype).reshape(shape)


def _check_range(flat: list[int], datatype: str, where: str) -> None:
    """Refuse the first integer outside ``datatype``'s range, naming it and its index."""
    low, high = RANGES[datatype]
    if low <= min(flat) and max(flat) <= high:  # min and max run in C: the common case
        return
    index, value = next((i, v) for i, v in enumerate(flat) if not low <= v <= high)
    raise RequestRefused(422, f"{where}.data", f"holds {value} at position {index}; "
                                               f"{datatype} takes {low}..{high}")


class V2Wire:
    """``POST /v2/models/{name}/infer``."""

    def deployment(self, request: Request, body: Any, table: RoutingTable) -> str:
        """Return the deployment named in the path."""
        return str(request.path_params["name"])

    def parse(self, body: Any, model: ServableModel, limits: Limits) -> Parsed:
        """Return the input tensors as a frame.

        Raises:
            RequestRefused: naming ``inputs`` or ``inputs[i].<field>`` when a tensor is
                malformed, its values do not fit its datatype or shape, or rows are too many.
        """
        tensors = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(tensors, list) or not tensors:
            raise RequestRefused(422, "inputs", "must be a non-empty list of tensors")
        fields = [_tensor_fields(t, f"inputs[{i}]") for i, t in enumerate(tensors)]
        for index, (_, shape, _, _) in enumerate(fields):
            check_rows(shape[0], f"inputs[{index}].shape", limits)
        names = model.input_names
        first_name, first_shape = fields[0][0], fields[0][1]
        if len(fields) == 1 and len(first_shape) == 2 and (
                first_shape[1] != 1 or first_name not in names):
            return self._matrix(fields[0], names)
        columns: dict[str, np.ndarray] = {}
        for index, (name, shape, datatype, data) in enumerate(fields):
            if len(shape) == 2 and shape[1] != 1:
                raise RequestRefused(422, f"inputs[{index}].shape", "must be [rows] or "
                                     "[rows, 1] when each input is one column")
            if name in columns:
                raise RequestRefused(422, f"inputs[{index}].name", f"{name!r} is given twice")
            columns[name] = _values(data, shape, datatype, f"inputs[{index}]").reshape(-1)
        if len({len(values) for values in columns.values()}) != 1:
            raise RequestRefused(422, "inputs", "tensors have different numbers of rows")
        return Parsed(pd.DataFrame(columns), {t[0]: t[3] for t in fields})

    def _matrix(self, tensor: tuple[str, list[int], str, Any], names: tuple[str, ...]
                ) -> Parsed:
        _, shape, datatype, data = tensor
        if not names or shape[1] != len(names):
            raise RequestRefused(422, "inputs[0].shape", f"a 2-D tensor needs one column per "
                                 f"input of the model ({len(names)}: {', '.join(names)})")
        values = _values(data, shape, datatype, "inputs[0]")
        rows = data if data and isinstance(data[0], list) else values.tolist()
        return Parsed(pd.DataFrame(values, columns=list(names)),
                      {"dataframe_split": {"columns": list(names), "data": rows}})

    def render(self, outcome: Outcome) -> Any:
        """Return the V2 answer with one output tensor, ``predict``."""
        try:
            shape = list(np.shape(outcome.predictions))
        except ValueError:  # ragged outputs: say only how many rows
            shape = [len(outcome.predictions)]
        return {"model_name": outcome.deployment, "model_version": outcome.version,
                "id": outcome.request_id, "outputs": [{
                    "name": "predict", "shape": shape, "datatype": outcome.datatype,
                    "data": outcome.predictions}]}


def metadata(deployment: str, model: ServableModel) -> dict[str, Any]:
    """Return the V2 model metadata of ``deployment``: inputs from the signature."""
    types = model.input_types or ("BYTES",) * len(model.input_names)
    return {"name": deployment, "versions": [model.uri], "platform": "loopline",
            "inputs": [{"name": name, "datatype": datatype, "shape": [-1]}
                       for name, datatype in zip(model.input_names, types, strict=True)],
            "outputs": [{"name": "predict", "datatype": model.output_type,
                         "shape": [-1]}]}
