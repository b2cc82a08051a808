"""Uptime, computed exactly from the recorded transitions.

A component's history is a run of status ``Segment``s; time up (healthy or degraded) is divided
by time known (up or unhealthy). Stretches nobody observed (the monitor was not running) are
``unknown`` and count neither way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from fractions import Fraction

from reliability.health.history import monitor_stale_after
from reliability.models import HealthComponentState, HealthStatus, HealthTransition

UP_STATUSES = frozenset({HealthStatus.HEALTHY, HealthStatus.DEGRADED})
DOWN_STATUSES = frozenset({HealthStatus.UNHEALTHY})
UPTIME_WINDOWS = (dt.timedelta(hours=1), dt.timedelta(hours=24), dt.timedelta(days=7))
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True)
class Segment:
    start: dt.datetime
    end: dt.datetime
    status: str

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start


def status_segments(
    *,
    changes: Sequence[tuple[dt.datetime, str]],
    start: dt.datetime,
    end: dt.datetime,
    initial: str = HealthStatus.UNKNOWN,
    known_until: dt.datetime | None = None,
) -> list[Segment]:
    """The component's status over ``[start, end)`` as contiguous segments.

    ``changes``: ``(time, new status)`` in time order; ``initial``: the status before the
    first change; after ``known_until`` (the last observation plus the staleness allowance)
    the status is unknown.
    """
    segments: list[Segment] = []
    status, cursor = initial, start
    for at, new_status in changes:
        if at <= start:
            status = new_status
            continue
        if at >= end:
            break
        segments.append(Segment(cursor, at, status))
        status, cursor = new_status, at
    segments.append(Segment(cursor, end, status))
    if known_until is not None and known_until < end:
        clipped = []
        for segment in segments:
            if segment.end <= known_until:
                clipped.append(segment)
            elif segment.start >= known_until:
                clipped.append(Segment(segment.start, segment.end, HealthStatus.UNKNOWN))
            else:
                clipped.append(Segment(segment.start, known_until, segment.status))
                clipped.append(Segment(known_until, segment.end, HealthStatus.UNKNOWN))
        segments = clipped
    merged: list[Segment] = []
    for segment in segments:
        if segment.end <= segment.start:
            continue
        if merged and merged[-1].status == segment.status:
            merged[-1] = Segment(merged[-1].start, segment.end, segment.status)
        else:
            merged.append(segment)
    return merged


def clip_segments(
    segments: Sequence[Segment], *, start: dt.datetime, end: dt.datetime
) -> list[Segment]:
    return [
        Segment(max(s.start, start), min(s.end, end), s.status)
        for s in segments
        if s.end > start and s.start < end
    ]


def uptime_percent(segments: Sequence[Segment]) -> float | None:
    """Time up (healthy or degraded) over time known (up or unhealthy), in percent.

    Unknown time (no observations) counts neither way; ``None`` when nothing is known.
    """
    up = sum((s.duration for s in segments if s.status in UP_STATUSES), dt.timedelta())
    down = sum((s.duration for s in segments if s.status in DOWN_STATUSES), dt.timedelta())
    known = up + down
    if known <= dt.timedelta():
        return None
    # Exact rational arithmetic on microseconds, rounded once.
    return float(100 * Fraction(up // _MICROSECOND, known // _MICROSECOND))


def component_segments(
    *,
    component: HealthComponentState,
    start: dt.datetime,
    end: dt.datetime,
    stale_after: dt.timedelta | None = None,
) -> list[Segment]:
    """The recorded status of ``component`` over ``[start, end)`` (two queries)."""
    transitions = HealthTransition.objects.filter(component=component)
    initial = (
        transitions.filter(created_at__lte=start)
        .order_by("-created_at", "-id")
        .values_list("to_status", flat=True)
        .first()
    )
    changes = list(
        transitions.filter(created_at__gt=start, created_at__lt=end)
        .order_by("created_at", "id")
        .values_list("created_at", "to_status")
    )
    stale_after = monitor_stale_after() if stale_after is None else stale_after
    known_until = component.checked_at + stale_after if component.checked_at else start
    return status_segments(
        changes=changes,
        start=start,
        end=end,
        initial=initial or HealthStatus.UNKNOWN,
        known_until=known_until,
    )


def component_uptime(
    *,
    component: HealthComponentState,
    now: dt.datetime,
    windows: Sequence[dt.timedelta] = UPTIME_WINDOWS,
    stale_after: dt.timedelta | None = None,
) -> dict[dt.timedelta, float | None]:
    """Uptime % of ``component`` over each window ending ``now``."""
    segments = component_segments(
        component=component, start=now - max(windows), end=now, stale_after=stale_after
    )
    return {
        window: uptime_percent(clip_segments(segments, start=now - window, end=now))
        for window in windows
    }
