"""An analysis as a SARIF 2.1.0 log, for code-scanning platforms (GitHub, GitLab, Azure DevOps).

One run; one rule per finding kind; one result per card, its level from the severity, its
location the cited lines of a repository-relative file under ``%SRCROOT%`` (the checkout's
root, which the uploader knows), and ``partialFingerprints`` from ``Card.fingerprint`` so that a
platform matches the same finding across analyses of unchanged code and an alert dismissed there
stays dismissed. A card dismissed in Eidolon carries an external, accepted suppression.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from analyses.exports.rows import ExportRows, export_rows
from analyses.exports.version import eidolon_version
from analyses.findings import FINDING_KINDS
from analyses.models import Analysis, Card, CardStatus

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
TOOL_NAME = "Eidolon"
SOURCE_ROOT = "%SRCROOT%"
FINGERPRINT_KEY = "eidolonFindingHash/v1"
# SARIF has error, warning and note; Eidolon's severities are high, medium and low.
LEVELS = {"high": "error", "medium": "warning", "low": "note"}

# (short description, full description) of each finding kind: SARIF's rules.
RULE_TEXT: dict[str, tuple[str, str]] = {
    "bug": (
        "A bug",
        "Code that does the wrong thing for some input: a wrong result, an exception or lost data.",
    ),
    "risk": (
        "A risk",
        "Code that works today but fails under conditions likely in production: errors "
        "swallowed, resources leaked, races, complexity that hides bugs.",
    ),
    "security": (
        "A security weakness",
        "Code an attacker could use: untrusted input reaching a shell, a query, a path or a "
        "deserialiser; secrets exposed; checks missing.",
    ),
    "performance": (
        "A performance problem",
        "Work done more often or more expensively than needed: repeated queries or lookups, "
        "quadratic loops, needless copies.",
    ),
    "smell": (
        "A design smell",
        "Code that is hard to read, test or change: too long, too many parameters, mixed "
        "responsibilities.",
    ),
    "docs": (
        "Missing or misleading documentation",
        "A public function whose docstring is missing or does not say what it does, returns "
        "or raises.",
    ),
    "test": (
        "A gap in the tests",
        "Behaviour that no test would catch breaking: an untested branch or edge case.",
    ),
}
RULE_TAGS = {"security": ["security"]}


def export_sarif(analysis: Analysis) -> str:
    return json.dumps(sarif_log(analysis), ensure_ascii=False, indent=2) + "\n"


def sarif_log(analysis: Analysis, rows: ExportRows | None = None) -> dict[str, Any]:
    """The SARIF log of ``analysis`` as a JSON-ready dict."""
    rows = rows or export_rows(analysis)
    rule_index = {kind: index for index, kind in enumerate(FINDING_KINDS)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": eidolon_version(),
                        "semanticVersion": eidolon_version(),
                        "rules": [_rule(kind) for kind in FINDING_KINDS],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": [_result(card, rule_index=rule_index[card.kind]) for card in rows.cards],
                "properties": {
                    "analysisId": analysis.pk,
                    "source": analysis.source,
                    "sourceKind": analysis.source_kind,
                    "ref": analysis.ref,
                    "commit": analysis.commit_sha,
                    "status": analysis.status,
                    "provider": analysis.provider,
                    "models": rows.models,
                    "healthScore": analysis.health_score,
                },
            }
        ],
    }


def _rule(kind: str) -> dict[str, Any]:
    short, full = RULE_TEXT.get(kind, (kind, kind))
    rule: dict[str, Any] = {
        "id": kind,
        "name": kind.capitalize(),
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "properties": {"tags": ["eidolon", *RULE_TAGS.get(kind, [])]},
    }
    return rule


def _result(card: Card, *, rule_index: int) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": card.line_start, "endLine": card.line_end}
    snippet = cited_lines(card)
    if snippet:
        region["snippet"] = {"text": snippet}
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": artifact_uri(card.path), "uriBaseId": SOURCE_ROOT},
            "region": region,
        }
    }
    if card.unit.qualname:
        location["logicalLocations"] = [
            {"fullyQualifiedName": card.unit.qualname, "kind": _logical_kind(card.unit.kind)}
        ]
    result: dict[str, Any] = {
        "ruleId": card.kind,
        "ruleIndex": rule_index,
        "level": LEVELS.get(card.severity, "warning"),
        "message": {"text": f"{card.title}\n\n{card.explanation}"},
        "locations": [location],
    }
    if card.fingerprint:
        result["partialFingerprints"] = {FINGERPRINT_KEY: card.fingerprint}
    result["properties"] = {
        "cardId": card.pk,
        "severity": card.severity,
        "confidence": card.confidence,
        "model": card.model,
        "source": card.source,
        "staticRule": card.rule,
        "status": card.status,
    }
    if card.status == CardStatus.DISMISSED:
        result["suppressions"] = [
            {"kind": "external", "status": "accepted", "justification": "Dismissed in Eidolon."}
        ]
    return result


def artifact_uri(path: str) -> str:
    """A repository-relative path as a relative URI reference (spaces and the like escaped)."""
    return quote(path.replace("\\", "/").lstrip("/"), safe="/")


def cited_lines(card: Card) -> str:
    """The card's cited lines, out of its excerpt (which holds a little context around them)."""
    lines = card.excerpt.splitlines(keepends=True)
    first = card.line_start - card.excerpt_start
    last = card.line_end - card.excerpt_start
    return "".join(lines[max(0, first) : max(0, last + 1)])


def _logical_kind(unit_kind: str) -> str:
    return {"method": "member", "class": "type", "module": "module"}.get(unit_kind, "function")
