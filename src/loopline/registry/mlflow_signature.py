"""MLflow model signatures in loopline's terms: column types mapped, tensor inputs refused.

Pure: no I/O. MLflow keeps a signature in ``MLmodel`` as two JSON texts, ``inputs`` and
``outputs``, each a list of specs. Column specs (``{"name": "x", "type": "double",
"required": true}``) become ``ColumnSpec``: a column that is not ``required`` is nullable, and
an unnamed one is called ``f<i>``, as loopline names array columns. A tensor spec
(``{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}``) has no named
columns, so tensor *inputs* are refused; tensor *outputs* are common (``infer_signature`` on a
NumPy prediction) and only their dtype matters. The output is settled by the loaded model
(:func:`settle_output`): a fitted classifier's ``classes_`` win over what MLflow wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.registry.signatures import ColumnSpec, OutputSpec, Scalar, Signature

COLUMN_TYPES: Mapping[str, str] = {
    "double": "float64", "float": "float64", "long": "int64", "integer": "int64",
    "boolean": "bool", "string": "string", "datetime": "datetime",
}
MAX_SIGNATURE_CHARS = 1_000_000
_NUMBER_TYPES = frozenset({"double", "float"})
_NUMBER_DTYPE_PREFIXES = ("float", "complex")


@dataclass(frozen=True, slots=True)
class MlflowSignature:
    """A converted MLflow signature: loopline input columns and the output MLflow described.

    ``output`` is None when MLflow recorded no outputs; the loaded model then decides.
    """

    inputs: tuple[ColumnSpec, ...]
    output: OutputSpec | None


def _specs(block: Mapping[str, Any], key: str) -> list[Any] | None:
    field = f"signature.{key}"
    text = block.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > MAX_SIGNATURE_CHARS:
        raise InvalidArgumentError(field, f"must be a JSON text of at most {MAX_SIGNATURE_CHARS}"
                                          " characters, as MLflow writes it")
    try:
        specs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(field, f"is not valid JSON: {exc}") from exc
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise InvalidArgumentError(field, "must be a JSON list of column specs "
                                          '({"name": ..., "type": ...})')
    return specs


def _column(index: int, spec: Mapping[str, Any]) -> ColumnSpec:
    field = f"signature.inputs[{index}]"
    name, kind = spec.get("name", f"f{index}"), spec.get("type")
    if kind == "tensor":
        raise InvalidArgumentError(field, "is a tensor spec: the signature is tensor-based, and "
                                          "loopline signatures describe named columns; log the "
                                          "model with a DataFrame input (column-based signature)"
                                          " or remove the signature block to import it without")
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{field}.name", f"{name!r} is not a non-empty text")
    dtype = COLUMN_TYPES.get(kind) if isinstance(kind, str) else None
    if dtype is None:
        raise InvalidArgumentError(f"{field}.type", f"{kind!r} (column {name!r}) has no loopline "
                                                    f"column type; supported: "
                                                    f"{', '.join(COLUMN_TYPES)}")
    required = spec.get("required", True)
    if not isinstance(required, bool):
        raise InvalidArgumentError(f"{field}.required", f"{required!r} is not true or false")
    return ColumnSpec(name, dtype, nullable=not required)


def _output_type(spec: Mapping[str, Any]) -> str:
    """Return ``number`` or ``class`` for one output spec (a column or a tensor)."""
    kind = spec.get("type")
    if kind == "tensor":
        tensor = spec.get("tensor-spec")
        dtype = tensor.get("dtype") if isinstance(tensor, Mapping) else None
        if not isinstance(dtype, str):
            raise InvalidArgumentError("signature.outputs", "a tensor spec lacks its dtype")
        return "number" if dtype.startswith(_NUMBER_DTYPE_PREFIXES) else "class"
    if not isinstance(kind, str) or kind not in COLUMN_TYPES:
        raise InvalidArgumentError("signature.outputs", f"type {kind!r} has no loopline output "
                                                        "type (a number, class or "
                                                        "probabilities)")
    return "number" if kind in _NUMBER_TYPES else "class"


def _output(specs: list[Any] | None) -> OutputSpec | None:
    if not specs:
        return None
    kinds = [_output_type(spec) for spec in specs]
    if len(kinds) == 1:
        return OutputSpec(kinds[0])
    if all(kind == "number" for kind in kinds):  # one number per class
        return OutputSpec("probabilities")
    raise InvalidArgumentError("signature.outputs", f"has {len(kinds)} columns that are not all "
                                                    "numbers; loopline outputs are one class, one "
                                                    "number or class probabilities")


def parse_signature(block: Any) -> MlflowSignature | None:
    """Return the MLmodel ``signature`` block in loopline's terms (None when there is none).

    Raises:
        InvalidArgumentError: naming ``signature``, ``signature.inputs[i]`` (and its
            ``type``) or ``signature.outputs`` when it is not valid JSON, tensor-based
            inputs, or a type loopline has no counterpart for (``binary``, arrays, objects).
    """
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise InvalidArgumentError("signature", "must be a mapping of inputs and outputs "
                                                "(JSON texts), as MLflow writes it")
    specs = _specs(block, "inputs")
    if not specs:
        raise InvalidArgumentError("signature.inputs", "is missing or empty; a signature "
                                                       "names the model's input columns")
    inputs = tuple(_column(index, spec) for index, spec in enumerate(specs))
    output = _output(_specs(block, "outputs"))
    Signature(inputs, output or OutputSpec("number"))  # checks the columns now, by name
    return MlflowSignature(inputs, output)


def _classes(model: Any) -> tuple[Scalar, ...] | None:
    found = getattr(model, "classes_", None)
    if found is None:
        return None
    items = tuple(found.tolist() if hasattr(found, "tolist") else found)
    labels = all(isinstance(item, str | int | float) for item in items)
    return items if labels else None


def settle_output(signature: MlflowSignature, model: Any) -> Signature:
    """Return the loopline signature once the model is loaded.

    A model with ``classes_`` (a fitted classifier) gives a class output with those classes,
    or class probabilities when MLflow described several numbers; otherwise MLflow's output
    stands, and without one the output is taken to be a number.
    """
    output = signature.output or OutputSpec("number")
    classes = _classes(model)
    if classes is not None:
        kind = "probabilities" if output.type == "probabilities" else "class"
        output = replace(output, type=kind, classes=classes)
    return Signature(signature.inputs, output)
