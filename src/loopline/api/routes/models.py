"""``/models``: the workspace's model registry over HTTP (``ws.models``).

Reading (models, versions, aliases, cards, environment locks and diffs) needs ``read``;
registering, moving aliases, changing statuses and verifying need ``write``; recording a
trust decision needs ``trust``. ``verify`` only reads the registry, but it runs the model
in a fresh server process for up to ``timeout`` seconds (code, for a trusted ``python``
version), which is more than a viewer may spend, so it takes ``write``.

Registering takes two steps, because a client cannot send a Python object: it prepares the
version where the model is (``registry.registration.prepare``), uploads each payload the
record names by digest (``POST /models/{name}/payloads/upload``; the server hashes the bytes
as they arrive and stores them only when they match the digest named), then posts the record
(``POST /models/{name}/versions``), which is refused with 422 naming the field while any
payload it names is not stored. The gate then decides inside ``record_version`` as it does
for a local registration. Unlike one, payloads reach the store before the gate is asked: a
denied registration leaves its uploaded bytes behind, unreferenced (content-addressed, so
harmless; retention sweeps unreferenced objects).
"""

from __future__ import annotations

import math
from pathlib import Path as FilePath
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from loopline.api.auth import Reader, Trusting, Writer
from loopline.api.capacity import Limits, Work
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.routes.model_views import (
    AliasTarget,
    NewVersion,
    StatusChange,
    TrustReason,
    VerifyOptions,
)
from loopline.api.uploads import UPLOAD_BODY, received
from loopline.app import Workspace
from loopline.core.artifacts import ObjectInfo
from loopline.core.canonical import is_digest
from loopline.core.errors import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.governance import Permission
from loopline.core.models import (
    MAX_VERSION,
    ModelAlias,
    ModelURI,
    ModelVersion,
    NewModelVersion,
    RegisteredModel,
    TrustDecision,
)
from loopline.core.names import validate_name
from loopline.registry import environment_check
from loopline.registry.environment_check import EnvironmentDifference
from loopline.registry.flavors import flavor_named
from loopline.registry.holdout import HoldoutRecord
from loopline.registry.metrics import normalise_metrics
from loopline.registry.service import CardFormat, VersionDetails
from loopline.registry.signatures import Signature
from loopline.registry.verify import VerifyReport

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(max_length=128, description="A registered model's name.")]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A version number.")]
AliasName = Annotated[str, Path(max_length=128, description="An alias, or `latest`.")]
Digest = Annotated[str, Query(pattern=r"^(sha256:)?[0-9a-f]{64}$",
                              description="The SHA-256 of the body: sha256:HEX or HEX.")]
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CARD_TYPES = {"json": "application/json"}


def _uri(name: str, version: int) -> ModelURI:
    return ModelURI(name, version)


# -- reading ---------------------------------------------------------------------------------


@router.get("", response_model=Page[RegisteredModel])
def list_models(ws: Reader, paging: Paging) -> Page[RegisteredModel]:
    """List every registered model, by name."""
    return paginate(ws.models.models(), paging)


@router.get("/{name}", response_model=RegisteredModel)
def show_model(name: ModelName, ws: Reader) -> RegisteredModel:
    """Show the registered model ``name``."""
    return ws.models.model(name)


@router.get("/{name}/versions", response_model=Page[ModelVersion])
def list_versions(name: ModelName, ws: Reader, paging: Paging,
                  status: Annotated[str | None, Query(max_length=32)] = None
                  ) -> Page[ModelVersion]:
    """List the versions of ``name``, oldest first (only those in ``status``, if given)."""
    return paginate(ws.models.versions(name, status), paging)


@router.get("/{name}/versions/{version}", response_model=VersionDetails)
def show_version(name: ModelName, version: VersionNumber, ws: Reader) -> VersionDetails:
    """Show a version with its aliases and its trust decision."""
    return ws.models.get(_uri(name, version))


@router.get("/{name}/aliases", response_model=Page[ModelAlias])
def list_aliases(name: ModelName, ws: Reader, paging: Paging) -> Page[ModelAlias]:
    """List the aliases of ``name``, by alias."""
    return paginate(ws.models.aliases(name), paging)


