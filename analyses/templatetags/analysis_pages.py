"""Template helpers of the analysis pages: a card's highlighted excerpt, status labels, score
bands. Model-written text never passes through here: templates escape it as they print it."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from analyses.highlighting import highlighted_excerpt
from analyses.models import AnalysisStatus, Card, CardStatus

register = template.Library()

GOOD_SCORE = 80
FAIR_SCORE = 50


@register.simple_tag
def card_excerpt(card: Card) -> SafeString:
    return highlighted_excerpt(
        card.excerpt,
        first_line=card.excerpt_start,
        line_start=card.line_start,
        line_end=card.line_end,
    )


@register.simple_tag
def card_status_choices() -> list[tuple[str, str]]:
    return CardStatus.choices


@register.filter
def status_label(status: str) -> str:
    """An analysis status as people read it ("completed with errors")."""
    return AnalysisStatus(status).label if status in AnalysisStatus.values else status


@register.filter
def score_band(score: int | None) -> str:
    """good (80-100), fair (50-79), poor (0-49) or none: the score's colour."""
    if score is None:
        return "none"
    if score >= GOOD_SCORE:
        return "good"
    return "fair" if score >= FAIR_SCORE else "poor"
