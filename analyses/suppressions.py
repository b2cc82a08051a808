"""Inline suppressions: ``# eidolon: ignore`` and ``# eidolon: ignore[kind1,kind2]``.

The comment goes on a function's ``def`` line (the line holding ``def``, which for a long
signature is its first) or on one of its decorator lines; a class's ``class`` line works the
same way. Nothing else (a comment in the body, on the line above) suppresses.

* bare ``# eidolon: ignore`` (or empty brackets): the function is not reviewed at all: skipped,
  its reason saying so, no request made, no card (static or AI);
* ``# eidolon: ignore[smell,docs]``: the function is reviewed as usual and its cards of those
  kinds are dropped before they are stored. Kinds are ``analyses.findings.FINDING_KINDS``
  (case-insensitive; an unknown kind suppresses nothing).

How many were suppressed shows in ``Analysis.summary["suppressed"]`` (``functions`` skipped,
``cards`` dropped) and in each ``unit.finished`` event (``suppressed``).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable

from analyses.models import AnalysisEvent, CodeUnit
from analyses.parsing import Unit

EVERY_KIND = "*"
SKIP_REASON = "suppressed by '# eidolon: ignore'"
_COMMENT = re.compile(r"#\s*eidolon:\s*ignore\b(?:\[(?P<kinds>[^\]]*)\])?", re.IGNORECASE)


def suppressed_kinds(unit: Unit) -> frozenset[str]:
    """The kinds ``unit``'s header comments suppress: ``{EVERY_KIND}`` for a bare ignore,
    empty for none."""
    if unit.kind == "module" or "eidolon" not in unit.source.lower():
        return frozenset()
    return _header_suppressions(unit.source)


def _header_suppressions(source: str) -> frozenset[str]:
    kinds: set[str] = set()
    for comment in _header_comments(source):
        for found in _COMMENT.finditer(comment):
            named = {k.strip().lower() for k in (found["kinds"] or "").split(",") if k.strip()}
            kinds |= named or {EVERY_KIND}
    return frozenset(kinds)


def _header_comments(source: str) -> list[str]:
    """Comments on the decorator lines and the ``def``/``class`` line of ``source``."""
    comments: list[str] = []
    depth = 0
    header_row = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if header_row is not None and token.start[0] > header_row:
                break
            if token.type == tokenize.COMMENT:
                comments.append(token.string)
            elif token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
            elif token.type == tokenize.NAME and token.string in ("def", "class") and not depth:
                header_row = token.start[0]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a unit's source is valid Python; a method's indentation may upset the end
    return comments if header_row is not None else []


def is_skipped(unit: Unit) -> bool:
    return EVERY_KIND in suppressed_kinds(unit)


def suppresses(unit: Unit, kind: str) -> bool:
    kinds = suppressed_kinds(unit)
    return EVERY_KIND in kinds or kind.lower() in kinds


def left_out(units: Iterable[Unit]) -> dict[str, str]:
    """unit id -> reason, for the units a bare ignore leaves out of the review."""
    return {unit.id: SKIP_REASON for unit in units if is_skipped(unit)}


def suppressed_counts(analysis_id: int) -> dict[str, int]:
    """Functions a bare ignore left out, and cards an ``ignore[kind]`` dropped (from the
    ``unit.finished`` events, which say how many each unit lost)."""
    functions = CodeUnit.objects.filter(analysis_id=analysis_id, failure_reason=SKIP_REASON).count()
    payloads = AnalysisEvent.objects.filter(
        analysis_id=analysis_id, type="unit.finished", payload__suppressed__gt=0
    ).values_list("payload", flat=True)
    return {"functions": functions, "cards": sum(p["suppressed"] for p in payloads)}
