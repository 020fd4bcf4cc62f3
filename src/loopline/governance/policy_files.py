"""Policy files: YAML documents read into a checked ``PolicySet``, with file-and-line errors.

Pure apart from ``read_policy_dir``, which reads the files of one folder. A set is checked
whole before it is used: YAML syntax, each document against its model (``kind:
gate_policy`` or ``kind: retention``), unique policy names and rule ids, at most one
retention document, at most ``MAX_RULES`` rules. Every error names ``<file>:<line>: <path>``
(``prod.yaml:14: rules[2].value``): documents are read by ``governance.policy_yaml`` so each
node keeps its position, and a pydantic error location is mapped to the deepest node that
exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from loopline.core.canonical import hash_canonical
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.governance.policy_model import GatePolicy
from loopline.governance.policy_yaml import MAX_FILE_BYTES, SourceDocument, read_documents

if TYPE_CHECKING:
    from loopline.governance.retention_policy import RetentionPolicy

MAX_RULES = 1000
SUFFIXES = (".yaml", ".yml")
KINDS = ("gate_policy", "retention")

M = TypeVar("M", bound=BaseModel)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _walk(model: type[BaseModel],
          loc: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], list[type[BaseModel]]]:
    """Return ``loc`` without union tags, and the models that may sit at its end.

    pydantic puts a discriminated union's tag into the location (``rules.2.metric.value``);
    the tag is the value of ``kind``, not a key of the file, so it is left out.
    """
    candidates = [model]
    kept: list[int | str] = []
    for part in loc:
        if isinstance(part, int):
            kept.append(part)
            continue
        if len(candidates) > 1:  # a union: the part is the tag naming the member
            candidates = [c for c in candidates if "kind" in c.model_fields
                          and part in get_args(c.model_fields["kind"].annotation)]
            continue
        kept.append(part)
        fields = candidates[0].model_fields if candidates else {}
        candidates = _models_in(fields[part].annotation) if part in fields else []
    return tuple(kept), candidates


def _readable(model: type[BaseModel], error: Any) -> tuple[tuple[int | str, ...], str]:
    loc, _ = _walk(model, tuple(error["loc"]))
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return loc, "is required"
    if kind == "extra_forbidden":
        _, at = _walk(model, tuple(error["loc"])[:-1])
        keys = [name for name in at[0].model_fields if name != "kind"] if len(at) == 1 else []
        return loc, "is not a known key" + (f"; use {', '.join(keys)}" if keys else "")
    if kind in ("too_short", "too_long"):
        bound = "least" if kind == "too_short" else "most"
        count = ctx.get("min_length" if kind == "too_short" else "max_length")
        return loc, f"must have at {bound} {count} item{'s' if count != 1 else ''}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        _, members = _walk(model, tuple(error["loc"]))
        kinds = ", ".join(str(tag) for member in members if "kind" in member.model_fields
                          for tag in get_args(member.model_fields["kind"].annotation))
        if kind == "union_tag_not_found":
            return (*loc, "kind"), f"is required; use one of {kinds}"
        return (*loc, "kind"), f"{ctx.get('tag')!r} is not a rule kind; use one of {kinds}"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool) and value != "":
        message += f", not {value!r}"
    return loc, message


def describe_errors(model: type[BaseModel],
                    exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    """Return each problem pydantic found as (location, readable sentence)."""
    return [_readable(model, error) for error in exc.errors()]


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies in force: the files as written, their digest and what they define."""

    digest: str
    files: Mapping[str, str]
    gate_policies: tuple[GatePolicy, ...] = ()
    retention: RetentionPolicy | None = None

    @property
    def empty(self) -> bool:
        """Tell whether the set defines nothing (no gate policy, no retention): all gates off."""
        return not self.gate_policies and self.retention is None


def validate_document(model: type[M], document: SourceDocument) -> M:
    """Return ``document`` validated as ``model``.

    Raises:
        InvalidArgumentError: whose field is ``<file>:<line>: <path>`` of the first problem
            and whose problem says what is wrong (and how many more problems there are).
    """
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        problems = describe_errors(model, exc)
        loc, first = problems[0]
        rest = [f"{document.where(other_loc)}: {text}" for other_loc, text in problems[1:4]]
        more = f"; also {'; '.join(rest)}" if rest else ""
        if len(problems) > 4:
            more += f" (and {len(problems) - 4} more problems)"
        raise InvalidArgumentError(document.where(loc), first + more) from exc


