"""An analysis as Markdown for a pull-request comment: a summary, then the open findings by file.

Everything a model or a repository wrote (titles, explanations, paths, the source) is escaped:
each punctuation character that can open a construct is backslash-escaped (CommonMark's escapes),
line breaks and control characters become spaces, so that no text can open a heading, a table, a
list, emphasis, a link, an image or raw HTML. Code spans the model wrote (`name`) are kept:
their content is literal in Markdown.

The comment is capped at ``max_chars`` (GitHub refuses comments over 65,536 characters): findings
are taken most severe first until the next would not fit, then shown grouped by file, and a last
line says how many were left out. Dismissed cards are counted in the summary, not listed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from analyses.exports.rows import export_rows, severity_rank
from analyses.findings import SEVERITIES
from analyses.models import Analysis, AnalysisStatus, Card
from analyses.selectors import analysis_cost

DEFAULT_MAX_CHARS = 60_000  # under GitHub's 65,536-character comment limit, with room to spare
MIN_MAX_CHARS = 2_000
MAX_PARAGRAPH_CHARS = 1_000

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
# What can open Markdown (or GitHub's math) anywhere in a line, or at its start; each is escaped.
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&=$])")
_SPACES = re.compile(r"\s+")
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], " ")


def export_markdown(analysis: Analysis, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The comment: summary and findings, at most ``max_chars`` characters long."""
    if max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_MAX_CHARS}, got {max_chars}")
    rows = export_rows(analysis)
    open_cards = rows.open_cards
    header = _summary(analysis, open_cards, dismissed=len(rows.cards) - len(open_cards))
    header += _models_line(rows.models) + "\n"
    if not open_cards:
        return header + "No open findings.\n"

    chosen = _fitting(open_cards, budget=max_chars - len(header))
    left_out = len(open_cards) - len(chosen)
    body = "".join(_grouped(chosen))
    return header + body + (_trailer(left_out) if left_out else "")


@dataclass(frozen=True)
class _Block:
    card: Card
    text: str


def _fitting(cards: list[Card], *, budget: int) -> list[_Block]:
    """The most severe findings whose blocks (and their files' headings) fit in ``budget``,
    keeping room for the trailer."""
    ordered = sorted(cards, key=lambda c: (severity_rank(c.severity), c.path, c.line_start, c.pk))
    budget -= len(_trailer(len(cards)))
    chosen: list[_Block] = []
    files: set[str] = set()
    used = 0
    for card in ordered:
        block = _Block(card, _finding(card))
        cost = len(block.text) + (0 if card.path in files else len(_file_heading(card.path)))
        if used + cost > budget:
            break
        chosen.append(block)
        files.add(card.path)
        used += cost
    return chosen


def _grouped(blocks: list[_Block]) -> Iterable[str]:
    """Files with their most severe finding first; in a file, most severe first, then by line."""
    by_file: dict[str, list[_Block]] = {}
    for block in blocks:
        by_file.setdefault(block.card.path, []).append(block)
    for path in sorted(
        by_file, key=lambda p: (min(severity_rank(b.card.severity) for b in by_file[p]), p)
    ):
        yield _file_heading(path)
        for block in sorted(
            by_file[path],
            key=lambda b: (severity_rank(b.card.severity), b.card.line_start, b.card.pk),
        ):
            yield block.text


def _summary(analysis: Analysis, cards: list[Card], *, dismissed: int) -> str:
    where = code_span(analysis.source)
    if analysis.commit_sha:
        where += f" at {code_span(analysis.commit_sha[:12])}"
    score = "n/a" if analysis.health_score is None else f"{analysis.health_score}/100"
    counts = {severity: 0 for severity in SEVERITIES}
    for card in cards:
        counts[card.severity] = counts.get(card.severity, 0) + 1
    findings = ", ".join(f"{count} {severity}" for severity, count in counts.items())
    if dismissed:
        findings += f" ({dismissed} dismissed, not listed)"
    lines = [
        f"### Eidolon review of {where}",
        "",
        f"- **Health score:** {score}",
        f"- **Findings:** {findings}",
        f"- **Functions:** {analysis.functions_analyzed} reviewed, "
        f"{analysis.functions_cached} from the cache, {analysis.functions_failed} failed",
    ]
    if analysis.diff_base:
        selected = analysis.functions_selected
        lines.append(
            f"- **Changes since** {code_span(analysis.diff_base)}: "
            + (f"{selected} functions selected, " if selected is not None else "")
            + f"{len(analysis.diff_files)} Python files touched"
        )
    cost = analysis_cost(analysis)
    lines.append(
        "- **Cost:** "
        + ("unknown (a model had no price)" if cost is None else f"${float(cost):.4f}")
    )
    if analysis.status != AnalysisStatus.COMPLETED:
        reason = f": {escape_text(analysis.status_reason)}" if analysis.status_reason else ""
        lines.append(f"- **Status:** {escape_text(analysis.get_status_display())}{reason}")
    return "\n".join(lines) + "\n"


def _models_line(models: list[str]) -> str:
    shown = ", ".join(code_span(model) for model in models) if models else "none"
    return f"- **Models:** {shown}\n"


def _file_heading(path: str) -> str:
    return f"\n#### {code_span(path)}\n\n"


def _finding(card: Card) -> str:
    lines = (
        f"line {card.line_start}"
        if card.line_start == card.line_end
        else f"lines {card.line_start}–{card.line_end}"
    )
    head = f"- **{card.severity}** · {card.kind} · {lines} · {escape_text(card.title)}\n"
    paragraph = first_paragraph(card.explanation)
    return head + (f"\n  {escape_text(paragraph)}\n\n" if paragraph else "\n")


def _trailer(left_out: int) -> str:
    noun = "finding" if left_out == 1 else "findings"
    return f"\n… and {left_out} more {noun} (see the full report)\n"


def first_paragraph(text: str, *, max_chars: int = MAX_PARAGRAPH_CHARS) -> str:
    """The first paragraph of ``text`` on one line, shortened with an ellipsis past
    ``max_chars``."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if not paragraphs:
        return ""
    paragraph = _SPACES.sub(" ", paragraphs[0]).strip()
    return paragraph if len(paragraph) <= max_chars else paragraph[: max_chars - 1] + "…"


def escape_text(text: str) -> str:
    """``text`` as one line of Markdown that renders as that text; its code spans stay code."""
    parts = _CODE_SPAN.split(_one_line(text))
    # split() alternates: text outside code spans (even indices), code span contents (odd).
    return "".join(
        f"`{part}`" if index % 2 else _PUNCTUATION.sub(r"\\\1", part)
        for index, part in enumerate(parts)
    )


def code_span(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds."""
    text = _one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _one_line(text: str) -> str:
    text = "".join(
        " " if unicodedata.category(char) == "Cc" else char for char in text.translate(_BIDI)
    )
    return _SPACES.sub(" ", text).strip()
