"""The Finding type every provider returns, the JSON schema Claude answers with, and validation.

Pure: no Django, no network. A provider's reply is checked here before anything is stored, so a
malformed answer becomes an ``InvalidReply`` with a reason code the orchestrator can record.

Decisions:

* Line ranges are absolute file lines. A range that overlaps the unit, or misses it by at most
  ``LINE_TOLERANCE`` lines (models often count the line after the last one), is clamped into
  the unit; anything else (reversed, non-positive, or far outside) is rejected.
* A title longer than ``MAX_TITLE_CHARS`` is shortened with an ellipsis rather than rejected:
  the schema subset Claude's structured outputs accept cannot express ``maxLength``.
* An empty ``fix`` becomes ``None``. One bad finding rejects the whole reply: a reply that is
  wrong in part is not trusted in whole, and the orchestrator's retry policy decides what next.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

FindingKind = Literal["bug", "risk", "security", "performance", "smell", "docs", "test"]
Severity = Literal["high", "medium", "low"]
FindingSource = Literal["anthropic", "static"]
InvalidReplyReason = Literal[
    "not_json",
    "schema_mismatch",
    "unknown_kind",
    "unknown_severity",
    "bad_line_range",
    "bad_confidence",
    "empty_text",
]

FINDING_KINDS: tuple[FindingKind, ...] = get_args(FindingKind)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)  # most severe first
FINDING_SOURCES: tuple[FindingSource, ...] = get_args(FindingSource)
MAX_TITLE_CHARS = 120
LINE_TOLERANCE = 3

_REPLY_FIELDS = (
    "kind",
    "severity",
    "title",
    "explanation",
    "line_start",
    "line_end",
    "fix",
    "confidence",
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    severity: Severity
    title: str
    explanation: str
    line_start: int
    line_end: int
    confidence: float
    source: FindingSource
    fix: str | None = None
    rule: str | None = None  # static rule id, e.g. "bare-except"

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.source not in FINDING_SOURCES:
            raise ValueError(f"unknown finding source {self.source!r}")
        if not self.title.strip() or len(self.title) > MAX_TITLE_CHARS:
            raise ValueError(f"title must be 1-{MAX_TITLE_CHARS} characters")
        if not 1 <= self.line_start <= self.line_end:
            raise ValueError(f"bad line range {self.line_start}-{self.line_end}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside 0.0-1.0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidReply(ValueError):
    """A provider's reply that cannot be turned into findings."""

    def __init__(self, reason: InvalidReplyReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Written in the subset Anthropic's structured outputs accept, exactly as the SDK's
# ``transform_schema`` would emit it (enums without "type", nullable as anyOf, no numeric bounds).
_FINDING_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"enum": list(FINDING_KINDS)},
        "severity": {"enum": list(SEVERITIES)},
        "title": {
            "type": "string",
            "description": f"One line, at most {MAX_TITLE_CHARS} characters.",
        },
        "explanation": {
            "type": "string",
            "description": "What is wrong, why it matters, and when it bites.",
        },
        "line_start": {
            "type": "integer",
            "description": "First affected line, as numbered in the file.",
        },
        "line_end": {
            "type": "integer",
            "description": "Last affected line, as numbered in the file.",
        },
        "fix": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "Replacement code for the affected lines, or null.",
        },
        "confidence": {"type": "number", "description": "From 0.0 to 1.0."},
    },
    "required": list(_REPLY_FIELDS),
    "additionalProperties": False,
}

FINDINGS_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"findings": {"type": "array", "items": _FINDING_ITEM_SCHEMA}},
    "required": ["findings"],
    "additionalProperties": False,
}


def parse_findings_reply(
    payload: str | bytes | Mapping[str, Any], *, unit_start: int, unit_end: int
) -> list[Finding]:
    """Findings from Claude's reply for a unit spanning ``unit_start``-``unit_end``.

    Raises ``InvalidReply`` with a reason code when the reply cannot be trusted.
    """
    if not 1 <= unit_start <= unit_end:
        raise ValueError(f"bad unit range {unit_start}-{unit_end}")
    document = _load(payload)
    if not isinstance(document, Mapping):
        raise InvalidReply("schema_mismatch", f"expected an object, got {_json_type(document)}")
    if set(document) != {"findings"}:
        raise InvalidReply("schema_mismatch", f"expected only 'findings', got {sorted(document)}")
    items = document["findings"]
    if not isinstance(items, list):
        raise InvalidReply("schema_mismatch", f"'findings' is {_json_type(items)}, not an array")
    return [
        _finding(item, index=index, unit_start=unit_start, unit_end=unit_end)
        for index, item in enumerate(items)
    ]


