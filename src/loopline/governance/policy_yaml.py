"""Policy YAML: documents read safely, each with the node tree that knows its lines.

Pure: text in, documents out. Documents are composed with ``yaml.SafeLoader`` so each node
keeps its position; ``locate`` maps a location such as ``("rules", 2, "value")`` to the line
of the deepest node that exists. Reading refuses what PyYAML would accept silently or badly:
a file over ``MAX_FILE_BYTES``, a key given twice (PyYAML keeps the last), aliases that expand
past ``MAX_NODES`` values, and scalars that look like a date or number but are not one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from loopline.core.errors import InvalidArgumentError

MAX_FILE_BYTES = 1024 * 1024
# Aliases can make a small file expand into a huge structure ("billion laughs").
MAX_NODES = 100_000


def _child(node: yaml.Node, part: int | str) -> tuple[yaml.Node, int] | None:
    in_range = isinstance(part, int) and 0 <= part < len(node.value)
    if isinstance(node, yaml.SequenceNode) and in_range:
        item: yaml.Node = node.value[part]
        return item, item.start_mark.line + 1
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value, key.start_mark.line + 1
    return None


def locate(node: yaml.Node, loc: tuple[int | str, ...]) -> tuple[int, str]:
    """Return the line of the deepest node of ``loc`` that exists, and ``loc`` as a path.

    The path reads like ``rules[2].value``.
    """
    line = node.start_mark.line + 1
    path = ""
    current: yaml.Node | None = node
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
        found = _child(current, part) if current is not None else None
        current, line = (found[0], found[1]) if found is not None else (None, line)
    return line, path


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One YAML document of a policy file: its data and the node tree that knows the lines."""

    file: str
    node: yaml.Node
    data: Any

    @property
    def line(self) -> int:
        """Return the 1-based line the document starts on."""
        return self.node.start_mark.line + 1

    def where(self, loc: tuple[int | str, ...] = ()) -> str:
        """Return ``<file>:<line>: <path>`` for ``loc`` (``<file>:<line>`` for the root)."""
        line, path = locate(self.node, loc)
        return f"{self.file}:{line}: {path}" if path else f"{self.file}:{line}"


def _check_nodes(file: str, node: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(item: yaml.Node) -> int:
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise InvalidArgumentError(f"{file}:{item.start_mark.line + 1}",
                                       "an alias refers to a node that contains it")
        visiting.add(key)
        total = 1
        if isinstance(item, yaml.MappingNode):
            _check_keys(file, item)
            total += sum(size(k) + size(v) for k, v in item.value)
        elif isinstance(item, yaml.SequenceNode):
            total += sum(size(child) for child in item.value)
        visiting.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise InvalidArgumentError(f"{file}:{item.start_mark.line + 1}",
                                       f"expands to more than {MAX_NODES} values (aliases?)")
        return total

    size(node)


def _check_keys(file: str, node: yaml.MappingNode) -> None:
    # PyYAML keeps the last of two equal keys silently; a second `rules:` would hide the first.
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise InvalidArgumentError(f"{file}:{line}: {key.value}",
                                       f"the key appears twice (also line {seen[key.value]})")
        seen[key.value] = line


def _scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            yield from _scalars(child)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


def _construct(file: str, loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return loader.construct_document(node)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML lets a scalar that looks like a date, number or base64 but is not one
        # (2024-13-45, !!int abc) escape as a plain exception; find it to name its line.
        for scalar in _scalars(node):
            try:
                yaml.SafeLoader("").construct_document(scalar)
            except (ValueError, TypeError, AttributeError, OverflowError):
                raise InvalidArgumentError(f"{file}:{scalar.start_mark.line + 1}",
                                           f"{scalar.value!r} cannot be read as "
                                           f"{scalar.tag.rsplit(':', 1)[-1]}") from exc
        raise InvalidArgumentError(f"{file}:{node.start_mark.line + 1}",
                                   f"cannot be read: {exc}") from exc


def read_documents(file: str, text: str) -> Iterator[SourceDocument]:
    """Yield the non-empty YAML documents of ``text``, read from ``file``.

    Raises:
        InvalidArgumentError: naming ``<file>:<line>`` and the problem when the text is too
            large, not valid YAML, repeats a key, expands too far or holds an unreadable
            scalar.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        raise InvalidArgumentError(file, f"is {size} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        # The reader checks the characters as it is built: a control character refuses here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(file, f"is not valid YAML: {exc}") from exc
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
                continue  # an empty document, e.g. after a trailing `---`
            _check_nodes(file, node)
            yield SourceDocument(file, node, _construct(file, loader, node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        detail = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise InvalidArgumentError(where, f"is not valid YAML: {detail}") from exc
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(file, f"is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise InvalidArgumentError(file, "nests too deeply") from exc
    finally:
        loader.dispose()
