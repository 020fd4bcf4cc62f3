"""Model cards: what a version is for, what it was trained on, how well it does, what it takes.

Pure: no I/O. ``build_card`` gathers a version's record into one JSON-ready mapping;
``render_markdown`` prints that mapping as a Markdown document. Purpose, owner, intended use
and limitations come from the version's tags of those names (``CARD_TAGS``), so a team writes
them once at registration. Every value from users is escaped before it reaches Markdown, so a
``|`` or a newline in a tag cannot break a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loopline.core.canonical import json_safe
from loopline.core.errors import InvalidArgumentError
from loopline.core.models import ModelAlias, ModelVersion, TrustDecision
from loopline.registry.metrics import overall_metrics, slice_metrics

CARD_TAGS = ("purpose", "owner", "intended_use", "limitations")
NOT_STATED = "not stated"
MAX_CATEGORIES_SHOWN = 12


def build_card(version: ModelVersion, aliases: Sequence[ModelAlias],
               trust: TrustDecision | None, training_data: Sequence[Mapping[str, Any]],
               ) -> dict[str, Any]:
    """Return the card of ``version`` as JSON-ready data.

    ``training_data`` describes each dataset snapshot (``ref``, and ``snapshot_id``,
    ``content_hash``, ``rows`` when the snapshot was found).
    """
    tags = dict(version.tags)
    code = dict(version.code_version or {})
    card: dict[str, Any] = {
        "model": version.name, "version": version.version, "uri": version.uri,
        "status": str(version.status), "flavor": version.flavor,
        "artifact_digest": version.artifact_digest, "description": version.description,
        "registered_at": version.created_at.isoformat(), "registered_by": version.created_by,
        "aliases": sorted(a.alias for a in aliases),
        **{name: tags.pop(name, None) for name in CARD_TAGS},
        "tags": tags,
        "training_data": [dict(item) for item in training_data],
        "metrics": {"overall": overall_metrics(version.metrics),
                    "slices": slice_metrics(version.metrics)},
        "parameters": dict(version.params),
        "signature": dict(version.signature) if version.signature is not None else None,
        "lineage": {"run_id": version.run_id, "datasets": list(version.datasets),
                    "code": {key: code.get(key) for key in ("commit", "branch", "dirty",
                                                             "reason")}},
        "environment": dict(version.environment or {}),
        "trust": None if trust is None else {
            "decided_by": trust.decided_by, "decided_at": trust.decided_at.isoformat(),
            "reason": trust.reason},
    }
    return dict(json_safe(card))


def _text(value: Any) -> str:
    """Return ``value`` as one line of Markdown-safe text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = " ".join(str(value).split())
    for special in ("\\", "|", "*", "_", "`", "<", ">", "[", "]", "#"):
        text = text.replace(special, f"\\{special}")
    return text


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_text(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_text(cell) for cell in row) + " |" for row in rows]
    return lines


def _overview(card: Mapping[str, Any]) -> list[str]:
    lines = [f"# Model card: {_text(card['model'])} version {card['version']}", ""]
    if card.get("description"):
        lines += [_text(card["description"]), ""]
    aliases = ", ".join(card["aliases"]) or "none"
    lines += [f"- **URI:** `{card['uri']}`", f"- **Status:** {_text(card['status'])}",
              f"- **Aliases:** {_text(aliases)}", f"- **Flavor:** {_text(card['flavor'])}",
              f"- **Artifact:** sha256 `{card['artifact_digest']}`",
              f"- **Registered:** {_text(card['registered_at'])} by "
              f"{_text(card['registered_by'])}", ""]
    lines += ["## Purpose and owner", ""]
    lines += [f"- **{name.replace('_', ' ').capitalize()}:** "
              f"{_text(card[name]) if card.get(name) is not None else NOT_STATED}"
              for name in CARD_TAGS]
    if card["tags"]:
        lines += ["", "Other tags:", "", *_table(["tag", "value"], sorted(card["tags"].items()))]
    return [*lines, ""]


def _training_data(card: Mapping[str, Any]) -> list[str]:
    lines = ["## Training data", ""]
    if not card["training_data"]:
        return [*lines, "No dataset snapshots were recorded.", ""]
    rows = [(d["ref"], d.get("snapshot_id") or "not found", d.get("content_hash"),
             d.get("rows")) for d in card["training_data"]]
    return [*lines, *_table(["snapshot", "snapshot id", "content hash", "rows"], rows), ""]


