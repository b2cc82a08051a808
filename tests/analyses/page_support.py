"""Rows the page tests look at: analyses, their units and cards, events and users."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from analyses.models import Analysis, AnalysisEvent, AnalysisStatus, Card, CodeUnit

PASSWORD = "correct-horse-battery-staple"
# What a hostile model might write into a card.
SCRIPT = "<script>alert('title')</script>"
IMAGE = "<img src=x onerror=alert('explanation')>"


def make_user(username: str, *, staff: bool = False) -> User:
    return User.objects.create_user(username, password=PASSWORD, is_staff=staff)


def make_analysis(owner: User | None, **fields: Any) -> Analysis:
    values: dict[str, Any] = {
        "source": "/srv/code/shop",
        "source_kind": "local",
        "provider": "static",
        "model": "rules",
        "status": AnalysisStatus.RUNNING,
        "functions_total": 40,
        "functions_analyzed": 10,
        "functions_cached": 5,
        "functions_failed": 1,
        "cards_count": 2,
        "llm_requests": 12,
        "created_by": owner,
    }
    values.update(fields)
    return Analysis.objects.create(**values)


def make_card(analysis: Analysis, **fields: Any) -> Card:
    path = fields.pop("path", "shop/cart.py")
    line_start = fields.pop("line_start", 12)
    unit = CodeUnit.objects.create(
        analysis=analysis,
        unit_id=f"{path}::total_{CodeUnit.objects.count()}",
        kind="function",
        qualname="total",
        path=path,
        lineno=line_start - 2,
        end_lineno=line_start + 3,
        content_hash="0" * 64,
        reviewable=True,
    )
    values: dict[str, Any] = {
        "kind": "bug",
        "severity": "high",
        "title": "The total ignores discounts",
        "explanation": "Discounts are subtracted after tax, so every order is overcharged.",
        "fix": "Subtract the discount before computing tax.",
        "line_start": line_start,
        "line_end": line_start + 1,
        "confidence": 0.9,
        "source": "static",
        "excerpt": (
            "def total(cart):\n    taxed = cart.sum() * 1.2\n    return taxed - cart.discount\n"
        ),
        "excerpt_start": line_start - 1,
    }
    values.update(fields)
    return Card.objects.create(analysis=analysis, unit=unit, path=path, **values)


def add_event(analysis: Analysis, kind: str, payload: dict[str, Any]) -> AnalysisEvent:
    """The next event of ``analysis``, numbered as the orchestrator numbers them."""
    analysis.event_seq += 1
    Analysis.objects.filter(pk=analysis.pk).update(event_seq=analysis.event_seq)
    return AnalysisEvent.objects.create(
        analysis=analysis, seq=analysis.event_seq, type=kind, payload=payload
    )
