"""A model version as the server uses it: loaded, verified, checked against its signature.

``load_servable`` reads the version through the registry's verifying load path (the
artifact's SHA-256 is checked as it is read, a pickle loads only with the version's audited
trust decision) and refuses a quarantined version. The result implements the
``ServableModel`` port (``core.ports``): ``check`` maps ``signature_checks.check_batch``'s
violations (extra columns refused) to plain dicts, and ``predict`` hands the model its columns
in the signature's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loopline.core.errors import PolicyDeniedError
from loopline.core.models import ModelStatus, ModelVersion
from loopline.core.ports import BlobStore
from loopline.registry.flavors import LoadedModel, TrustContext
from loopline.registry.loading import load_version
from loopline.registry.signature_checks import check_batch
from loopline.registry.signatures import Signature
from loopline.store.model_queries import ModelQueries

BATCHABLE_FLAVORS = frozenset({"sklearn", "onnx"})
# Open Inference Protocol (V2) datatypes of the signature's column types.
V2_DATATYPES: Mapping[str, str] = {"int64": "INT64", "float64": "FP64", "bool": "BOOL",
                                   "string": "BYTES", "category": "BYTES",
                                   "datetime": "BYTES"}


def _declared_batchable(version: ModelVersion) -> bool:
    """Tell whether the version's flavor (or, for ``python``, its tags) allows batching."""
    if version.flavor in BATCHABLE_FLAVORS:
        return True
    flag = version.tags.get("batchable")
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


class Servable:
    """A loaded model version with its signature: the registry's ``ServableModel``."""

    __slots__ = ("_batchable", "_loaded", "_names", "_plain", "_signature", "_types", "_uri")

    def __init__(self, version: ModelVersion, loaded: LoadedModel,
                 signature: Signature | None) -> None:
        self._uri = version.uri
        self._loaded = loaded
        self._signature = signature
        self._names = signature.names if signature is not None else ()
        self._types = tuple(V2_DATATYPES[c.dtype] for c in signature.inputs) \
            if signature is not None else ()
        self._batchable = _declared_batchable(version)
        # An estimator fitted on an array warns when given named columns: give it values.
        self._plain = loaded.flavor == "sklearn" and not hasattr(loaded.raw,
                                                                  "feature_names_in_")

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return self._uri

    @property
    def input_names(self) -> tuple[str, ...]:
        """The signature's input columns, in order (empty without a signature)."""
        return self._names

    @property
    def input_types(self) -> tuple[str, ...]:
        """The V2 datatype of each input column (``FP64``, ``INT64``, ``BOOL``, ``BYTES``)."""
        return self._types

    @property
    def output_type(self) -> str:
        """The V2 datatype of the predictions, as far as the signature tells (else BYTES)."""
        if self._signature is None:
            return "BYTES"
        output = self._signature.output
        if output.type != "class":
            return "FP64"
        classes = output.classes or ()
        if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            return "INT64"
        if classes and all(isinstance(c, int | float) for c in classes):
            return "FP64"
        return "BYTES"

    @property
    def batchable(self) -> bool:
        """True for ``sklearn``/``onnx``; for ``python`` only when tagged ``batchable: true``."""
        return self._batchable

    def check(self, batch: Any) -> list[Mapping[str, Any]]:
        """Return how ``batch`` departs from the signature (none without a signature).

        Each violation is ``{"column", "kind", "severity", "rows", "message"}``; columns the
        signature does not name are errors (kind ``extra``).

        Raises:
            InvalidArgumentError: when ``batch`` is neither a DataFrame nor a 2-D array of the
                signature's width.
        """
        if self._signature is None:
            return []
        return [{"column": v.column, "kind": v.kind, "severity": v.severity, "rows": v.rows,
                 "message": v.message}
                for v in check_batch(self._signature, batch, allow_extra=False)]

    def predict(self, batch: Any) -> Any:
        """Return one prediction per row of ``batch``, its columns put in signature order.

        Raises:
            InvalidArgumentError: when the model refuses the batch.
        """
        if self._names and hasattr(batch, "columns") and \
                tuple(batch.columns) != self._names:  # reselecting costs more than predict
            batch = batch[list(self._names)]
        if self._plain and hasattr(batch, "to_numpy"):
            batch = batch.to_numpy()
        return self._loaded.predict(batch)


def load_servable(blobs: BlobStore, queries: ModelQueries, name: str, version: int
                  ) -> Servable:
    """Load version ``version`` of ``name`` for serving.

    Raises:
        NotFoundError: when there is no such version.
        PolicyDeniedError: when the version is quarantined.
        UntrustedModelError: when its flavor needs a trust decision it lacks.
        IntegrityError: when its stored bytes do not match their digest.
        ConfigurationError: when the flavor's libraries are not installed.
    """
    found = queries.version(name, version)
    if found.status is ModelStatus.QUARANTINED:
        raise PolicyDeniedError(f"{found.uri} is quarantined and may not be served; release "
                                "it (status candidate) or route another version")
    trust = TrustContext(trusted=queries.is_trusted(found.name, found.version))
    loaded = load_version(blobs, found, trust)
    signature = Signature.from_dict(found.signature) if found.signature else None
    return Servable(found, loaded, signature)
