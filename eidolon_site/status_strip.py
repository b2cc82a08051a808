"""The status strip: what an operator wants to know first, on the admin index (in full) and on
the home page (the public part).

One function reads it all, in five short queries (three for the public strip, which reads no
budgets and no spend): the ``overall`` health component as the monitor last recorded it, every
breaker's state, every budget's day, the queued and running analyses, and what today's LLM
calls cost.

The public strip leaves out what an anonymous visitor has no business seeing: money, budgets
(their limits, usage and pause reasons say how much capacity the service buys) and any health
message or detail. It keeps the overall health (``/health`` says as much to anyone), each
breaker's state (why an analysis may be waiting) and how many analyses are queued and running.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from analyses.models import Analysis, AnalysisStatus, LLMCall
from reliability.clock import epoch_datetime
from reliability.health.history import monitor_stale_after
from reliability.models import CircuitBreaker, HealthComponentState, HealthStatus, RateLimitBudget
from reliability.ratelimit import utc_day_start
from reliability.views import Recent

OVERALL = "overall"  # the health component that sums up the others


@dataclass(frozen=True, kw_only=True)
class HealthLight:
    status: str  # a HealthStatus value; "unknown" when the monitor's last word is stale
    checked_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class BreakerLight:
    pk: int
    name: str
    state: str  # a BreakerState value, which names its colour class (state-<value>)


@dataclass(frozen=True, kw_only=True)
class BudgetDay:
    """One budget's use this UTC day."""

    pk: int
    name: str
    requests: int
    requests_per_day: int
    tokens: int
    tokens_per_day: int | None
    cost_usd: Decimal
    paused: bool
    usd_per_day: Decimal | None = None  # the daily spend cap, if any

    @property
    def requests_percent(self) -> float:
        if not self.requests_per_day:
            return 100.0
        return min(100.0, 100.0 * self.requests / self.requests_per_day)


@dataclass(frozen=True, kw_only=True)
class StatusStrip:
    health: HealthLight
    breakers: list[BreakerLight]
    budgets: list[BudgetDay]  # empty in the public strip
    running: int
    queued: int
    spend_today_usd: Decimal | None  # None in the public strip


def status_strip(*, public: bool, now: float | None = None) -> StatusStrip:
    """The strip at ``now`` (epoch seconds): in full for operators, or its public part."""
    now = time.time() if now is None else now
    today = utc_day_start(now)
    counts = dict(
        Analysis.objects.filter(status__in=(AnalysisStatus.QUEUED, AnalysisStatus.RUNNING))
        .order_by()
        .values_list("status")
        .annotate(count=Count("id"))
    )
    return StatusStrip(
        health=_health(now=now),
        breakers=[
            BreakerLight(pk=pk, name=name, state=state)
            for pk, name, state in CircuitBreaker.objects.order_by("name").values_list(
                "pk", "name", "state"
            )
        ],
        budgets=[] if public else _budget_days(today=today, now=now),
        running=counts.get(AnalysisStatus.RUNNING, 0),
        queued=counts.get(AnalysisStatus.QUEUED, 0),
        spend_today_usd=None if public else _spend_since(epoch_datetime(today)),
    )


# The home page is open to anyone: a burst of visitors costs one set of reads.
recent_public_strip = Recent(
    lambda: status_strip(public=True), ttl=lambda: settings.EIDOLON_STATUS_STRIP_CACHE_SECONDS
)


def _health(*, now: float) -> HealthLight:
    overall = (
        HealthComponentState.objects.filter(name=OVERALL).values("status", "checked_at").first()
    )
    checked_at = overall["checked_at"] if overall else None
    fresh = checked_at is not None and epoch_datetime(now) - checked_at <= monitor_stale_after()
    return HealthLight(
        status=overall["status"] if fresh else HealthStatus.UNKNOWN, checked_at=checked_at
    )


def _budget_days(*, today: float, now: float) -> list[BudgetDay]:
    days = []
    for budget in RateLimitBudget.objects.order_by("name"):
        same_day = budget.day_started_at >= today
        days.append(
            BudgetDay(
                pk=budget.pk,
                name=budget.name,
                requests=budget.day_requests if same_day else 0,
                requests_per_day=budget.requests_per_day,
                tokens=budget.day_tokens if same_day else 0,
                tokens_per_day=budget.tokens_per_day,
                cost_usd=budget.day_cost_usd if same_day else Decimal(0),
                paused=budget.paused_until > now,
                usd_per_day=budget.usd_per_day,
            )
        )
    return days


def _spend_since(start: dt.datetime) -> Decimal:
    """What the LLM calls recorded since ``start`` cost (unpriced calls count nothing)."""
    spent = LLMCall.objects.filter(created_at__gte=start).aggregate(total=Sum("cost_usd"))
    return spent["total"] or Decimal(0)


def admin_status_strip(request: HttpRequest) -> dict[str, SimpleLazyObject]:
    """Context processor: the full strip, read only if a template shows it (the admin index,
    which only staff reach)."""
    return {"admin_status_strip": SimpleLazyObject(lambda: status_strip(public=False))}
