"""Read-only views of shared reliability state, for the CLI, dashboards and health checks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reliability.breaker import window_stats
from reliability.exceptions import format_epoch
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    HEALTH_COMPONENT_FIELDS,
    CircuitBreaker,
    HealthComponentState,
    RateLimitBudget,
)
from reliability.ratelimit import utc_day_start
from reliability.serving import MemberState, Serving, family_serving


def breaker_status(breaker: CircuitBreaker, *, now: float) -> dict[str, Any]:
    stats = window_stats(breaker, now=now)
    last = breaker.transitions.order_by("-created_at", "-id").first()
    return {
        "name": breaker.name,
        "state": breaker.state,
        "consecutive_failures": breaker.consecutive_failures,
        "window_calls": round(stats.calls, 1),
        "failure_rate_percent": round(stats.failure_rate, 1),
        "slow_call_rate_percent": round(stats.slow_rate, 1),
        "open_until": breaker.open_until,
        "half_open_in_flight": breaker.half_open_in_flight,
        "totals": {
            "successes": breaker.total_successes,
            "failures": breaker.total_failures,
            "ignored": breaker.total_ignored,
            "rejected": breaker.total_rejected,
        },
        "last_transition": None
        if last is None
        else {
            "at": last.created_at.isoformat(),
            "from": last.from_state,
            "to": last.to_state,
            "reason": last.reason,
            "actor": last.actor,
        },
        "settings": {
            "failure_threshold": breaker.failure_threshold,
            "failure_rate_threshold": breaker.failure_rate_threshold,
            "window": f"{breaker.window_size} {'calls' if breaker.window_type == 'count' else 's'}",
            "minimum_calls": breaker.minimum_calls,
            "slow_call_duration": breaker.slow_call_duration,
            "slow_call_rate_threshold": breaker.slow_call_rate_threshold,
            "recovery_timeout": breaker.recovery_timeout,
            "half_open_max_calls": breaker.half_open_max_calls,
            "half_open_success_threshold": breaker.half_open_success_threshold,
            "half_open_max_duration": breaker.half_open_max_duration,
        },
    }


def _plain(value: Any) -> Any:
    """A limit as JSON carries it: dollar caps (``Decimal``) as numbers."""
    return float(value) if isinstance(value, Decimal) else value


def budget_status(budget: RateLimitBudget, *, now: float) -> dict[str, Any]:
    in_window = now - budget.window_started_at < budget.window_seconds
    same_day = budget.day_started_at >= utc_day_start(now)
    return {
        "name": budget.name,
        "limits": {field: _plain(getattr(budget, field)) for field in BUDGET_LIMIT_FIELDS},
        "window": {
            "requests": budget.window_requests if in_window else 0,
            "input_tokens": budget.window_input_tokens if in_window else 0,
            "output_tokens": budget.window_output_tokens if in_window else 0,
        },
        "today": {
            "requests": budget.day_requests if same_day else 0,
            "tokens": budget.day_tokens if same_day else 0,
            "cost_usd": float(budget.day_cost_usd) if same_day else 0.0,
        },
        "next_slot_in_s": round(max(0.0, budget.next_request_at - now), 3),
        "paused_until": budget.paused_until if budget.paused_until > now else None,
        "pause_reason": budget.pause_reason if budget.paused_until > now else "",
        "observed_limits": {
            "requests": budget.observed_requests_limit,
            "input_tokens": budget.observed_input_tokens_limit,
            "output_tokens": budget.observed_output_tokens_limit,
        },
    }


def reliability_snapshot(*, now: float) -> dict[str, Any]:
    return {
        "ai": family_serving("anthropic", now=now).as_dict(),
        "breakers": [breaker_status(b, now=now) for b in CircuitBreaker.objects.all()],
        "budgets": [budget_status(b, now=now) for b in RateLimitBudget.objects.all()],
    }


def serving_line(serving: Serving) -> str:
    """``reviewing on claude-haiku-4-5 (claude-sonnet-5-5: open until …)``: which model new
    reviews go to, and why the ones before it are passed over."""
    chosen = serving.serving
    if chosen is None:
        refusing = ", ".join(f"{m.model} {m.state}" for m in serving.members)
        return f"no model admits reviews ({refusing or 'no model configured'})"
    passed_over = serving.members[: serving.members.index(chosen)]
    line = f"reviewing on {chosen.model}"
    if passed_over:
        line += " (" + ", ".join(_refusing(m) for m in passed_over) + ")"
    return line


def _refusing(member: MemberState) -> str:
    if member.open_until is not None:
        return f"{member.model} open until {format_epoch(member.open_until)}"
    return f"{member.model} {member.state.replace('_', ' ')}"


def health_components() -> list[dict[str, Any]]:
    """Each checked component's status as the health monitor last recorded it (for staff:
    ``detail`` holds the redacted error)."""
    return [
        {
            **{field: getattr(component, field) for field in HEALTH_COMPONENT_FIELDS},
            "since": component.since.isoformat(),
            "checked_at": component.checked_at.isoformat() if component.checked_at else None,
        }
        for component in HealthComponentState.objects.all()
    ]
