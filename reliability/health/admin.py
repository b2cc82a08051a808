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

from reliability.health.history import monitor_stale_after
from reliability.health.uptime import (
    UPTIME_WINDOWS,
    Segment,
    component_segments,
    component_uptime,
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


def timeline_svg(
    segments: list[Segment],
    *,
    start: dt.datetime,
    end: dt.datetime,
    label: str,
    width: int = 300,
    height: int = 14,
) -> str:
    """A small server-rendered SVG: one coloured bar per status segment of ``[start, end)``."""
    total = (end - start).total_seconds() or 1.0
    bars = [
        {
            "x": (s.start - start).total_seconds() / total * width,
            "width": max(0.5, s.duration.total_seconds() / total * width),
            "colour": STATUS_COLOURS.get(s.status, "#adb5bd"),
            "status": s.status,
            "title": (
                f"{s.status}: {s.start:%Y-%m-%d %H:%M:%S} to {s.end:%Y-%m-%d %H:%M:%S} UTC "
                f"({format_duration(s.duration)})"
            ),
        }
        for s in segments
    ]
    return render_to_string(
        "reliability/health_timeline.html",
        {"bars": bars, "width": width, "height": height, "start": start, "label": label},
    )


def format_uptime(value: float | None) -> str:
    if value is None:
        return "no data"
    if value == 100.0:
        return "100 %"
    return f"{min(value, 99.999):.3f} %"


class ReadOnlyAdmin(admin.ModelAdmin):
    """History (breaker transitions, health, heartbeats) is written by the system, never by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class HealthComponentStateAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "status_display",
        "since_display",
        "message",
        "uptime_1h",
        "uptime_24h",
        "uptime_7d",
        "timeline_24h",
        "checked_at",
    ]
    list_display_links = ["name"]
    fields = [
        "name",
        "status_display",
        "critical",
        "since_display",
        "checked_at",
        "latency_ms",
        "message",
        "detail",
        "uptime_summary",
        "timeline_24h",
        "timeline_7d",
        "recent_transitions",
    ]
    readonly_fields = fields

    def _uptime(self, component: HealthComponentState) -> dict[dt.timedelta, float | None]:
        cached = getattr(component, "_uptime_cache", None)
        if cached is None:
            cached = component_uptime(component=component, now=timezone.now())
            component._uptime_cache = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="status", ordering="status")
    def status_display(self, component: HealthComponentState) -> str:
        stale = (
            component.checked_at is None
            or timezone.now() - component.checked_at > monitor_stale_after()
        )
        badge = status_badge(component.status)
        if stale and component.status != HealthStatus.UNKNOWN:
            return format_html('{} <span style="color:#868e96">(no recent data)</span>', badge)
        return badge

    @admin.display(description="since", ordering="since")
    def since_display(self, component: HealthComponentState) -> str:
        lasted = format_duration(timezone.now() - component.since)
        return f"{component.since:%Y-%m-%d %H:%M:%S} UTC ({lasted})"

    @admin.display(description="uptime 1 h")
    def uptime_1h(self, component: HealthComponentState) -> str:
        return format_uptime(self._uptime(component)[UPTIME_WINDOWS[0]])

    @admin.display(description="uptime 24 h")
    def uptime_24h(self, component: HealthComponentState) -> str:
        return format_uptime(self._uptime(component)[UPTIME_WINDOWS[1]])

    @admin.display(description="uptime 7 d")
    def uptime_7d(self, component: HealthComponentState) -> str:
        return format_uptime(self._uptime(component)[UPTIME_WINDOWS[2]])

    @admin.display(description="uptime (healthy or degraded, of the time observed)")
    def uptime_summary(self, component: HealthComponentState) -> str:
        uptime = self._uptime(component)
        return " / ".join(
            f"{label}: {format_uptime(uptime[window])}"
            for label, window in zip(("1 h", "24 h", "7 d"), UPTIME_WINDOWS, strict=True)
        )

    def _timeline(self, component: HealthComponentState, window: dt.timedelta, label: str) -> str:
        end = timezone.now()
        start = end - window
        segments = component_segments(component=component, start=start, end=end)
        return timeline_svg(segments, start=start, end=end, label=f"{component.name}, {label}")

    @admin.display(description="last 24 h")
    def timeline_24h(self, component: HealthComponentState) -> str:
        return self._timeline(component, dt.timedelta(hours=24), "last 24 hours")

    @admin.display(description="last 7 days")
    def timeline_7d(self, component: HealthComponentState) -> str:
        return self._timeline(component, dt.timedelta(days=7), "last 7 days")

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
    list_display = ["created_at", "component", "from_status", "to_status_display", "message"]
    list_filter = ["component", "to_status"]
    search_fields = ["message", "detail"]
    date_hierarchy = "created_at"
    list_select_related = ["component"]
    fields = ["component", "created_at", "from_status", "to_status", "message", "detail"]

    @admin.display(description="to", ordering="to_status")
    def to_status_display(self, transition: HealthTransition) -> str:
        return status_badge(transition.to_status)


class HealthSampleAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "component", "status_display", "latency_ms"]
    list_filter = ["component", "status"]
    date_hierarchy = "created_at"
    list_select_related = ["component"]
    show_full_result_count = False

    @admin.display(description="status", ordering="status")
    def status_display(self, sample: HealthSample) -> str:
        return status_badge(sample.status)


class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = [
        "worker_id",
        "host",
        "pid",
        "alive",
        "started_at",
        "last_seen_at",
        "stopped_at",
    ]
    list_filter = ["host"]
    search_fields = ["worker_id", "host"]

    @admin.display(description="alive", boolean=True)
    def alive(self, heartbeat: WorkerHeartbeat) -> bool:
        stale = dt.timedelta(seconds=settings.EIDOLON_HEALTH_WORKER_STALE_SECONDS)
        return heartbeat.stopped_at is None and timezone.now() - heartbeat.last_seen_at <= stale


def register_health_pages(site: admin.AdminSite) -> None:
    site.register(HealthComponentState, HealthComponentStateAdmin)
    site.register(HealthTransition, HealthTransitionAdmin)
    site.register(HealthSample, HealthSampleAdmin)
    site.register(WorkerHeartbeat, WorkerHeartbeatAdmin)
