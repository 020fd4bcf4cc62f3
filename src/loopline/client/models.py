"""``client.models``: the workspace's ``ModelRegistry`` over HTTP (``/models``).

The same methods, arguments and records as ``Workspace.models``. Registering prepares the
version here, where the model object is (``registry.registration.prepare``: flavor,
signature, holdout, reference profile, code version and this environment), uploads each
payload its record names by digest, then posts the record; the server's gate decides as it
does for a local registration (unlike a local one, bytes are uploaded before it decides).
``import_bundle`` opens and checks the bundle here and registers it the same way.

Left out, because they load a model into this process or write a file on the server:
``load``, ``servable``, ``score``, ``export``, ``trust_source`` and ``queries``;
``set_status`` takes no ``within`` (a function to run inside the server's transaction).
``environment_diff`` compares with the *server's* environment, the one that would load it.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loopline.client.transport import Transport, decode, segment
from loopline.core.canonical import json_safe
from loopline.core.datasets import DatasetVersion
from loopline.core.errors import IntegrityError
from loopline.core.models import (
    ModelAlias,
    ModelStatus,
    ModelURI,
    ModelVersion,
    NewModelVersion,
    RegisteredModel,
    TrustDecision,
)
from loopline.registry.bundle_import import ImportedVersion, open_bundle
from loopline.registry.environment_check import EnvironmentDifference
from loopline.registry.holdout import Tolerance
from loopline.registry.registration import Payload, Registration, prepare
from loopline.registry.service import CardFormat, VersionDetails
from loopline.registry.signatures import Signature
from loopline.registry.verify import DEFAULT_TIMEOUT, VerifyReport

__all__ = ["RemoteModels"]

UPLOAD_HEADERS = {"Content-Type": "application/octet-stream"}
VERIFY_MARGIN = 60.0
"""Seconds the answer to ``verify`` may take beyond the check's own ``timeout``: fetching
the version, starting the process and writing the report."""


def _plain(value: Any) -> Any:
    """Return ``value`` as JSON values: mappings as dicts, tuples as lists, inf by name."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return json_safe(value)


def _record_body(new: NewModelVersion) -> dict[str, Any]:
    """Return the body of ``POST /models/{name}/versions`` for ``new``."""
    return {"artifact_digest": new.artifact_digest, "flavor": new.flavor,
            "signature": _plain(new.signature), "metrics": _plain(new.metrics),
            "params": _plain(new.params), "tags": _plain(new.tags), "run_id": new.run_id,
            "datasets": list(new.datasets), "code_version": _plain(new.code_version),
            "environment": _plain(new.environment), "description": new.description,
            "extra": _plain(new.extra)}


