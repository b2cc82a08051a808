"""Analyses the export tests read: run for real (static rules, or Claude's provider against the
fake API), or written through the store as the orchestrator writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from analyses.findings import FINDING_KINDS, SEVERITIES, Finding
from analyses.models import Analysis, AnalysisStatus
from analyses.parsing import parse_module
from analyses.store import UnitOutcome, store_units, write_outcomes

SARIF_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "data" / "sarif-schema-2.1.0.json"

# A module the static rules find something high in (complexity), and one with nothing high.
TANGLED = '''"""Tangled."""


def tangled(a, b, c, d):
    """Too many paths."""
    if a:
        if b:
            return 1
        elif c:
            return 2
    for x in range(d):
        if x and a or b and c:
            continue
        while x > 3 and (a or b):
            x -= 1
            if x == 7 or x == 9:
                break
    return 0 if a else (1 if b else 2)
'''
MILD = '''"""Mild."""


def risky(items=[]):
    """Medium (a mutable default) and nothing high."""
    try:
        return items[0]
    except:
        return None
'''
# What a hostile model could write: markup of every kind Markdown or HTML has.
HOSTILE_TITLE = "# Heading <script>alert(1)</script> | a | b | [x](https://evil.example) ![i](y)"
HOSTILE_EXPLANATION = (
    "<img src=x onerror=alert(1)> **bold** _em_ ~~gone~~ $x^2$ 1. list\n"
    "| t | t |\n|---|---|\n# not a heading\n> not a quote\n\n"
    "A second paragraph that is not shown."
)


def validate_sarif(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` is valid SARIF 2.1.0."""
    schema = json.loads(SARIF_SCHEMA_PATH.read_text())
    validator = jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(document)


def module_source(*, functions: int, offset: int = 0) -> str:
    """A module of ``functions`` functions, each 12 lines long."""
    body = "\n".join(f"    total = total + {line}" for line in range(9))
    return '"""Generated."""\n' + "".join(
        f"\n\ndef function_{offset + index}(total):\n{body}\n    return total\n"
        for index in range(functions)
    )


def analysis_with_findings(
    *, owner, files: int, functions_per_file: int, findings_per_function: int
) -> Analysis:
    """A completed analysis whose cards are written by the store (``write_outcomes``) from
    findings on parsed units, as the orchestrator writes them; hostile text in every card."""
    analysis = Analysis.objects.create(
        source="/srv/code/generated",
        source_kind="local",
        provider="anthropic",
        model="claude-sonnet-5-5",
        created_by=owner,
        status=AnalysisStatus.RUNNING,
    )
    units = []
    for file in range(files):
        parsed, errors = parse_module(
            module_source(functions=functions_per_file, offset=file * functions_per_file),
            path=f"pkg/module_{file}.py",
        )
        assert not errors
        units += parsed
    stored = store_units(
        analysis.pk,
        units=units,
        reviewable=[unit.is_function for unit in units],
        file_errors=[],
    )
    outcomes = []
    number = 0
    for unit in (unit for unit in units if unit.is_function):
        findings = []
        for index in range(findings_per_function):
            kind = FINDING_KINDS[number % len(FINDING_KINDS)]
            line = unit.lineno + 1 + index % (unit.end_lineno - unit.lineno)
            findings.append(
                Finding(
                    kind=kind,
                    severity=SEVERITIES[number % len(SEVERITIES)],
                    title=f"{HOSTILE_TITLE[:100]} {number}",
                    explanation=HOSTILE_EXPLANATION,
                    line_start=line,
                    line_end=line,
                    confidence=0.8,
                    source="anthropic",
                )
            )
            number += 1
        outcomes.append(
            UnitOutcome(
                code_unit_id=stored[unit.id][0],
                unit=unit,
                status="analyzed",
                findings=findings,
                model="claude-sonnet-5-5",
            )
        )
    write_outcomes(analysis.pk, outcomes=outcomes, calls=[])
    Analysis.objects.filter(pk=analysis.pk).update(status=AnalysisStatus.COMPLETED)
    analysis.refresh_from_db()
    return analysis
