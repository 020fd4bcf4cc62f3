"""The environment a model version was registered in: recorded, turned into a lock, compared.

The full record (interpreter, platform, every installed distribution) is canonical JSON in
the artifact store, stored once per distinct environment as pipeline runs store theirs; the
version keeps a summary with the record's digest (``artifact``) and the versions of the
packages that matter to its flavor. Reading the record back verifies its content hash.

What matters (``KEY_PACKAGES``): the libraries that build the loaded object or run it, where
a version change can change predictions or refuse to load. A difference in one of them, or
in the Python minor version or implementation, is a ``warning``; any other difference is
``info``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loopline.core.canonical import hash_canonical
from loopline.core.errors import IntegrityError, LooplineError
from loopline.core.ports import BlobStore
from loopline.data.provenance import (
    Environment,
    environment_record,
    normalise_name,
    requirements_lock,
)

_COMMON = frozenset({"numpy", "scipy", "pandas"})
KEY_PACKAGES: Mapping[str, frozenset[str]] = {
    "sklearn": _COMMON | {"scikit-learn", "skops", "joblib", "threadpoolctl"},
    "onnx": frozenset({"numpy", "onnx", "onnxruntime", "protobuf"}),
    "python": _COMMON | {"scikit-learn", "cloudpickle", "joblib"},
}
WARNING = "warning"
INFO = "info"


def key_packages(flavor: str) -> frozenset[str]:
    """Return the PEP 503 names of the packages that matter to ``flavor``."""
    return KEY_PACKAGES.get(flavor, _COMMON)


def _pins(packages: tuple[str, ...] | list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pin in packages:
        name, sep, version = pin.partition("==")
        if sep:
            found[normalise_name(name)] = version
    return found


@dataclass(frozen=True, slots=True)
class CapturedEnvironment:
    """An environment ready to record: the record's bytes and the summary a version keeps."""

    record: bytes
    summary: Mapping[str, Any]


def capture(env: Environment, flavor: str) -> CapturedEnvironment:
    """Return the record of ``env`` and its summary; nothing is stored yet."""
    record, summary = environment_record(env)
    pins = _pins(env.packages)
    summary["key_packages"] = {name: pins[name] for name in sorted(key_packages(flavor))
                               if name in pins}
    return CapturedEnvironment(record, summary)


def _parse(data: bytes) -> Environment:
    content = json.loads(data)
    packages = content["packages"]
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise TypeError("packages must be a list of name==version strings")
    fields = ("python_version", "python_implementation", "sys_platform", "platform", "machine")
    if not all(isinstance(content[name], str) for name in fields):
        raise TypeError("the interpreter fields must be text")
    return Environment(
        python_version=content["python_version"],
        python_implementation=content["python_implementation"],
        sys_platform=content["sys_platform"], platform=content["platform"],
        machine=content["machine"], packages=tuple(packages), digest=content["digest"])


def read_recorded(blobs: BlobStore, summary: Mapping[str, Any] | None, uri: str) -> Environment:
    """Return the environment recorded for version ``uri`` (summary as the version keeps it).

    Raises:
        IntegrityError: naming ``uri`` when the version recorded no environment, or the
            record is missing, altered or malformed.
    """
    artifact = summary.get("artifact") if summary is not None else None
    if not isinstance(artifact, str):
        raise IntegrityError(f"{uri} recorded no environment; register it again to record one")
    try:
        env = _parse(blobs.get_bytes(artifact))
    except LooplineError as exc:
        raise IntegrityError(f"the environment record of {uri} (sha256 {artifact}) cannot be "
                             f"read: {exc.message}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"the environment record of {uri} is malformed: {exc}") from exc
    if hash_canonical(env.content()) != env.digest or env.digest != (summary or {}).get("digest"):
        raise IntegrityError(f"the environment record of {uri} does not match its digest")
    return env


def lock(env: Environment) -> str:
    """Return ``env`` as pip requirements text (a header, then one pin per line)."""
    return requirements_lock(env)


@dataclass(frozen=True, slots=True)
class EnvironmentDifference:
    """One way this process's environment differs from a version's recorded one.

    ``package`` is a PEP 503 distribution name, or ``python`` for the interpreter;
    ``recorded`` / ``current`` are None where it is absent.
    """

    package: str
    recorded: str | None
    current: str | None
    severity: str  # warning | info
    note: str


def _python(recorded_env: Environment, current: Environment) -> list[EnvironmentDifference]:
    found = []
    before, after = recorded_env.python_version, current.python_version
    if before != after:
        minor = before.split(".")[:2] != after.split(".")[:2]
        found.append(EnvironmentDifference(
            "python", before, after, WARNING if minor else INFO,
            "another Python minor version" if minor else "another Python patch release"))
    if recorded_env.python_implementation != current.python_implementation:
        found.append(EnvironmentDifference(
            "python-implementation", recorded_env.python_implementation,
            current.python_implementation, WARNING, "another Python implementation"))
    return found


def _note(before: str | None, after: str | None, key: bool) -> str:
    if after is None:
        return "not installed here" + ("; the model needs it" if key else "")
    if before is None:
        return "installed here only"
    return "another version" + ("; it builds or runs the model" if key else "")


def compare(recorded_env: Environment, current: Environment, flavor: str
            ) -> list[EnvironmentDifference]:
    """Return how ``current`` differs from ``recorded_env``: warnings first, then by name."""
    key = key_packages(flavor)
    before, after = _pins(recorded_env.packages), _pins(current.packages)
    found = _python(recorded_env, current)
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        matters = name in key and old is not None
        found.append(EnvironmentDifference(name, old, new, WARNING if matters else INFO,
                                           _note(old, new, matters)))
    return sorted(found, key=lambda d: (d.severity != WARNING, d.package))
