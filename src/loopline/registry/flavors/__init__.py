"""Model flavors: how a model is saved as bytes and loaded back, chosen by name or by object.

    sklearn  skops archive; types checked against an allow list   scikit-learn-compatible
    onnx     ONNX protobuf run by onnxruntime (extra loopline[onnx])  ``onnx.ModelProto``
    python   pickle; loads only with an audited trust decision     never chosen automatically

Importing this package imports no ML library; each flavor imports its own when it works.
Bytes handed to ``load`` must come through the verifying content store: flavors check the
format, not the hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.registry.flavors.base import (
    UNTRUSTED,
    EstimatorModel,
    Flavor,
    LoadedModel,
    TrustContext,
)
from loopline.registry.flavors.onnx_flavor import OnnxFlavor, OnnxModel, to_onnx
from loopline.registry.flavors.python_flavor import PythonFlavor
from loopline.registry.flavors.sklearn_flavor import SklearnFlavor, is_allowed, untrusted_types

SKLEARN = SklearnFlavor()
ONNX = OnnxFlavor()
PYTHON = PythonFlavor()
FLAVORS: Mapping[str, Flavor] = MappingProxyType({f.name: f for f in (SKLEARN, ONNX, PYTHON)})
AUTOMATIC: tuple[Flavor, ...] = (ONNX, SKLEARN)  # python is opt-in: it needs trust to load

__all__ = [
    "AUTOMATIC",
    "FLAVORS",
    "ONNX",
    "PYTHON",
    "SKLEARN",
    "UNTRUSTED",
    "EstimatorModel",
    "Flavor",
    "LoadedModel",
    "OnnxFlavor",
    "OnnxModel",
    "PythonFlavor",
    "SklearnFlavor",
    "TrustContext",
    "flavor_for",
    "flavor_named",
    "is_allowed",
    "to_onnx",
    "untrusted_types",
]


def flavor_named(name: str) -> Flavor:
    """Return the flavor called ``name``.

    Raises:
        NotFoundError: naming the known flavors when there is none by that name.
    """
    found = FLAVORS.get(name) if isinstance(name, str) else None
    if found is None:
        raise NotFoundError("flavor", str(name), hint=f"known flavors: {', '.join(FLAVORS)}")
    return found


def flavor_for(model: object) -> Flavor:
    """Return the flavor that stores ``model``: ``onnx`` for a ModelProto, else ``sklearn``.

    Raises:
        InvalidArgumentError: when neither takes it; the message names the choices, since
            the ``python`` flavor is never picked without being asked for.
    """
    for flavor in AUTOMATIC:
        if flavor.accepts(model):
            return flavor
    raise InvalidArgumentError(
        "model", f"no flavor stores a {type(model).__name__} by itself: scikit-learn-compatible "
                 "estimators use 'sklearn', ONNX models (to_onnx) use 'onnx'; for anything "
                 "else ask for flavor 'python', a pickle that loads only with an audited trust "
                 "decision")
