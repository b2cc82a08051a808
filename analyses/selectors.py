"""Reading analyses: what pages, the API and WebSocket clients are shown."""

from __future__ import annotations

from typing import Any

from analyses.events import event_dict
from analyses.models import AnalysisEvent


def events_after(analysis_id: int, seq: int, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Stored events after ``seq``, oldest first: how a reconnecting client catches up."""
    return [
        event_dict(event)
        for event in AnalysisEvent.objects.filter(analysis_id=analysis_id, seq__gt=seq).order_by(
            "seq"
        )[:limit]
    ]
