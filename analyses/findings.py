"""The Finding type every provider returns, the JSON schema Claude answers with, and validation.

Pure: no Django, no network. A provider's reply is checked here before anything is stored, so a
malformed answer becomes an ``InvalidReply`` with a reason code the orchestrator can record.

Decisions:

* Only a reply the schema rejects (or whose text fields are empty) is an ``InvalidReply``: that
  is what earns the provider's one corrective request. What the schema cannot express is
  tolerated and marked on the finding (``adjustment``), never paid for with another request:
* Line ranges are absolute file lines. A range partly outside the unit, reversed, or missing it
  by at most ``LINE_TOLERANCE`` lines (models often count the line after the last one) is
  clamped into it; a range far outside it (a caller's line, lines counted from 1) is pinned to
  the unit's first line.
* Findings that repeat one another (same kind, overlapping lines, near-identical titles) are
  merged into the first: the most severe severity, the highest confidence, the union of lines.
* A title longer than ``MAX_TITLE_CHARS`` is shortened with an ellipsis rather than rejected:
  the schema subset Claude's structured outputs accept cannot express ``maxLength``.
* An empty ``fix`` becomes ``None``. One finding outside the schema rejects the whole reply.
* Model output is untrusted and stored as text only: an explanation longer than
  ``MAX_EXPLANATION_CHARS`` is shortened with an ellipsis, and a fix longer than
  ``MAX_FIX_CHARS`` is dropped (half a replacement would mislead more than none).
* Adjustment notes name no line numbers: the result cache stores findings relative to their
  unit, and a note must stay true when the function has moved.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
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
    "bad_confidence",
    "empty_text",
]

FINDING_KINDS: tuple[FindingKind, ...] = get_args(FindingKind)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)  # most severe first
FINDING_SOURCES: tuple[FindingSource, ...] = get_args(FindingSource)
MAX_TITLE_CHARS = 120
MAX_EXPLANATION_CHARS = 4_000
MAX_FIX_CHARS = 8_000
LINE_TOLERANCE = 3
# Titles at least this similar (difflib's ratio, after folding case and punctuation) repeat.
REPEATED_TITLE_SIMILARITY = 0.9
PINNED_NOTE = "The model cited lines outside this function; shown at its first line."
CLAMPED_NOTE = "The model cited lines partly outside this function; clamped to it."

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
    adjustment: str = ""  # how the reply was adjusted to be kept ("" when taken as given)

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


@dataclass(frozen=True, slots=True)
class FindingsReply:
    """A reply's findings, and how many of them had to be adjusted to be kept."""

    findings: list[Finding]
    clamped: int = 0  # findings whose lines were moved into the unit
    merged: int = 0  # findings folded into an earlier one that they repeated


def parse_findings_reply(
    payload: str | bytes | Mapping[str, Any], *, unit_start: int, unit_end: int
) -> list[Finding]:
    """Findings from Claude's reply for a unit spanning ``unit_start``-``unit_end``.

    Raises ``InvalidReply`` with a reason code when the reply is not valid against the schema.
    """
    return read_findings_reply(payload, unit_start=unit_start, unit_end=unit_end).findings


def read_findings_reply(
    payload: str | bytes | Mapping[str, Any], *, unit_start: int, unit_end: int
) -> FindingsReply:
    """``parse_findings_reply`` with the counts of clamped and merged findings."""
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
    findings = [
        _finding(item, index=index, unit_start=unit_start, unit_end=unit_end)
        for index, item in enumerate(items)
    ]
    kept, merged = merge_repeated_findings(findings)
    clamped = sum(1 for finding in findings if finding.adjustment)
    return FindingsReply(findings=kept, clamped=clamped, merged=merged)


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
    except (RecursionError, ValueError) as exc:  # nested too deep; an integer over 4,300 digits
        raise InvalidReply("not_json", f"not usable JSON ({type(exc).__name__})") from None


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
    start, end = _line(item, "line_start", where=where), _line(item, "line_end", where=where)
    line_start, line_end, adjustment = place_lines(
        start, end, unit_start=unit_start, unit_end=unit_end
    )
    fix = item["fix"]
    if fix is not None and not isinstance(fix, str):
        raise InvalidReply("schema_mismatch", f"{where}.fix is {_json_type(fix)}, not a string")
    return Finding(
        kind=kind,
        severity=severity,
        title=shorten_title(_text(item, "title", where=where)),
        explanation=shortened(_text(item, "explanation", where=where), MAX_EXPLANATION_CHARS),
        line_start=line_start,
        line_end=line_end,
        confidence=_confidence(item["confidence"], where=where),
        source="anthropic",
        fix=fix if fix and fix.strip() and len(fix) <= MAX_FIX_CHARS else None,
        adjustment=adjustment,
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


def _line(item: Mapping[str, Any], name: str, *, where: str) -> int:
    value = item[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidReply(
            "schema_mismatch", f"{where}.{name} is {_json_type(value)}, not an integer"
        )
    return value


def place_lines(start: int, end: int, *, unit_start: int, unit_end: int) -> tuple[int, int, str]:
    """Cited lines placed within the unit: ``(line_start, line_end, note)``, the note empty
    when the lines were already inside it."""
    low, high = min(start, end), max(start, end)
    if high < unit_start - LINE_TOLERANCE or low > unit_end + LINE_TOLERANCE:
        return unit_start, unit_start, PINNED_NOTE
    placed_start = min(max(low, unit_start), unit_end)
    placed_end = max(min(high, unit_end), placed_start)
    if (placed_start, placed_end) == (start, end):
        return start, end, ""
    return placed_start, placed_end, CLAMPED_NOTE


def merge_repeated_findings(findings: Sequence[Finding]) -> tuple[list[Finding], int]:
    """``findings`` with repeats folded into the first of their kind; and how many were folded.

    A repeat has the same kind, overlapping lines and a near-identical title. The kept finding
    takes the most severe severity, the highest confidence, the union of the lines and the first
    fix given, and notes how many repeats it absorbed.
    """
    kept: list[Finding] = []
    absorbed: list[int] = []
    for finding in findings:
        index = next((i for i, first in enumerate(kept) if _repeats(first, finding)), None)
        if index is None:
            kept.append(finding)
            absorbed.append(0)
        else:
            kept[index] = _merged(kept[index], finding)
            absorbed[index] += 1
    return [
        _noted(finding, count) if count else finding
        for finding, count in zip(kept, absorbed, strict=True)
    ], sum(absorbed)


def _repeats(first: Finding, other: Finding) -> bool:
    return (
        first.kind == other.kind
        and first.line_start <= other.line_end
        and other.line_start <= first.line_end
        and difflib.SequenceMatcher(None, _title_key(first.title), _title_key(other.title)).ratio()
        >= REPEATED_TITLE_SIMILARITY
    )


def _title_key(title: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", title.casefold()).split())


def _merged(first: Finding, other: Finding) -> Finding:
    return dataclasses.replace(
        first,
        severity=min(first.severity, other.severity, key=SEVERITIES.index),
        confidence=max(first.confidence, other.confidence),
        line_start=min(first.line_start, other.line_start),
        line_end=max(first.line_end, other.line_end),
        fix=first.fix or other.fix,
        adjustment=first.adjustment or other.adjustment,
    )


def _noted(finding: Finding, repeats: int) -> Finding:
    merged = f"Merged with {repeats} repeat{'s' if repeats != 1 else ''} of it in the reply."
    note = f"{finding.adjustment} {merged}" if finding.adjustment else merged
    return dataclasses.replace(finding, adjustment=note)


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
    return shortened(title, MAX_TITLE_CHARS)


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


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