def _kind(document: SourceDocument) -> str:
    data = document.data
    if not isinstance(data, dict):
        raise InvalidArgumentError(document.where(), "a policy document must be a mapping "
                                   f"with a kind ({' or '.join(KINDS)})")
    kind = data.get("kind")
    if kind is None:
        raise InvalidArgumentError(document.where(("kind",)),
                                   f"is required; use one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise InvalidArgumentError(document.where(("kind",)), f"{kind!r} is not a policy "
                                   f"kind; use one of {', '.join(KINDS)}")
    return str(kind)


def _validate_kind(model: type[M], document: SourceDocument) -> M:
    # The envelope's `kind` was read by the dispatcher; a model that does not declare it
    # must not see it as an unknown key.
    if "kind" not in model.model_fields:
        data = {key: value for key, value in document.data.items() if key != "kind"}
        document = SourceDocument(document.file, document.node, data)
    return validate_document(model, document)


class _Collector:
    """Gathers the documents of a set and refuses what is wrong across documents."""

    def __init__(self) -> None:
        self.policies: list[GatePolicy] = []
        self.names: dict[str, str] = {}
        self.retention: RetentionPolicy | None = None
        self.retention_at = ""
        self.rules = 0

    def add(self, document: SourceDocument) -> None:
        if _kind(document) == "retention":
            self._add_retention(document)
        else:
            self._add_policy(document)

    def _add_retention(self, document: SourceDocument) -> None:
        # Imported here: retention is its own module, needed only when a set has one.
        from loopline.governance.retention_policy import RetentionPolicy

        policy = _validate_kind(RetentionPolicy, document)
        if self.retention is not None:
            raise InvalidArgumentError(document.where(), "a policy set holds at most one "
                                       f"retention document; {self.retention_at} defines one "
                                       f"already ({self.retention.name!r}) and "
                                       f"{document.file} a second ({policy.name!r})")
        self.retention, self.retention_at = policy, document.where()

    def _add_policy(self, document: SourceDocument) -> None:
        policy = _validate_kind(GatePolicy, document)
        if policy.name in self.names:
            raise InvalidArgumentError(document.where(("name",)), f"policy {policy.name!r} "
                                       f"is also defined at {self.names[policy.name]}")
        seen: dict[str, int] = {}
        for index, rule in enumerate(policy.rules):
            if rule.id in seen:
                raise InvalidArgumentError(
                    document.where(("rules", index, "id")),
                    f"rule id {rule.id!r} is used twice in policy {policy.name!r} "
                    f"(also rules[{seen[rule.id]}])")
            seen[rule.id] = index
        self.rules += len(policy.rules)
        if self.rules > MAX_RULES:
            raise InvalidArgumentError(document.where(("rules",)), f"the policy set has more "
                                       f"than {MAX_RULES} rules; split or simplify policies")
        self.names[policy.name] = document.where(("name",))
        self.policies.append(policy)


def load_policy_set(files: Mapping[str, str]) -> PolicySet:
    """Return the checked policy set of ``files`` (file name -> YAML text).

    Raises:
        InvalidArgumentError: naming ``<file>:<line>: <path>`` and the problem when a file
            is not valid YAML, a document does not match its kind, or the documents
            disagree (duplicate policy names, two retention documents, too many rules).
    """
    # A plain dict (not a read-only view) so callers can store it as JSON as it is.
    ordered = dict(sorted(files.items()))
    collector = _Collector()
    for name, text in ordered.items():
        for document in read_documents(name, text):
            collector.add(document)
    return PolicySet(digest=hash_canonical(ordered), files=ordered,
                     gate_policies=tuple(collector.policies), retention=collector.retention)


EMPTY_POLICY_SET = load_policy_set({})


def _read_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InvalidArgumentError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidArgumentError(str(path), f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(str(path), f"is not UTF-8 text: {exc}") from exc


def read_policy_dir(path: str | Path) -> dict[str, str]:
    """Return ``{file name: text}`` of the ``*.yaml`` and ``*.yml`` files directly in ``path``.

    Sorted by name; the suffix is matched in any case (``prod.YAML`` is read); subfolders
    are not read.

    Raises:
        NotFoundError: when the folder does not exist.
        InvalidArgumentError: when ``path`` is not a folder, or a policy file is a symbolic
            link, larger than 1 MiB, not UTF-8 or unreadable.
    """
    folder = Path(path)
    if not folder.exists():
        raise NotFoundError("policy folder", str(folder),
                            "create it and put policy files (*.yaml) in it")
    if not folder.is_dir():
        raise InvalidArgumentError(str(folder), "is not a folder of policy files")
    files: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.suffix.lower() not in SUFFIXES:
            continue
        if entry.is_symlink():
            raise InvalidArgumentError(str(entry), "is a symbolic link; policy files must be "
                                                   "regular files in the folder")
        if entry.is_file():
            files[entry.name] = _read_file(entry)
    return files
