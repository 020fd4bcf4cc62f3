"""The ``onnx`` flavor: the portable format, exported with skl2onnx and run by onnxruntime.

ONNX runs no Python from the artifact, so it loads without a trust decision; it is still
checked: a model that points at external data files is refused (an artifact must be whole),
and sessions use the CPU provider with no custom-op libraries. skl2onnx, onnx and
onnxruntime are the optional extra ``loopline[onnx]``, imported only when used.

:func:`to_onnx` types the model's inputs from a sample: one float tensor ``X`` for an array
or an all-numeric DataFrame (whose column order is kept, so a frame's columns are put back in
it), else one ``[None, 1]`` input per column as skl2onnx maps a ``ColumnTransformer``.
Classifiers output ``label`` and ``probabilities`` (no ZipMap). Scores are float32: expect
agreement with the original model to about 1e-5, not bit for bit.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from loopline.core.errors import ConfigurationError, IntegrityError, InvalidArgumentError
from loopline.registry.flavors.base import TrustContext, no_probabilities

_INSTALL = "pip install 'loopline[onnx]'"
_CLASSES = "loopline.classes"
_COLUMNS = "loopline.columns"
_LAYOUT = "loopline.layout"  # "tensor" (one input X) or "columns" (an input per column)
_ORT_ERRORS = ("InvalidArgument", "InvalidProtobuf", "InvalidGraph", "Fail", "NoSuchFile",
               "NotImplemented", "RuntimeException", "EPFail")
_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
                "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
                "tensor(string)": "object"}


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"the 'onnx' flavor needs {module.split('.')[0]}, which is "
                                 f"not installed; {_INSTALL}") from exc


def _ort_errors(ort: Any) -> tuple[type[Exception], ...]:
    state = ort.capi.onnxruntime_pybind11_state
    return tuple(getattr(state, name) for name in _ORT_ERRORS if hasattr(state, name))


# -- export ---------------------------------------------------------------------------------

def _column_type(name: str, dtype: Any, types: Any) -> Any:
    kind = getattr(dtype, "kind", "O")
    if kind == "f":
        return types.FloatTensorType([None, 1])
    if kind in "iu":
        return types.Int64TensorType([None, 1])
    if kind == "b":
        return types.BooleanTensorType([None, 1])
    if kind in "OUS":  # object, str and category columns (a category's kind is "O")
        return types.StringTensorType([None, 1])
    raise InvalidArgumentError(f"sample column {name!r}", f"has dtype {dtype}, which ONNX "
                                                          "inputs cannot take")


def _initial_types(sample: Any, types: Any) -> tuple[list[tuple[str, Any]], list[str], str]:
    """Return skl2onnx initial types, the sample's column names and the input layout."""
    import numpy as np

    columns = getattr(sample, "columns", None)
    if columns is None:
        array = np.asarray(sample)
        if array.ndim != 2 or array.dtype.kind not in "biuf":
            raise InvalidArgumentError("sample", f"must be a DataFrame or a 2-D numeric array, "
                                                 f"not {array.ndim}-D {array.dtype}")
        return [("X", types.FloatTensorType([None, array.shape[1]]))], [], "tensor"
    names = list(columns)
    if not all(isinstance(name, str) for name in names):
        raise InvalidArgumentError("sample", "column names must be strings")
    dtypes = [sample[name].dtype for name in names]
    if all(getattr(dtype, "kind", "O") in "iuf" for dtype in dtypes):
        return [("X", types.FloatTensorType([None, len(names)]))], names, "tensor"
    inputs = [(n, _column_type(n, d, types)) for n, d in zip(names, dtypes, strict=True)]
    return inputs, names, "columns"


def _classes_of(model: Any) -> list[Any] | None:
    labels = getattr(model, "classes_", None)
    if labels is None:
        return None
    found = list(labels.tolist()) if hasattr(labels, "tolist") else list(labels)
    try:
        json.dumps(found)
    except (TypeError, ValueError):  # labels JSON cannot hold: leave them unrecorded
        return None
    return found


