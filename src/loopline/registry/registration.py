"""What registering a model records, prepared before anything is written.

``prepare`` picks the flavor, saves the model to bytes, settles the signature (given, or
inferred from an input example), normalises the metrics (``registry.metrics``), records the
holdout sample and the model's outputs on it (``registry.holdout``), profiles the reference
data and the model's outputs on it (``registry.reference_profile``) and captures the code
version and environment; it computes every digest itself, so the gate can be asked about the
exact version before a byte reaches the artifact store (``Payload``s are stored after).
``check_references`` refuses dataset snapshots and runs that do not exist, so lineage never
gains a dangling edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.canonical import sha256_hex
from loopline.core.datasets import DatasetVersion
from loopline.core.errors import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    UserCodeError,
)
from loopline.core.models import NewModelVersion
from loopline.core.names import validate_name
from loopline.core.ports import BlobStore
from loopline.data.provenance import code_version, environment
from loopline.registry.environment_check import CapturedEnvironment, capture
from loopline.registry.flavors import Flavor, flavor_for, flavor_named
from loopline.registry.holdout import (
    PreparedHoldout,
    Tolerance,
    parse_tolerance,
    prepare_holdout,
    scorer_for,
)
from loopline.registry.metrics import normalise_metrics
from loopline.registry.reference_profile import PreparedReference, prepare_reference
from loopline.registry.signature_checks import check_batch
from loopline.registry.signatures import Signature, infer_signature
from loopline.store import MetadataStore
from loopline.store.datasets import DatasetQueries
from loopline.store.run_queries import RunQueries


@dataclass(frozen=True, slots=True)
class Registration:
    """Everything a registration records beside the model object itself.

    ``signature`` wins over ``input_example``; without either the version has no signature.
    ``datasets`` are snapshot refs ``NAME@VERSION`` (or ``DatasetVersion`` objects); ``run``
    is the id of the pipeline run that trained the model. ``flavor`` names the format
    (``sklearn``, ``onnx``, ``python``); by default it is chosen from the object, and
    ``python`` is never chosen by itself. ``code_dir`` is where the git state is read
    (default: the current folder). ``holdout`` is the data whose sample and outputs are
    recorded for ``verify`` (default: ``input_example``; False records none), compared
    under ``tolerance`` (``"exact"`` or ``{"rtol": ..., "atol": ...}``; default: by flavor).
    ``reference`` is the training inputs (DataFrame or pyarrow Table), whose profile and the
    model's outputs' profile monitoring compares windows with (``registry.reference_profile``);
    without it the version has no reference profile (``input_example`` is never taken as one).
    """

    signature: Signature | Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, Any] | None = None
    datasets: Sequence[str | DatasetVersion] = ()
    run: str | None = None
    description: str | None = None
    flavor: str | None = None
    input_example: Any = None
    code_dir: Path | None = None
    holdout: Any = None
    tolerance: Tolerance | None = None
    reference: Any = None


@dataclass(frozen=True, slots=True)
class Payload:
    """Bytes a version's record names by digest, stored before the version is written.

    The bytes are ``data``, or the file at ``path``; ``what`` names them in errors.
    """

    digest: str
    what: str
    data: bytes | None = None
    path: Path | None = None

    def store(self, blobs: BlobStore) -> None:
        """Store the bytes and check the store names them by the digest the record names.

        Raises:
            IntegrityError: naming ``what`` when the stored bytes hash to another digest.
        """
        if self.data is not None:
            info = blobs.put_bytes(self.data)
        elif self.path is not None:
            info = blobs.put_file(self.path)
        else:  # pragma: no cover - every payload is built with one of them
            raise IntegrityError(f"the {self.what} has no bytes to store")
        if info.digest != self.digest:
            raise IntegrityError(f"the {self.what} hashes to {info.digest}, not to the "
                                 f"{self.digest} its record names")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A registration ready to gate and write: the version's record and the bytes to store."""

    new: NewModelVersion
    artifact: bytes
    environment: CapturedEnvironment
    holdout: PreparedHoldout | None = None
    reference: PreparedReference | None = None

    def payloads(self) -> tuple[Payload, ...]:
        """Return the bytes to store: artifact, environment record, holdout files, reference."""
        found = [Payload(self.new.artifact_digest, "artifact", self.artifact),
                 Payload(self.environment.summary["artifact"], "environment record",
                         self.environment.record)]
        if self.holdout is not None:
            record = self.holdout.record
            found += [Payload(record["inputs"], "holdout inputs", self.holdout.inputs),
                      Payload(record["outputs"], "holdout outputs", self.holdout.outputs)]
        if self.reference is not None:
            found.append(Payload(self.reference.record["digest"], "reference profile",
                                 self.reference.payload))
        return tuple(found)


def _flavor(model: object, name: str | None) -> Flavor:
    if name is None:
        return flavor_for(model)
    try:
        return flavor_named(name)
    except NotFoundError as exc:
        raise InvalidArgumentError("flavor", exc.message) from exc


