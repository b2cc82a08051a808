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


@dataclasses.dataclass(frozen=True)
class Shares:
    """How a stretch of time divides between up, down and unknown, in percent of all of it."""

    start: dt.datetime
    end: dt.datetime
    up: float
    down: float
    unknown: float
    degraded: float  # part of ``up``

    @property
    def worst(self) -> str:
        """The status to colour this stretch by: the worst one seen in it."""
        if self.down:
            return HealthStatus.UNHEALTHY
        if self.degraded:
            return HealthStatus.DEGRADED
        return HealthStatus.HEALTHY if self.up else HealthStatus.UNKNOWN


def time_shares(segments: Sequence[Segment], *, start: dt.datetime, end: dt.datetime) -> Shares:
    """The shares of ``[start, end)``: unknown time is counted as its own share, not dropped."""
    clipped = clip_segments(segments, start=start, end=end)
    total = (end - start) // _MICROSECOND or 1

    def share(statuses: frozenset[str]) -> Fraction:
        spent = sum((s.duration for s in clipped if s.status in statuses), dt.timedelta())
        return 100 * Fraction(spent // _MICROSECOND, total)

    up, down = share(UP_STATUSES), share(DOWN_STATUSES)
    degraded = share(frozenset({HealthStatus.DEGRADED}))
    # Whatever is neither up nor down is unknown, gaps between segments included.
    unknown = max(Fraction(0), 100 - up - down)
    return Shares(start, end, float(up), float(down), float(unknown), float(degraded))


def time_cells(
    segments: Sequence[Segment],
    *,
    end: dt.datetime,
    cell: dt.timedelta,
    count: int,
    now: dt.datetime | None = None,
) -> list[Shares]:
    """``count`` consecutive cells of length ``cell`` ending at ``end`` (oldest first); a cell
    still under way is shared out over its part until ``now``, not over the future."""
    starts = [end - cell * (count - index) for index in range(count)]
    return [
        time_shares(segments, start=at, end=min(at + cell, now) if now else at + cell)
        for at in starts
        if now is None or at < now
    ]


def format_shares(shares: Shares) -> str:
    """``up 97.9 % · unknown 2.1 %`` (down only when there was some)."""
    parts = [f"up {_percent(shares.up)}"]
    if shares.down:
        parts.append(f"down {_percent(shares.down)}")
    if shares.unknown:
        parts.append(f"unknown {_percent(shares.unknown)}")
    return " · ".join(parts)


def _percent(value: float) -> str:
    if value in (0.0, 100.0):
        return f"{value:.0f} %"
    return f"{min(max(value, 0.1), 99.9):.1f} %"  # never round a sliver to 0 or 100