def _load(payload: str | bytes | Mapping[str, Any]) -> object:
    if isinstance(payload, Mapping):
        return payload
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    try:
        return json.loads(_strip_code_fence(text))
    except json.JSONDecodeError as exc:
        raise InvalidReply(
            "not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _strip_code_fence(text: str) -> str:
    """Accept a reply wrapped in one Markdown code fence (a habit of free-text answers)."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        body = stripped[3:-3]
        return body.split("\n", 1)[1] if "\n" in body else body
    return stripped


def _finding(item: object, *, index: int, unit_start: int, unit_end: int) -> Finding:
    where = f"findings[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidReply("schema_mismatch", f"{where} is {_json_type(item)}, not an object")
    missing = [name for name in _REPLY_FIELDS if name not in item]
    extra = sorted(set(item) - set(_REPLY_FIELDS))
    if missing or extra:
        raise InvalidReply("schema_mismatch", f"{where}: missing {missing}, unexpected {extra}")
    kind = _text(item, "kind", where=where)
    if kind not in FINDING_KINDS:
        raise InvalidReply("unknown_kind", f"{where}.kind {kind!r} not in {list(FINDING_KINDS)}")
    severity = _text(item, "severity", where=where)
    if severity not in SEVERITIES:
        raise InvalidReply(
            "unknown_severity", f"{where}.severity {severity!r} not in {list(SEVERITIES)}"
        )
    line_start, line_end = _line_range(item, where=where, unit_start=unit_start, unit_end=unit_end)
    fix = item["fix"]
    if fix is not None and not isinstance(fix, str):
        raise InvalidReply("schema_mismatch", f"{where}.fix is {_json_type(fix)}, not a string")
    return Finding(
        kind=kind,
        severity=severity,
        title=shorten_title(_text(item, "title", where=where)),
        explanation=_text(item, "explanation", where=where),
        line_start=line_start,
        line_end=line_end,
        confidence=_confidence(item["confidence"], where=where),
        source="anthropic",
        fix=fix if fix and fix.strip() else None,
    )


def _text(item: Mapping[str, Any], name: str, *, where: str) -> str:
    value = item[name]
    if not isinstance(value, str):
        raise InvalidReply(
            "schema_mismatch", f"{where}.{name} is {_json_type(value)}, not a string"
        )
    value = value.strip()
    if not value:
        raise InvalidReply("empty_text", f"{where}.{name} is empty")
    return value


def _line_range(
    item: Mapping[str, Any], *, where: str, unit_start: int, unit_end: int
) -> tuple[int, int]:
    start, end = item["line_start"], item["line_end"]
    for name, value in (("line_start", start), ("line_end", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidReply(
                "schema_mismatch", f"{where}.{name} is {_json_type(value)}, not an integer"
            )
    if start < 1 or end < start:
        raise InvalidReply("bad_line_range", f"{where}: lines {start}-{end} are not a range")
    if end < unit_start - LINE_TOLERANCE or start > unit_end + LINE_TOLERANCE:
        raise InvalidReply(
            "bad_line_range",
            f"{where}: lines {start}-{end} are outside the unit's lines {unit_start}-{unit_end}",
        )
    clamped_start = min(max(start, unit_start), unit_end)
    clamped_end = max(min(end, unit_end), clamped_start)
    return clamped_start, clamped_end


def _confidence(value: object, *, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidReply(
            "schema_mismatch", f"{where}.confidence is {_json_type(value)}, not a number"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidReply("bad_confidence", f"{where}.confidence {value} is outside 0.0-1.0")
    return float(value)


def shorten_title(title: str) -> str:
    """``title`` cut to ``MAX_TITLE_CHARS``, ending in an ellipsis when cut."""
    if len(title) <= MAX_TITLE_CHARS:
        return title
    return title[: MAX_TITLE_CHARS - 1].rstrip() + "…"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
