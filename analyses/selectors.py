"""Reading analyses: what pages, the API and WebSocket clients are shown, and to whom.

A user sees their own analyses and their cards; staff see everyone's. Anything else is "not
found" (never "forbidden"), so ids reveal nothing about other users' work.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from analyses.events import event_dict
from analyses.models import Analysis, AnalysisEvent, Card


def analyses_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Analysis]:
    if not user.is_authenticated:
        return Analysis.objects.none()
    if user.is_staff:
        return Analysis.objects.all()
    return Analysis.objects.filter(created_by=user)


def cards_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Card]:
    if not user.is_authenticated:
        return Card.objects.none()
    if user.is_staff:
        return Card.objects.all()
    return Card.objects.filter(analysis__created_by=user)


def events_after(analysis_id: int, seq: int, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Stored events after ``seq``, oldest first: how a reconnecting client catches up."""
    return [
        event_dict(event)
        for event in AnalysisEvent.objects.filter(analysis_id=analysis_id, seq__gt=seq).order_by(
            "seq"
        )[:limit]
    ]