def _predictions(model: Any, example: Any) -> Any:
    """Return the model's predictions for ``example`` (to type the signature's output)."""
    predict = getattr(model, "predict", None)
    if not callable(predict):
        raise InvalidArgumentError("signature", f"the output of a {type(model).__name__} "
                                                "cannot be inferred from input_example alone; "
                                                "pass signature=infer_signature(X, y)")
    try:
        return predict(example)
    except Exception as exc:  # the user's model: any failure is theirs, kept as the cause
        raise UserCodeError(f"the model's predict raised on input_example: "
                            f"{type(exc).__name__}: {exc}") from exc


def _given_signature(registration: Registration) -> Signature:
    given = registration.signature
    if isinstance(given, Signature):
        signature = given
    elif isinstance(given, Mapping):
        signature = Signature.from_dict(given)
    else:
        raise InvalidArgumentError("signature", "must be a Signature or its to_dict() form")
    if registration.input_example is not None:
        errors = [v.message for v in check_batch(signature, registration.input_example)
                  if v.severity == "error"]
        if errors:  # a signature the model's own example breaks would refuse every request
            raise InvalidArgumentError("input_example", "does not match the signature: "
                                       + "; ".join(errors))
    return signature


def _signature(model: Any, registration: Registration) -> dict[str, Any] | None:
    if registration.signature is not None:
        return _given_signature(registration).to_dict()
    example = registration.input_example
    if example is None:
        return None
    try:
        return infer_signature(example, model=model).to_dict()
    except InvalidArgumentError as exc:
        if exc.field != "y":  # only the output was unknown: learn it from predictions
            raise
    return infer_signature(example, _predictions(model, example), model).to_dict()


def _holdout(model: Any, flavor: Flavor, artifact: bytes, registration: Registration
             ) -> PreparedHoldout | None:
    data = registration.input_example if registration.holdout is None else registration.holdout
    if data is None or data is False:
        if registration.tolerance is not None:
            raise InvalidArgumentError("tolerance", "applies to a holdout sample; pass "
                                                    "input_example= or holdout= as well")
        return None
    tolerance = parse_tolerance(registration.tolerance, flavor.name)
    return prepare_holdout(scorer_for(model, flavor, artifact), data, sha256_hex(artifact),
                           tolerance)


def _reference(model: Any, flavor: Flavor, artifact: bytes, signature: dict[str, Any] | None,
               data: Any) -> PreparedReference | None:
    if data is None:
        return None
    names = None if signature is None else [column["name"] for column in signature["inputs"]]
    return prepare_reference(scorer_for(model, flavor, artifact), data, names)


def _dataset_refs(datasets: Sequence[str | DatasetVersion]) -> tuple[str, ...]:
    if isinstance(datasets, str):
        raise InvalidArgumentError("datasets", "must be a list of snapshot refs, not one text")
    return tuple(d.ref if isinstance(d, DatasetVersion) else d for d in datasets)


def prepare(model: Any, name: str, registration: Registration) -> Prepared:
    """Return the record and bytes of registering ``model`` as the next version of ``name``.

    Raises:
        InvalidArgumentError: naming the field when the name, flavor, signature, metrics,
            a dataset ref, the run id or the reference is invalid, or no flavor stores the
            model.
        UserCodeError: when the model's ``predict`` raises while typing the signature or
            scoring the holdout sample or the reference.
    """
    validate_name(name, "model")
    flavor = _flavor(model, registration.flavor)
    signature = _signature(model, registration)
    artifact = flavor.save(model)
    holdout = _holdout(model, flavor, artifact, registration)
    reference = _reference(model, flavor, artifact, signature, registration.reference)
    captured = capture(environment(), flavor.name)
    extra: dict[str, Any] = {}
    if holdout is not None:
        extra["holdout"] = dict(holdout.record)
    if reference is not None:
        extra["reference_profile"] = dict(reference.record)
    new = NewModelVersion(
        name=name, artifact_digest=sha256_hex(artifact), flavor=flavor.name,
        signature=signature, metrics=normalise_metrics(registration.metrics),
        params=registration.params or {}, tags=registration.tags or {},
        run_id=registration.run, datasets=_dataset_refs(registration.datasets),
        code_version=code_version(registration.code_dir).as_dict(),
        environment=captured.summary, description=registration.description, extra=extra)
    return Prepared(new, artifact, captured, holdout, reference)


def snapshots(store: MetadataStore, refs: Sequence[str]) -> list[dict[str, Any]]:
    """Describe each snapshot ref ``NAME@VERSION``: its id, content hash and rows when found.

    A ref that is not stored is described by ``{"ref": ref}`` alone.
    """
    queries, found = DatasetQueries(store.engine), []
    for ref in refs:
        name, _, number = ref.rpartition("@")
        snapshot = queries.version(name, int(number))
        found.append({"ref": ref} if snapshot is None else {
            "ref": ref, "snapshot_id": snapshot.id, "content_hash": snapshot.content_hash,
            "rows": snapshot.rows})
    return found


def check_references(store: MetadataStore, new: NewModelVersion) -> None:
    """Return when every dataset snapshot and the run ``new`` names exist.

    Raises:
        NotFoundError: naming the first snapshot or run that does not.
    """
    for snapshot in snapshots(store, new.datasets):
        if "snapshot_id" not in snapshot:
            raise NotFoundError("dataset snapshot", snapshot["ref"],
                                "list snapshots with `loopline data list`")
    if new.run_id is not None:
        RunQueries(store.engine).run(new.run_id)
