"""What the analysis pages show, composed from the selectors as plain data for the templates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser
from django.core.paginator import Paginator

from analyses.findings import FINDING_KINDS, SEVERITIES
from analyses.models import Analysis, AnalysisStatus, Card
from analyses.selectors import (
    analyses_filtered,
    analyses_visible_to,
    analysis_detail,
    recent_activity,
    status_counts,
)

# The analysis page renders at most this many cards (every one is highlighted on the server);
# the JSON API lists them all.
CARD_LIMIT = 500
ACTIVITY_LIMIT = 100
LIST_PAGE_SIZE = 25
# The counters the page shows (keys of analysis_detail and of analysis.progress events).
COUNTERS = (
    ("total", "functions"),
    ("done", "done"),
    ("analyzed", "analysed"),
    ("cached", "cached"),
    ("failed", "failed"),
    ("cards", "cards"),
    ("requests", "AI requests"),
)


@dataclass
class FileGroup:
    """The cards of one file, in line order."""

    path: str
    cards: list[Card] = field(default_factory=list)


def card_groups(cards: Iterable[Card]) -> list[FileGroup]:
    """``cards`` (ordered by path, then line) grouped by file."""
    groups: list[FileGroup] = []
    for card in cards:
        if not groups or groups[-1].path != card.path:
            groups.append(FileGroup(path=card.path))
        groups[-1].cards.append(card)
    return groups


def can_cancel(analysis: Analysis) -> bool:
    return not analysis.is_finished


def can_resume(analysis: Analysis) -> bool:
    """Finished short of completion: cancelled, failed, timed out or with errors."""
    return analysis.is_finished and analysis.status != AnalysisStatus.COMPLETED


def analysis_page(analysis: Analysis) -> dict:
    """Everything the analysis page shows when it is first rendered."""
    cards = list(analysis.cards.order_by("path", "line_start", "id")[:CARD_LIMIT])
    detail = analysis_detail(analysis)
    return {
        "analysis": analysis,
        "detail": detail,
        "counters": [(key, label, detail[key]) for key, label in COUNTERS],
        "groups": card_groups(cards),
        "cards_shown": len(cards),
        "severities": SEVERITIES,
        "kinds": FINDING_KINDS,
        # Up to the sequence number the page starts from: later events come over the socket.
        "activity": recent_activity(analysis.pk, up_to=detail["last_seq"], limit=ACTIVITY_LIMIT),
        "activity_limit": ACTIVITY_LIMIT,
        "can_cancel": can_cancel(analysis),
        "can_resume": can_resume(analysis),
        "summary": analysis.summary,
    }


def analysis_list_page(user: AbstractBaseUser, *, status: str, page_number: str | None) -> dict:
    """One page of the analyses ``user`` sees, newest first, optionally of one status."""
    counts = status_counts(analyses_visible_to(user))
    shown = analyses_filtered(user, status=status)
    page = Paginator(shown.select_related("created_by"), LIST_PAGE_SIZE).get_page(page_number)
    return {
        "page": page,
        "status": status,
        "pagination_query": urlencode({"status": status}) + "&" if status else "",
        "status_counts": [(value, label, counts[value]) for value, label in AnalysisStatus.choices],
        "total": sum(counts.values()),
    }
