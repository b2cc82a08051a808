"""Template helpers of the analysis pages: a card's highlighted excerpt, status labels, score
bands. Model-written text never passes through here: templates escape it as they print it."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from analyses.highlighting import highlighted_excerpt
from analyses.models import Analysis, AnalysisStatus, Card, CardStatus
from analyses.selectors import analysis_model_usage

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


@register.inclusion_tag("analyses/_models.html")
def model_usage(analysis: Analysis) -> dict:
    """Per model, the units it reviewed, its requests and their cost (two grouped queries)."""
    return {"models": analysis_model_usage(analysis)}


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
