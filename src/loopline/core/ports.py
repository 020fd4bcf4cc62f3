"""Ports: the protocols that let peer packages meet without importing each other.

Pure: no I/O. The composition root (``loopline.app``) wires concrete classes to these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from loopline.core.artifacts import ObjectInfo, RotationReport, VerifyReport
from loopline.core.events import Event
from loopline.core.gates import GateDecision, GateRequest
from loopline.core.governance import Permission, Role


class BlobStore(Protocol):
    """Content-addressed bytes: put returns the digest, every read verifies it."""

    def put_bytes(self, data: bytes) -> ObjectInfo:
        """Store ``data``; idempotent."""
        ...

    def put_stream(self, chunks: BinaryIO | Iterable[bytes]) -> ObjectInfo:
        """Store a stream in bounded memory; idempotent."""
        ...

    def put_file(self, path: str | Path) -> ObjectInfo:
        """Store the file at ``path``; idempotent."""
        ...

    def open(self, digest: str) -> AbstractContextManager[BinaryIO]:
        """Open a verifying reader; it raises ``IntegrityError`` at the end on a mismatch."""
        ...

    def get_bytes(self, digest: str) -> bytes:
        """Return the verified bytes of ``digest``."""
        ...

    def get_to_file(self, digest: str, dest: str | Path) -> ObjectInfo:
        """Write the verified bytes to ``dest`` atomically."""
        ...

    def exists(self, digest: str) -> bool:
        """Tell whether ``digest`` is stored."""
        ...

    def info(self, digest: str) -> ObjectInfo:
        """Describe a stored object without reading it whole."""
        ...

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """List every stored object."""
        ...

    def verify(self, digests: Iterable[str] | None = None) -> VerifyReport:
        """Recheck the named objects (all when None) against their digests."""
        ...

    def delete(self, digest: str) -> None:
        """Remove every stored form of ``digest`` (raises ``NotFoundError`` when absent)."""
        ...

    def rotate_key(self) -> RotationReport:
        """Re-encrypt every object not under the active key."""
        ...


class EventSource(Protocol):
    """A durable event log that subscribers read with cursors."""

    def read_after(self, position: int, limit: int, types: Iterable[str] | None = None,
                   ) -> list[Event]:
        """Return up to ``limit`` events with ``seq > position`` in seq order."""
        ...

    def cursor(self, subscriber: str) -> int:
        """Return a subscriber's position (0 when it has never consumed)."""
        ...

    def advance(self, subscriber: str, expected: int, new: int) -> bool:
        """Move a cursor from ``expected`` to ``new``; False when another consumer moved it."""
        ...

    def wait_for_events(self, timeout: float) -> bool:
        """Block until new events may exist or ``timeout`` seconds pass."""
        ...

    def close(self) -> None:
        """Release what waiting holds (a LISTEN connection, say)."""
        ...


class Gate(Protocol):
    """Decides whether a governed action may happen; governance implements it.

    ``AllowAll`` in ``core.gates`` allows everything until policies are installed. Every
    alias move and status change of a model version asks the gate first; the store refuses
    with ``PolicyDeniedError`` when the decision does not allow it, and otherwise records the
    decision in the change's audit entry.
    """

    def check(self, request: GateRequest) -> GateDecision:
        """Decide ``request``; the decision names the rules it evaluated and what they saw."""
        ...


class Authorizer(Protocol):
    """The one authorisation function: whether ``actor`` may do what ``permission`` covers.

    ``governance.access.AccessControl`` implements it. A workspace with no role binding at
    all is open (everyone acts as admin); granting the first role turns enforcement on.
    """

    def authorize(self, actor: str, permission: Permission, model: str | None = None) -> Role:
        """Return the role that permits it (``admin`` in an open workspace).

        Raises:
            AccessDeniedError: naming the actor, the permission, the model and the roles held.
        """
        ...


def authorize_if_wired(authorizer: Authorizer | None, actor: str, permission: Permission,
                       model: str | None = None) -> None:
    """Ask ``authorizer`` when a service was given one (a bare service checks no roles).

    Raises:
        AccessDeniedError: when the authorizer refuses.
    """
    if authorizer is not None:
        authorizer.authorize(actor, permission, model)


class ServableModel(Protocol):
    """A loaded model version as the server uses it; ``registry`` provides it.

    ``check`` returns every way a batch departs from the version's signature as mappings
    ``{"column", "kind", "severity" ("error"|"warning"), "rows", "message"}``; a server
    refuses a batch with any error or an unseen category and counts the other warnings.
    ``batchable`` says whether rows of several requests may be scored in one ``predict``
    call.
    """

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``."""
        ...

    @property
    def input_names(self) -> tuple[str, ...]:
        """The signature's input columns, in order (empty when there is no signature)."""
        ...

    @property
    def input_types(self) -> tuple[str, ...]:
        """The input columns' Open Inference Protocol datatypes (``FP64``, ``BYTES`` ...)."""
        ...

    @property
    def output_type(self) -> str:
        """The predictions' Open Inference Protocol datatype (``BYTES`` when unknown)."""
        ...

    @property
    def batchable(self) -> bool:
        """Whether several requests' rows may be scored in one call."""
        ...

    def check(self, batch: Any) -> list[Mapping[str, Any]]:
        """Return the signature violations of ``batch`` (a DataFrame)."""
        ...

    def predict(self, batch: Any) -> Any:
        """Return one prediction per row of ``batch`` (a DataFrame)."""
        ...


class ModelLoader(Protocol):
    """Loads model versions for serving, verifying their bytes; ``registry`` implements it."""

    def servable(self, name: str, version: int) -> ServableModel:
        """Load version ``version`` of model ``name``.

        Raises:
            NotFoundError: when there is no such version.
            IntegrityError: when its stored bytes do not match their digest.
            PolicyDeniedError: when it may not be loaded (untrusted, quarantined).
        """
        ...
