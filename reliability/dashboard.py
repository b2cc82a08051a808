"""What the operator dashboard shows: breakers with the actions that apply to them, budgets with
their usage per dimension, and each health component with its 24-hour uptime. Read-only; its
buttons go through ``reliability.controls``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from reliability.clock import epoch_datetime
from reliability.controls import OPERATOR_ACTIONS, BreakerAction
from reliability.health.uptime import component_uptime
from reliability.models import (
    HEALTH_COMPONENT_FIELDS,
    BreakerState,
    CircuitBreaker,
    HealthComponentState,
    RateLimitBudget,
)
from reliability.serving import family_serving
from reliability.status import breaker_status, budget_status, serving_line

UPTIME_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Usage:
    """How much of one limit of a budget is used."""

    label: str
    used: int
    limit: int | None

    @property
    def percent(self) -> float | None:
        if not self.limit:
            return None
        return min(100.0, round(100.0 * self.used / self.limit, 1))


def breaker_actions(state: str) -> list[BreakerAction]:
    """The operator actions that change something for a breaker in ``state``."""
    keys = ["reset"]
    if state != BreakerState.FORCED_OPEN:
        keys.append("force_open")
    stopped = state in (BreakerState.FORCED_OPEN, BreakerState.DISABLED)
    keys.append("enable" if stopped else "disable")
    return [OPERATOR_ACTIONS[key] for key in keys]


def breaker_panel(breaker: CircuitBreaker, *, now: float) -> dict[str, Any]:
    status = breaker_status(breaker, now=now)
    open_until = status["open_until"]
    return {
        **status,
        "open_until_at": epoch_datetime(open_until) if open_until else None,
        "actions": breaker_actions(breaker.state),
    }


def budget_usage(budget: RateLimitBudget, status: dict[str, Any]) -> list[Usage]:
    """Each limit's usage; token limits only for budgets that have ever counted tokens."""
    limits, window, today = status["limits"], status["window"], status["today"]
    usage = [
        Usage("requests / window", window["requests"], limits["requests_per_window"]),
        Usage("requests today", today["requests"], limits["requests_per_day"]),
    ]
    if budget.total_input_tokens or budget.total_output_tokens:
        for direction in ("input", "output"):
            used, limit = window[f"{direction}_tokens"], limits[f"{direction}_tokens_per_window"]
            usage.append(Usage(f"{direction} tokens / window", used, limit))
        usage.append(Usage("tokens today", today["tokens"], limits["tokens_per_day"]))
    return usage


def budget_panel(budget: RateLimitBudget, *, now: float) -> dict[str, Any]:
    status = budget_status(budget, now=now)
    paused_until = status["paused_until"]
    return {
        **status,
        "usage": budget_usage(budget, status),
        "paused_until_at": epoch_datetime(paused_until) if paused_until else None,
    }


def health_panel(component: HealthComponentState, *, at: dt.datetime) -> dict[str, Any]:
    uptime = component_uptime(component=component, now=at, windows=(UPTIME_WINDOW,))
    return {
        **{field: getattr(component, field) for field in HEALTH_COMPONENT_FIELDS},
        "since": component.since,
        "checked_at": component.checked_at,
        "uptime_24h": uptime[UPTIME_WINDOW],
    }


def serving_panel(*, now: float, family: str = "anthropic") -> dict[str, Any]:
    """Which model new reviews go to, coloured as its state: the primary's breaker state while
    it serves, ``degraded`` while a fallback does, ``open`` when none admits."""
    serving = family_serving(family, now=now)
    if serving.serving is None:
        colour = BreakerState.OPEN
    elif serving.degraded:
        colour = "degraded"
    else:
        colour = serving.serving.state
    return {
        **serving.as_dict(),
        "line": serving_line(serving),
        "colour": colour,
        "chain": [
            {"model": m.model, "state": m.state, "serving": m is serving.serving}
            for m in serving.members
        ],
    }


def dashboard_snapshot(*, now: float) -> dict[str, Any]:
    """Breakers, budgets and health components as the dashboard shows them at ``now``."""
    at = epoch_datetime(now)
    return {
        "ai": serving_panel(now=now),
        "breakers": [breaker_panel(b, now=now) for b in CircuitBreaker.objects.order_by("name")],
        "budgets": [budget_panel(b, now=now) for b in RateLimitBudget.objects.order_by("name")],
        # "overall" first, then the components by name.
        "health": [
            health_panel(c, at=at)
            for c in sorted(
                HealthComponentState.objects.all(), key=lambda c: (c.name != "overall", c.name)
            )
        ],
    }
