"""The CI gate: whether an analysis has a finding at or above a severity that nobody dismissed."""

from __future__ import annotations

from analyses.findings import SEVERITIES
from analyses.models import Analysis, Card, CardStatus


def findings_at_or_above(analysis: Analysis, *, severity: str) -> int:
    """How many of the analysis's cards are ``severity`` or more severe and not dismissed.

    A function suppressed in the code has no card at all, so it never counts either."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}: choose one of {', '.join(SEVERITIES)}")
    at_or_above = SEVERITIES[: SEVERITIES.index(severity) + 1]
    return (
        Card.objects.filter(analysis=analysis, severity__in=at_or_above)
        .exclude(status=CardStatus.DISMISSED)
        .count()
    )