def to_onnx(model: Any, sample: Any) -> Any:
    """Return ``model`` as an ONNX ``ModelProto`` whose inputs are typed from ``sample``.

    Raises:
        ConfigurationError: when the ``loopline[onnx]`` extra is not installed.
        InvalidArgumentError: when ``sample`` cannot type inputs or skl2onnx cannot convert
            the model.
    """
    skl2onnx = _require("skl2onnx")
    inputs, columns, layout = _initial_types(sample, _require("skl2onnx.common.data_types"))
    from sklearn.base import is_classifier

    classifier = hasattr(model, "__sklearn_tags__") and is_classifier(model)
    options = {"zipmap": False} if classifier else None
    try:
        proto = skl2onnx.convert_sklearn(model, name="loopline", initial_types=inputs,
                                         options=options)
    except (RuntimeError, ValueError, TypeError, NameError, KeyError, NotImplementedError) as exc:
        raise InvalidArgumentError("model", f"skl2onnx cannot convert this "
                                            f"{type(model).__name__}: {exc}") from exc
    for key, value in ((_COLUMNS, columns), (_CLASSES, _classes_of(model)), (_LAYOUT, layout)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto


# -- running --------------------------------------------------------------------------------

def _recorded(metadata: dict[str, str], inputs: int
              ) -> tuple[list[str], tuple[Any, ...] | None, str]:
    """Return the columns, classes and layout :func:`to_onnx` recorded (defaults if absent).

    Raises:
        IntegrityError: when the recorded values are malformed.
    """
    default = "tensor" if inputs == 1 else "columns"
    try:
        columns = json.loads(metadata.get(_COLUMNS, "[]"))
        classes = json.loads(metadata.get(_CLASSES, "null"))
        layout = json.loads(metadata.get(_LAYOUT, json.dumps(default)))
    except ValueError as exc:
        raise IntegrityError(f"the 'onnx' artifact's loopline metadata is not JSON: {exc}") from exc
    well_formed = (isinstance(columns, list) and all(isinstance(c, str) for c in columns)
                   and (classes is None or isinstance(classes, list))
                   and layout in ("tensor", "columns") and (layout == "columns" or inputs == 1))
    if not well_formed:
        raise IntegrityError("the 'onnx' artifact's loopline metadata does not fit its inputs")
    return columns, None if classes is None else tuple(classes), layout


class OnnxModel:
    """A loaded ONNX model: an ``onnxruntime`` session and what loopline recorded with it."""

    __slots__ = ("_classes", "_columns", "_errors", "_inputs", "_layout", "_outputs", "_session")
    flavor = "onnx"

    def __init__(self, session: Any, metadata: dict[str, str], errors: tuple[type[Exception], ...]
                 ) -> None:
        """Wrap ``session``; ``metadata`` is the model's metadata properties.

        Raises:
            IntegrityError: when loopline's metadata in the model is malformed.
        """
        self._session = session
        self._errors = errors
        self._inputs = list(session.get_inputs())
        self._outputs = [output.name for output in session.get_outputs()]
        self._columns, self._classes, self._layout = _recorded(metadata, len(self._inputs))

    @property
    def raw(self) -> Any:
        """The ``onnxruntime.InferenceSession``."""
        return self._session

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The class labels recorded by :func:`to_onnx`, or None."""
        return self._classes

    @property
    def has_proba(self) -> bool:
        """Tell whether the model has a probabilities output."""
        return self._proba_output() is not None

    def _proba_output(self) -> str | None:
        if "probabilities" in self._outputs:
            return "probabilities"
        return self._outputs[1] if len(self._outputs) > 1 else None

    def _feeds(self, batch: Any) -> dict[str, Any]:
        import numpy as np

        columns = getattr(batch, "columns", None)
        wanted = self._columns if self._layout == "tensor" else [i.name for i in self._inputs]
        if columns is None and self._layout != "tensor":
            raise InvalidArgumentError("batch", f"this model takes a DataFrame with the columns "
                                                f"{wanted}")
        missing = [] if columns is None else [name for name in wanted if name not in columns]
        if missing:
            raise InvalidArgumentError("batch", f"lacks the columns {missing}")
        try:
            if self._layout == "tensor":
                (only,) = self._inputs
                frame = batch[wanted] if columns is not None and wanted else batch
                return {only.name: np.asarray(frame, dtype=_NUMPY_TYPES.get(only.type))}
            return {i.name: batch[i.name].to_numpy().astype(_NUMPY_TYPES.get(i.type))
                    .reshape(-1, 1) for i in self._inputs}
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError("batch", f"cannot feed the model: {exc}") from exc

    def _run(self, output: str, batch: Any) -> Any:
        try:
            (result,) = self._session.run([output], self._feeds(batch))
        except self._errors as exc:
            raise InvalidArgumentError("batch", f"the model refused it: {exc}") from exc
        return result

    def predict(self, batch: Any) -> Any:
        """Return the first output (labels, or values as a 1-D array for a regressor).

        Raises:
            InvalidArgumentError: when the batch lacks a column or the session refuses it.
        """
        result = self._run(self._outputs[0], batch)
        return result.ravel() if result.ndim == 2 and result.shape[1] == 1 else result

    def predict_proba(self, batch: Any) -> Any:
        """Return the probabilities output, one column per class.

        Raises:
            InvalidArgumentError: when the model has no probabilities or refuses the batch.
        """
        name = self._proba_output()
        if name is None:
            raise no_probabilities(self.flavor, self._session)
        return self._run(name, batch)


def _external_tensors(graph: Any, external: int) -> list[str]:
    """Return the names of tensors in ``graph`` and its subgraphs stored outside the model."""
    found = [t.name for t in graph.initializer if t.data_location == external]
    found += [s.values.name for s in graph.sparse_initializer
              if s.values.data_location == external]
    for node in graph.node:
        for attribute in node.attribute:
            found += [t.name for t in (attribute.t, *attribute.tensors)
                      if t.data_location == external]
            for subgraph in (attribute.g, *attribute.graphs):
                found += _external_tensors(subgraph, external)
    return found


class OnnxFlavor:
    """ONNX models (``onnx.ModelProto``), run on the CPU by onnxruntime."""

    name = "onnx"

    def accepts(self, model: object) -> bool:
        """Tell whether ``model`` is an ``onnx.ModelProto`` (make one with :func:`to_onnx`)."""
        proto = getattr(sys.modules.get("onnx"), "ModelProto", None)
        return isinstance(proto, type) and isinstance(model, proto)

    def save(self, model: Any) -> bytes:
        """Return the model's deterministic protobuf serialisation.

        Raises:
            InvalidArgumentError: when ``model`` is not a ``ModelProto``.
        """
        if not self.accepts(model):
            raise InvalidArgumentError("model", f"a {type(model).__name__} is not an ONNX "
                                                "ModelProto; convert it with to_onnx(model, "
                                                "sample) first")
        return bytes(model.SerializeToString(deterministic=True))

    def load(self, data: bytes, trust: TrustContext) -> OnnxModel:
        """Return an inference session over ``data``; ``trust`` is not needed (no code runs).

        Raises:
            ConfigurationError: when the ``loopline[onnx]`` extra is not installed.
            IntegrityError: when ``data`` is not a loadable, self-contained ONNX model.
        """
        onnx, ort = _require("onnx"), _require("onnxruntime")
        errors = _ort_errors(ort)
        decode_error = _require("google.protobuf.message").DecodeError
        try:
            proto = onnx.load_model_from_string(data)
        except decode_error as exc:
            raise IntegrityError(f"the 'onnx' artifact is not an ONNX model: {exc}") from exc
        external = _external_tensors(proto.graph, onnx.TensorProto.EXTERNAL)
        if external:
            raise IntegrityError(f"the 'onnx' artifact refers to external data for "
                                 f"{', '.join(sorted(external)[:5])}; it must be self-contained")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns on stderr otherwise
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except errors as exc:
            raise IntegrityError(f"the 'onnx' artifact does not load: {exc}") from exc
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        return OnnxModel(session, metadata, errors)
