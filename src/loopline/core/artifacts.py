"""Records describing content-addressed artifacts (objects named by the SHA-256 of their bytes).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its digest (SHA-256 of the plaintext), size and encryption key id.

    ``created`` is True when a ``put`` wrote the object, False when it already existed.
    """

    digest: str
    size: int
    key_id: str | None = None
    created: bool = False


@dataclass(frozen=True, slots=True)
class ObjectProblem:
    """An object that failed verification, and why."""

    digest: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of rechecking stored objects."""

    checked: int
    bytes_checked: int
    problems: tuple[ObjectProblem, ...]

    @property
    def ok(self) -> bool:
        """True when every object matched its digest."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class RotationReport:
    """The outcome of re-encrypting objects under the active key."""

    rewritten: int
    already_current: int
    active_key_id: str | None
    failed: tuple[ObjectProblem, ...] = ()
