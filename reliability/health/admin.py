"""Health history in the admin (read-only): per component its current status, uptime over the
last hour, day and week, a timeline, and its transitions; samples and worker heartbeats.

``register_health_pages`` puts them on an admin site (``reliability/admin.py`` does);
``ReadOnlyAdmin`` serves the breaker history too."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from reliability.display import time_column
from reliability.health.history import monitor_stale_after
from reliability.health.uptime import (
    Shares,
    component_segments,
    format_shares,
    time_cells,
    time_shares,
)
from reliability.models import (
    HealthComponentState,
    HealthSample,
    HealthStatus,
    HealthTransition,
    WorkerHeartbeat,
)

STATUS_COLOURS = {
    HealthStatus.HEALTHY: "#2b8a3e",
    HealthStatus.DEGRADED: "#e67700",
    HealthStatus.UNHEALTHY: "#c92a2a",
    HealthStatus.UNKNOWN: "#adb5bd",
}
RECENT_TRANSITIONS = 50


def status_badge(status: str) -> str:
    return format_html(
        '<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(status, "inherit"), status
    )


def format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


CELL_GAP = 2


def timeline_svg(
    cells: list[Shares],
    *,
    label: str,
    cell_width: int,
    height: int = 18,
    tick: str = "%H",
) -> str:
    """A server-rendered SVG: one cell per hour (or day), each filled bottom-up in proportion to
    its time up (green, or orange when degraded), down (red) and unknown (grey)."""
    drawn = []
    for index, cell in enumerate(cells):
        x = index * (cell_width + CELL_GAP)
        up_colour = STATUS_COLOURS[HealthStatus.DEGRADED if cell.degraded else HealthStatus.HEALTHY]
        stack, top = [], float(height)
        for share, colour, status in (
            (cell.up, up_colour, "up"),
            (cell.down, STATUS_COLOURS[HealthStatus.UNHEALTHY], "down"),
        ):
            size = height * share / 100
            if size > 0:
                top -= size
                stack.append(
                    {"y": top, "height": max(size, 1.0), "colour": colour, "status": status}
                )
        drawn.append(
            {
                "x": x,
                "stack": stack,
                "worst": cell.worst,
                "tick": cell.start.strftime(tick),
                "title": (
                    f"{cell.start:%Y-%m-%d %H:%M} to {cell.end:%H:%M} UTC: {format_shares(cell)}"
                ),
            }
        )
    width = len(cells) * (cell_width + CELL_GAP) - CELL_GAP
    return render_to_string(
        "reliability/health_timeline.html",
        {
            "cells": drawn,
            "cell_width": cell_width,
            "width": width,
            "height": height,
            "label": label,
            "unknown_colour": STATUS_COLOURS[HealthStatus.UNKNOWN],
        },
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """History (breaker transitions, health, heartbeats) is written by the system, never by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


WEEK = dt.timedelta(days=7)
DAY = dt.timedelta(hours=24)


class HealthComponentStateAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "status_display",
        "critical_display",
        "since_display",
        "shares_24h",
        "shares_7d",
        "timeline_24h",
        "checked",
    ]
    list_display_links = ["name"]
    fields = [
        "name",
        "status_display",
        "critical_display",
        "since_display",
        "checked",
        "latency_ms",
        "message",
        "detail",
        "uptime_summary",
        "timeline_24h_wide",
        "timeline_7d",
        "recent_transitions",
    ]
    readonly_fields = fields
    checked = time_column("checked_at", "last checked", relative=True)
    since_display = time_column("since", "since", relative=True)

    def _segments(self, component: HealthComponentState) -> tuple[dt.datetime, list]:
        """The last week of ``component`` (one pair of queries per component and request)."""
        cached = getattr(component, "_week_cache", None)
        if cached is None:
            now = timezone.now().replace(microsecond=0)
            segments = component_segments(component=component, start=now - WEEK, end=now)
            cached = component._week_cache = (now, segments)  # type: ignore[attr-defined]
        return cached

    def _shares(self, component: HealthComponentState, window: dt.timedelta) -> Shares:
        now, segments = self._segments(component)
        return time_shares(segments, start=now - window, end=now)

    @admin.display(description="status", ordering="status")
    def status_display(self, component: HealthComponentState) -> str:
        stale = (
            component.checked_at is None
            or timezone.now() - component.checked_at > monitor_stale_after()
        )
        badge = status_badge(component.status)
        if stale and component.status != HealthStatus.UNKNOWN:
            return format_html('{} <span class="quiet">(no recent data)</span>', badge)
        return badge

    @admin.display(description="critical", ordering="critical")
    def critical_display(self, component: HealthComponentState) -> str:
        return "critical" if component.critical else "non-critical"

    @admin.display(description="last 24 h")
    def shares_24h(self, component: HealthComponentState) -> str:
        return format_shares(self._shares(component, DAY))

    @admin.display(description="last 7 d")
    def shares_7d(self, component: HealthComponentState) -> str:
        return format_shares(self._shares(component, WEEK))

    @admin.display(description="share of time up, down and unknown (no observations)")
    def uptime_summary(self, component: HealthComponentState) -> str:
        return format_html(
            "last hour: {}<br>last 24 h: {}<br>last 7 d: {}",
            format_shares(self._shares(component, dt.timedelta(hours=1))),
            format_shares(self._shares(component, DAY)),
            format_shares(self._shares(component, WEEK)),
        )

    def _timeline(
        self, component: HealthComponentState, *, cell: dt.timedelta, count: int, width: int
    ) -> str:
        now, segments = self._segments(component)
        # Cells on whole hours (days), the last one running to now.
        end = now.replace(minute=0, second=0) + dt.timedelta(hours=1)
        if cell >= DAY:
            end = now.replace(hour=0, minute=0, second=0) + DAY
        cells = time_cells(segments, end=end, cell=cell, count=count, now=now)
        return timeline_svg(
            cells,
            label=f"{component.name}, last {count} {'days' if cell >= DAY else 'hours'}",
            cell_width=width,
            tick="%b %d" if cell >= DAY else "%H",
        )

    @admin.display(description="last 24 h, hourly")
    def timeline_24h(self, component: HealthComponentState) -> str:
        return self._timeline(component, cell=dt.timedelta(hours=1), count=24, width=9)

    @admin.display(description="last 24 h, hourly (UTC)")
    def timeline_24h_wide(self, component: HealthComponentState) -> str:
        return self._timeline(component, cell=dt.timedelta(hours=1), count=24, width=28)

    @admin.display(description="last 7 days, daily (UTC)")
    def timeline_7d(self, component: HealthComponentState) -> str:
        return self._timeline(component, cell=DAY, count=7, width=98)

    @admin.display(description="transitions (newest first)")
    def recent_transitions(self, component: HealthComponentState) -> str:
        transitions = list(
            HealthTransition.objects.filter(component=component).order_by("-created_at", "-id")[
                :RECENT_TRANSITIONS
            ]
        )
        rows: list[dict[str, Any]] = []
        now = timezone.now()
        observed_until = (component.checked_at or now) + monitor_stale_after()
        until, current = (
            (now, "ongoing") if observed_until >= now else (observed_until, "then no data")
        )
        for transition in transitions:  # newest first: each lasted until the next one
            lasted = format_duration(max(dt.timedelta(), until - transition.created_at))
            rows.append(
                {
                    "created_at": transition.created_at,
                    "from_status": transition.from_status,
                    "to_status": transition.to_status,
                    "colour": STATUS_COLOURS.get(transition.to_status, "inherit"),
                    "lasted": lasted if rows else f"{lasted} ({current})",
                    "message": transition.message,
                    "detail": transition.detail,
                }
            )
            until = transition.created_at
        all_url = (
            reverse("admin:reliability_healthtransition_changelist")
            + f"?component__id__exact={component.pk}"
        )
        return render_to_string(
            "reliability/health_transitions.html",
            {"transitions": rows, "show_detail": True, "all_url": all_url},
        )


class HealthTransitionAdmin(ReadOnlyAdmin):
    list_display = ["when", "component_name", "from_status", "to_status_display", "message"]
    list_filter = ["component", "to_status"]
    search_fields = ["message", "detail"]
    date_hierarchy = "created_at"
    list_select_related = ["component"]
    fields = ["component_name", "when", "from_status", "to_status", "message", "detail"]
    when = time_column("created_at", "when", relative=True)

    @admin.display(description="component", ordering="component__name")
    def component_name(self, transition: HealthTransition) -> str:
        return transition.component.name

    @admin.display(description="to", ordering="to_status")
    def to_status_display(self, transition: HealthTransition) -> str:
        return status_badge(transition.to_status)


class HealthSampleAdmin(ReadOnlyAdmin):
    list_display = ["when", "component_name", "status_display", "latency_ms"]
    list_filter = ["component", "status"]
    date_hierarchy = "created_at"
    list_select_related = ["component"]
    show_full_result_count = False
    fields = ["component_name", "when", "status", "latency_ms"]
    when = time_column("created_at", "when", relative=True)

    @admin.display(description="component", ordering="component__name")
    def component_name(self, sample: HealthSample) -> str:
        return sample.component.name

    @admin.display(description="status", ordering="status")
    def status_display(self, sample: HealthSample) -> str:
        return status_badge(sample.status)


class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = [
        "worker_id",
        "host",
        "pid",
        "alive",
        "last_seen",
        "started",
        "stopped",
    ]
    list_filter = ["host"]
    search_fields = ["worker_id", "host"]
    fields = ["worker_id", "host", "pid", "alive", "last_seen", "started", "stopped"]
    last_seen = time_column("last_seen_at", "last seen", relative=True)
    started = time_column("started_at", "started")
    stopped = time_column("stopped_at", "stopped")

    @admin.display(description="alive", boolean=True)
    def alive(self, heartbeat: WorkerHeartbeat) -> bool:
        stale = dt.timedelta(seconds=settings.EIDOLON_HEALTH_WORKER_STALE_SECONDS)
        return heartbeat.stopped_at is None and timezone.now() - heartbeat.last_seen_at <= stale


def register_health_pages(site: admin.AdminSite) -> None:
    site.register(HealthComponentState, HealthComponentStateAdmin)
    site.register(HealthTransition, HealthTransitionAdmin)
    site.register(HealthSample, HealthSampleAdmin)
    site.register(WorkerHeartbeat, WorkerHeartbeatAdmin)