@router.get("/{name}/aliases/{alias}", response_model=VersionDetails)
def resolve_alias(name: ModelName, alias: AliasName, ws: Reader) -> VersionDetails:
    """Show the version ``models:/NAME@ALIAS`` names (``latest``: the highest version)."""
    return ws.models.get(ModelURI(name, alias=alias))


@router.get("/{name}/versions/{version}/card", response_class=PlainTextResponse)
def model_card(name: ModelName, version: VersionNumber, ws: Reader,
               format: Annotated[str, Query(max_length=16, description="markdown or json.")
                                 ] = "markdown") -> PlainTextResponse:
    """Return the version's model card as Markdown or JSON text."""
    # The registry refuses another format itself, naming the field (422).
    text = ws.models.model_card(_uri(name, version), cast(CardFormat, format))
    return PlainTextResponse(text, media_type=_CARD_TYPES.get(format, "text/markdown"))


@router.get("/{name}/versions/{version}/environment", response_class=PlainTextResponse)
def environment_lock(name: ModelName, version: VersionNumber, ws: Reader) -> PlainTextResponse:
    """Return the pip requirements lock of the environment the version was registered in."""
    return PlainTextResponse(ws.models.environment_lock(_uri(name, version)))


@router.get("/{name}/versions/{version}/environment/diff",
            response_model=Page[EnvironmentDifference])
def environment_diff(name: ModelName, version: VersionNumber, ws: Reader,
                     paging: Paging) -> Page[EnvironmentDifference]:
    """List how the server's environment differs from the version's recorded one."""
    return paginate(ws.models.environment_diff(_uri(name, version)), paging)


# -- registering -----------------------------------------------------------------------------


def _store(ws: Workspace, body: FilePath, model: str) -> ObjectInfo:
    with open(body, "rb") as stream:
        return ws.artifacts.put_stream(stream, model=model)


@router.post("/{name}/payloads/upload", status_code=201, response_model=ObjectInfo,
             openapi_extra=UPLOAD_BODY)
async def upload_payload(name: ModelName, digest: Digest, request: Request, response: Response,
                         ws: Writer) -> ObjectInfo:
    """Store the body (``application/octet-stream``) when it hashes to ``digest``.

    Answers 201 when the bytes were new, 200 when the store held them already; 422 naming
    ``digest`` when the body hashes to another digest (nothing is stored), 413 past the
    server's ``max_upload_bytes``. Needs ``write`` on the model ``name`` only.
    """
    validate_name(name, "model")
    # Refuse a caller who may not write to the model before taking gigabytes of body.
    await run_in_threadpool(ws.authorizer.authorize, ws.actor, Permission.WRITE, name)
    expected = digest.removeprefix("sha256:")
    async with received(request, ws) as body:
        if body.sha256 != expected:
            raise InvalidArgumentError("digest", f"the body hashes to sha256:{body.sha256}, "
                                                 f"not to {digest}")
        info = await run_in_threadpool(_store, ws, body.path, name)
    if info.digest != expected:  # the store names bytes by their plaintext's SHA-256 too
        raise IntegrityError(f"the store named the upload {info.digest}, not {expected}")
    response.status_code = 201 if info.created else 200
    return info


def _digest_in(record: Any, key: str, field: str) -> str:
    found = record.get(key) if isinstance(record, dict) else None
    if not isinstance(found, str) or not is_digest(found):
        raise InvalidArgumentError(field, f"must name a SHA-256 digest (64 lowercase hex), "
                                          f"not {found!r}")
    return found