class RemoteModels:
    """Model versions, aliases, statuses and trust of the server's workspace."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    # -- registering -------------------------------------------------------------------------

    def register(  # noqa: PLR0913 - the options a user names at registration, as locally
            self, model: Any, name: str, *, signature: Signature | Mapping[str, Any] | None = None,
            metrics: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None,
            datasets: Sequence[str | DatasetVersion] = (), run: str | None = None,
            description: str | None = None, flavor: str | None = None,
            input_example: Any = None, holdout: Any = None,
            tolerance: Tolerance | None = None, reference: Any = None) -> ModelVersion:
        """Register ``model`` as the next version of ``name``. See ``ModelRegistry.register``.

        Raises:
            As ``ModelRegistry.register`` (those of preparing the version raise here, before
            anything is sent).
        """
        return self.register_with(model, name, Registration(
            signature=signature, metrics=metrics, params=params, tags=tags, datasets=datasets,
            run=run, description=description, flavor=flavor, input_example=input_example,
            holdout=holdout, tolerance=tolerance, reference=reference))

    def register_with(self, model: Any, name: str, registration: Registration) -> ModelVersion:
        """Register ``model`` with ``registration``'s options. See ``register``."""
        prepared = prepare(model, name, registration)
        return self.record_version(prepared.new, prepared.payloads())

    def record_version(self, new: NewModelVersion, payloads: Sequence[Payload]) -> ModelVersion:
        """Upload ``payloads``, then register ``new``. See ``ModelRegistry.record_version``.

        Raises:
            InvalidArgumentError: naming ``digest`` when a payload's bytes hash to another
                digest, or the field of ``new`` whose payload was not uploaded.
            NotFoundError, PolicyDeniedError: as ``ModelRegistry.record_version``.
        """
        for payload in payloads:
            self._upload(new.name, payload)
        return decode(ModelVersion, self._http.post(
            f"/models/{segment(new.name)}/versions", _record_body(new)))

    def _upload(self, name: str, payload: Payload) -> None:
        path, params = f"/models/{segment(name)}/payloads/upload", {
            "digest": f"sha256:{payload.digest}"}
        if payload.path is not None:  # a file (a bundle member): streamed, never read whole
            self._http.upload(path, payload.path, params)
            return
        if payload.data is None:  # pragma: no cover - every payload has data or a path
            raise IntegrityError(f"the {payload.what} has no bytes to upload")
        self._http.request("POST", path, content=payload.data, params=params,
                           headers=UPLOAD_HEADERS)

    def import_bundle(self, path: str | Path, name: str | None = None) -> ImportedVersion:
        """Register the version in the bundle file at ``path`` (a local file) on the server.

        See ``ModelRegistry.import_bundle``; the bundle is opened and checked here.
        """
        with open_bundle(Path(path)) as bundle:
            version = self.record_version(bundle.new_version(name), bundle.payloads())
            return bundle.imported(version)

    # -- reading -----------------------------------------------------------------------------

    def _version_path(self, uri: str | ModelURI) -> str:
        """Return the path of the version ``uri`` names (asking the server for an alias's)."""
        parsed = ModelURI.coerce(uri)
        number = parsed.version if parsed.version is not None else self.resolve(parsed).version
        return f"/models/{segment(parsed.name)}/versions/{number}"

    def get(self, uri: str | ModelURI) -> VersionDetails:
        """Return the version ``uri`` names with its aliases and trust decision.

        See ``ModelRegistry.get``.
        """
        parsed = ModelURI.coerce(uri)
        name = segment(parsed.name)
        path = f"/models/{name}/versions/{parsed.version}" if parsed.version is not None \
            else f"/models/{name}/aliases/{segment(parsed.alias)}"
        return decode(VersionDetails, self._http.get(path))

    def resolve(self, uri: str | ModelURI) -> ModelVersion:
        """Return the version ``uri`` names. See ``ModelRegistry.resolve``."""
        return self.get(uri).version

    def versions(self, name: str, status: ModelStatus | str | None = None
                 ) -> builtins.list[ModelVersion]:
        """List the versions of ``name``, oldest first. See ``ModelRegistry.versions``."""
        return [decode(ModelVersion, item) for item in self._http.items(
            f"/models/{segment(name)}/versions",
            {"status": None if status is None else str(status)})]

    def models(self) -> builtins.list[RegisteredModel]:
        """List every registered model, by name."""
        return [decode(RegisteredModel, item) for item in self._http.items("/models")]

    def model(self, name: str) -> RegisteredModel:
        """Return the registered model ``name``. See ``ModelRegistry.model``."""
        return decode(RegisteredModel, self._http.get(f"/models/{segment(name)}"))

    def aliases(self, name: str) -> builtins.list[ModelAlias]:
        """List the aliases of model ``name``, by alias. See ``ModelRegistry.aliases``."""
        return [decode(ModelAlias, item)
                for item in self._http.items(f"/models/{segment(name)}/aliases")]

    # -- governed changes --------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> ModelAlias | None:
        """Point ``models:/NAME@ALIAS`` at ``version``; return what it pointed at before.

        See ``ModelRegistry.set_alias``.
        """
        found = self._http.request("PUT", f"/models/{segment(name)}/aliases/{segment(alias)}",
                                   json={"version": version})
        return None if found is None else decode(ModelAlias, found)

    def delete_alias(self, name: str, alias: str) -> ModelAlias:
        """Remove ``models:/NAME@ALIAS``; return what it pointed at.

        See ``ModelRegistry.delete_alias``.
        """
        return decode(ModelAlias, self._http.request(
            "DELETE", f"/models/{segment(name)}/aliases/{segment(alias)}"))

    def set_status(self, uri: str | ModelURI, status: ModelStatus | str) -> ModelVersion:
        """Move the version ``uri`` names to ``status``. See ``ModelRegistry.set_status``."""
        return decode(ModelVersion, self._http.post(f"{self._version_path(uri)}/status",
                                                    {"status": str(status)}))

    def trust(self, uri: str | ModelURI, reason: str) -> TrustDecision:
        """Record that the version may run code when it loads. See ``ModelRegistry.trust``."""
        return decode(TrustDecision, self._http.post(f"{self._version_path(uri)}/trust",
                                                     {"reason": reason}))

    # -- reproducibility, environment and card -----------------------------------------------

    def verify(self, uri: str | ModelURI, *, timeout: float = DEFAULT_TIMEOUT) -> VerifyReport:
        """Have the server load the version in a fresh process and check its holdout.

        See ``ModelRegistry.verify``. The answer waits for the check: this call waits
        ``timeout`` plus ``VERIFY_MARGIN`` seconds, whatever the client's own timeout.
        """
        return decode(VerifyReport, self._http.request(
            "POST", f"{self._version_path(uri)}/verify", json={"timeout": timeout},
            timeout=timeout + VERIFY_MARGIN))

    def environment_lock(self, uri: str | ModelURI) -> str:
        """Return the pip requirements lock the version was registered with."""
        return self._http.text(f"{self._version_path(uri)}/environment")

    def environment_diff(self, uri: str | ModelURI) -> builtins.list[EnvironmentDifference]:
        """Return how the server's environment differs from the version's recorded one."""
        return [decode(EnvironmentDifference, item) for item in self._http.items(
            f"{self._version_path(uri)}/environment/diff")]

    def model_card(self, uri: str | ModelURI, format: CardFormat = "markdown") -> str:
        """Return the version's model card as Markdown or JSON text.

        See ``ModelRegistry.model_card``.
        """
        return self._http.text(f"{self._version_path(uri)}/card", {"format": format})
