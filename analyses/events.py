"""Progress events: persisted first (so a client can catch up from any sequence number), then
sent to the channel layer for the WebSocket clients watching live.

Event types are dotted (``analysis.started``, ``analysis.progress``, ``unit.finished``,
``unit.failed``, ``card.created``, ``analysis.finished``). One channel message carries a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from analyses.models import Analysis, AnalysisEvent
from reliability.sql import update_returning

logger = structlog.get_logger(__name__)

# The message type consumers handle (``analysis_events``); each item keeps its own type.
CHANNEL_MESSAGE_TYPE = "analysis.events"


def analysis_group(analysis_id: int) -> str:
    """The channel-layer group of one analysis's watchers."""
    return f"analysis.{analysis_id}"


def event_dict(event: AnalysisEvent) -> dict[str, Any]:
    """An event as clients receive it (WebSocket and ``GET .../events``)."""
    return {
        "seq": event.seq,
        "type": event.type,
        "data": event.payload,
        "at": event.created_at.isoformat() if event.created_at else None,
    }


def persist_events(
    analysis_id: int, events: Sequence[tuple[str, dict[str, Any]]]
) -> list[AnalysisEvent]:
    """Store events with consecutive sequence numbers (one atomic reservation of the range)."""
    if not events:
        return []
    with transaction.atomic():
        row = update_returning(
            Analysis,
            pk=analysis_id,
            values={"event_seq": F("event_seq") + len(events)},
            returning=["event_seq"],
        )
        if row is None:
            return []
        first = row["event_seq"] - len(events) + 1
        return AnalysisEvent.objects.bulk_create(
            AnalysisEvent(analysis_id=analysis_id, seq=first + offset, type=kind, payload=payload)
            for offset, (kind, payload) in enumerate(events)
        )


async def publish(analysis_id: int, events: Sequence[AnalysisEvent]) -> None:
    """Send stored events to live watchers; a channel-layer failure never fails the analysis."""
    layer = get_channel_layer()
    if layer is None or not events:
        return
    try:
        await layer.group_send(
            analysis_group(analysis_id),
            {"type": CHANNEL_MESSAGE_TYPE, "events": [event_dict(event) for event in events]},
        )
    except Exception as error:
        logger.warning("events_not_published", analysis_id=analysis_id, error=type(error).__name__)


async def emit(
    analysis_id: int, events: Sequence[tuple[str, dict[str, Any]]]
) -> list[AnalysisEvent]:
    """Persist, then publish."""
    stored = await sync_to_async(persist_events)(analysis_id, events)
    await publish(analysis_id, stored)
    return stored
