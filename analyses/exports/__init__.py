"""An analysis's findings in the formats other tools read: JSON (the API's cards), SARIF 2.1.0
(code-scanning platforms) and Markdown (a pull-request comment); and the CI gate over them.

Each export reads the stored rows once (``rows.export_rows``: the cards with their units in one
query) and returns text. Only a finished analysis is exported: a running one would give a
code-scanning platform a partial picture in which every finding not reached yet looks fixed.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

from analyses.exports.gate import findings_at_or_above
from analyses.exports.markdown import DEFAULT_MAX_CHARS, export_markdown
from analyses.exports.rows import export_rows
from analyses.exports.sarif import export_sarif
from analyses.exports.version import eidolon_version
from analyses.models import Analysis
from analyses.selectors import analysis_detail_with_models, card_detail

ExportFormat = Literal["json", "sarif", "markdown"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "sarif": "application/sarif+json",
    "markdown": "text/markdown; charset=utf-8",
}
FILE_EXTENSIONS: dict[str, str] = {"json": "json", "sarif": "sarif", "markdown": "md"}

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_MAX_CHARS",
    "EXPORT_FORMATS",
    "ExportFormat",
    "export_analysis",
    "export_filename",
    "export_json",
    "export_markdown",
    "export_sarif",
    "findings_at_or_above",
]


def export_json(analysis: Analysis) -> str:
    """The analysis as the API's detail gives it, and every card as the API's card routes give
    it (dismissed ones too, with their status), in file and line order."""
    rows = export_rows(analysis)
    document = {
        "tool": {"name": "Eidolon", "version": eidolon_version()},
        "analysis": analysis_detail_with_models(analysis),
        "cards": [card_detail(card) for card in rows.cards],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def export_analysis(analysis: Analysis, *, format: ExportFormat) -> str:
    """``analysis`` exported in ``format``; ValueError for a format there is none of."""
    if format == "json":
        return export_json(analysis)
    if format == "sarif":
        return export_sarif(analysis)
    if format == "markdown":
        return export_markdown(analysis)
    raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(EXPORT_FORMATS)}")


def export_filename(analysis: Analysis, *, format: ExportFormat) -> str:
    return f"eidolon-analysis-{analysis.pk}.{FILE_EXTENSIONS[format]}"