def _holdout(new: NewModelVersion) -> list[tuple[str, str]]:
    found = new.extra.get("holdout")
    if found is None:
        return []
    try:
        record = HoldoutRecord.parse(found, new.flavor)
    except (InvalidArgumentError, KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError("extra.holdout", f"is not a holdout record: {exc}"
                                   ) from exc
    if record.artifact_digest != new.artifact_digest:
        raise InvalidArgumentError("extra.holdout.artifact_digest",
                                   "must be the version's artifact_digest")
    return [("extra.holdout.inputs", record.inputs), ("extra.holdout.outputs", record.outputs)]


def _payload_fields(new: NewModelVersion) -> list[tuple[str, str]]:
    """Return each field of ``new`` that names a payload, with its digest."""
    found = [("artifact_digest", new.artifact_digest)]
    if new.environment is not None:
        found.append(("environment.artifact",
                      _digest_in(new.environment, "artifact", "environment.artifact")))
    found += _holdout(new)
    if new.extra.get("reference_profile") is not None:
        found.append(("extra.reference_profile.digest", _digest_in(
            new.extra["reference_profile"], "digest", "extra.reference_profile.digest")))
    return found


def _numbers(value: Any) -> Any:
    # Metrics are numbers; a non-finite one arrives by name (strict JSON has no other way).
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    return value


def _record(name: str, body: NewVersion) -> NewModelVersion:
    """Return the record ``body`` describes, with the checks ``prepare`` makes locally."""
    new = body.record(name, normalise_metrics(_numbers(body.metrics)))
    try:
        flavor_named(new.flavor)
    except NotFoundError as exc:
        raise InvalidArgumentError("flavor", exc.message) from exc
    if new.signature is not None:
        Signature.from_dict(new.signature)
    return new


def _require_payloads(ws: Workspace, new: NewModelVersion) -> None:
    """Return when every payload ``new`` names is stored and its environment record reads.

    Raises:
        InvalidArgumentError: naming the first field whose payload is missing or malformed.
    """
    for field, digest in _payload_fields(new):
        if not ws.artifacts.exists(digest):
            raise InvalidArgumentError(field, f"names {digest}, which is not stored: upload it "
                                              f"first (POST /models/{new.name}/payloads/upload)")
    if new.environment is not None:
        try:
            environment_check.read_recorded(ws.artifacts.blobs, new.environment,
                                            f"the new version of {new.name}")
        except IntegrityError as exc:
            raise InvalidArgumentError("environment", exc.message) from exc


@router.post("/{name}/versions", status_code=201, response_model=ModelVersion)
def register_version(name: ModelName, body: NewVersion, ws: Writer) -> ModelVersion:
    """Register the next version of ``name`` from its record; its payloads are uploaded."""
    new = _record(name, body)
    _require_payloads(ws, new)
    return ws.models.record_version(new, ())


# -- governed changes ------------------------------------------------------------------------


@router.put("/{name}/aliases/{alias}", response_model=ModelAlias | None)
def set_alias(name: ModelName, alias: AliasName, body: AliasTarget,
              ws: Writer) -> ModelAlias | None:
    """Point ``models:/NAME@ALIAS`` at a version; answer what it pointed at before (or null)."""
    return ws.models.set_alias(name, alias, body.version)


@router.delete("/{name}/aliases/{alias}", response_model=ModelAlias)
def delete_alias(name: ModelName, alias: AliasName, ws: Writer) -> ModelAlias:
    """Remove ``models:/NAME@ALIAS`` and answer what it pointed at."""
    return ws.models.delete_alias(name, alias)


@router.post("/{name}/versions/{version}/status", response_model=ModelVersion)
def set_status(name: ModelName, version: VersionNumber, body: StatusChange,
               ws: Writer) -> ModelVersion:
    """Move the version to a status; answer it as it is now."""
    return ws.models.set_status(_uri(name, version), body.status)


@router.post("/{name}/versions/{version}/trust", response_model=TrustDecision)
def trust(name: ModelName, version: VersionNumber, body: TrustReason,
          ws: Trusting) -> TrustDecision:
    """Record that the version may run code when it loads (a first decision is kept)."""
    return ws.models.trust(_uri(name, version), body.reason)


@router.post("/{name}/versions/{version}/verify", response_model=VerifyReport)
def verify(name: ModelName, version: VersionNumber, ws: Writer, limits: Limits,
           body: VerifyOptions | None = None) -> VerifyReport:
    """Load the artifact in a fresh server process, score its holdout, compare the outputs.

    A fresh process per call: the server runs a bounded number at once (503 ``busy`` past).
    """
    options = body or VerifyOptions()
    with limits.slot(Work.MODEL_VERIFY):
        return ws.models.verify(_uri(name, version), timeout=options.timeout)