def _metrics(card: Mapping[str, Any]) -> list[str]:
    lines = ["## Metrics", ""]
    overall, slices = card["metrics"]["overall"], card["metrics"]["slices"]
    if not overall and not slices:
        return [*lines, "No metrics were recorded.", ""]
    if overall:
        lines += ["Overall:", "", *_table(["metric", "value"], sorted(overall.items())), ""]
    if slices:
        names = sorted({metric for values in slices.values() for metric in values})
        rows = [(key, *(values.get(name) for name in names))
                for key, values in sorted(slices.items())]
        lines += ["Per slice:", "", *_table(["slice", *names], rows), ""]
    return lines


def _observed(column: Mapping[str, Any]) -> str:
    categories = column.get("categories")
    if categories is not None:
        shown = ", ".join(str(c) for c in categories[:MAX_CATEGORIES_SHOWN])
        more = len(categories) - MAX_CATEGORIES_SHOWN
        return f"{{{shown}{f', … ({len(categories)} in all)' if more > 0 else ''}}}"
    low, high = column.get("minimum"), column.get("maximum")
    if low is None and high is None:
        return ""
    return f"{_text(low)} .. {_text(high)}"


def _signature(card: Mapping[str, Any]) -> list[str]:
    lines = ["## Signature", ""]
    signature = card["signature"]
    if signature is None:
        return [*lines, "No signature was recorded.", ""]
    rows = [(c["name"], c["dtype"], "yes" if c.get("nullable") else "no", _observed(c))
            for c in signature["inputs"]]
    output = signature["output"]
    classes = output.get("classes")
    described = _text(output["type"]) + (
        f" (classes {', '.join(_text(c) for c in classes)})" if classes else "")
    return [*lines, "Inputs:", "",
            *_table(["column", "type", "nullable", "observed range or categories"], rows),
            "", f"Output: {described}", ""]


def _lineage(card: Mapping[str, Any]) -> list[str]:
    lineage, env = card["lineage"], card["environment"]
    code = lineage["code"]
    if code.get("commit"):
        state = ", with uncommitted changes" if code.get("dirty") else ""
        where = (f"commit {_text(code['commit'])} on "
                 f"{_text(code.get('branch') or 'a detached HEAD')}{state}")
    else:
        where = f"not recorded ({_text(code.get('reason') or 'no git commit')})"
    lines = ["## Lineage", "",
             f"- **Training run:** {_text(lineage['run_id'] or 'not recorded')}",
             f"- **Datasets:** {_text(', '.join(lineage['datasets']) or 'none')}",
             f"- **Code:** {where}", "", "## Environment", ""]
    if not env:
        return [*lines, "No environment was recorded.", ""]
    lines += [f"- **Python:** {_text(env.get('implementation'))} {_text(env.get('python'))} "
              f"on {_text(env.get('platform'))}",
              f"- **Packages:** {_text(env.get('packages'))} installed; lock sha256 "
              f"`{env.get('digest')}`"]
    key = env.get("key_packages") or {}
    if key:
        lines += ["", *_table(["package", "version"], sorted(key.items()))]
    return [*lines, ""]


def _trust(card: Mapping[str, Any]) -> list[str]:
    lines = ["## Parameters", ""]
    params = card["parameters"]
    lines += (_table(["parameter", "value"], sorted(params.items())) if params
              else ["No parameters were recorded."])
    trust = card["trust"]
    if trust is not None:
        lines += ["", "## Trust decision", "",
                  f"Trusted to run code on load by {_text(trust['decided_by'])} at "
                  f"{_text(trust['decided_at'])}: {_text(trust['reason'])}"]
    return [*lines, ""]


def render(card: Mapping[str, Any], format: str) -> str:
    """Return ``card`` as ``markdown`` or as indented ``json`` text.

    Raises:
        InvalidArgumentError: when ``format`` is neither.
    """
    if format == "json":
        return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if format == "markdown":
        return render_markdown(card)
    raise InvalidArgumentError("format", f"{format!r} is neither 'markdown' nor 'json'")


def render_markdown(card: Mapping[str, Any]) -> str:
    """Return ``card`` (from ``build_card``) as a Markdown document."""
    sections = (_overview, _training_data, _metrics, _signature, _lineage, _trust)
    lines = [line for section in sections for line in section(card)]
    return "\n".join(lines).rstrip("\n") + "\n"
