"""Operator controls: tune breakers and budgets, reset / force open / disable / enable breakers,
read transition history. Thin: every change goes through reliability's service functions."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib import admin, messages
from django.utils.html import format_html

from reliability.breaker import window_stats
from reliability.controls import (
    OPERATOR_ACTIONS,
    BreakerAction,
    BreakerActionError,
    budget_resume,
    save_breaker_settings,
    save_budget_limits,
)
from reliability.exceptions import format_epoch
from reliability.health.admin import ReadOnlyAdmin, register_health_pages
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    RateLimitBudget,
)
from reliability.status import budget_status

# The health pages: components (status, uptime, timelines), transitions, samples, heartbeats.
register_health_pages(admin.site)

STATE_COLOURS = {
    BreakerState.CLOSED: "#2b8a3e",
    BreakerState.HALF_OPEN: "#e67700",
    BreakerState.OPEN: "#c92a2a",
    BreakerState.FORCED_OPEN: "#862e9c",
    BreakerState.DISABLED: "#868e96",
}


def coloured_state(breaker: CircuitBreaker) -> str:
    return format_html(
        '<strong style="color:{}">{}</strong>',
        STATE_COLOURS.get(breaker.state, "inherit"),
        breaker.get_state_display(),
    )


def _admin_action(action: BreakerAction) -> Callable[..., None]:
    """``action`` as an admin action of the same name, on the selected breakers."""

    @admin.action(description=f"{action.label} ({action.effect})", permissions=["change"])
    def operate(modeladmin: CircuitBreakerAdmin, request, queryset) -> None:
        modeladmin._operate(request, queryset, action)

    operate.__name__ = action.key  # the action's name in the admin's form
    return operate


class BreakerTransitionInline(admin.TabularInline):
    model = BreakerTransition
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-created_at", "-id"]
    fields = ["created_at", "from_state", "to_state", "actor", "reason"]
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-created_at", "-id")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "state_badge",
        "consecutive_failures",
        "failure_rate",
        "calls",
        "total_rejected",
        "last_transition",
        "open_until_display",
    ]
    list_display_links = ["name"]
    actions = [_admin_action(action) for action in OPERATOR_ACTIONS.values()]
    inlines = [BreakerTransitionInline]
    search_fields = ["name"]
    readonly_fields = [
        "name",
        "state_badge",
        "open_until_display",
        "failure_rate",
        "consecutive_failures",
        "half_open_in_flight",
        "half_open_successes",
        "calls",
        "total_rejected",
        "generation",
    ]
    fieldsets = [
        (
            "Live state",
            {
                "fields": [
                    "name",
                    "state_badge",
                    "open_until_display",
                    ("consecutive_failures", "failure_rate"),
                    ("half_open_in_flight", "half_open_successes"),
                    ("calls", "total_rejected"),
                    "generation",
                ]
            },
        ),
        ("Opening", {"fields": ["failure_threshold", "failure_rate_threshold", "minimum_calls"]}),
        ("Sliding window", {"fields": ["window_type", "window_size"]}),
        ("Slow calls", {"fields": ["slow_call_duration", "slow_call_rate_threshold"]}),
        (
            "Recovery",
            {
                "fields": [
                    "recovery_timeout",
                    "half_open_max_calls",
                    "half_open_success_threshold",
                    "half_open_max_duration",
                ]
            },
        ),
    ]

    def has_add_permission(self, request) -> bool:
        return False  # breakers are created on first use, named by the code that calls out

    @admin.display(description="state", ordering="state")
    def state_badge(self, breaker: CircuitBreaker) -> str:
        return coloured_state(breaker)

    @admin.display(description="failure rate")
    def failure_rate(self, breaker: CircuitBreaker) -> str:
        stats = window_stats(breaker, now=time.time())
        return f"{stats.failure_rate:.0f}% of {stats.calls:.0f} calls"

    @admin.display(description="calls (ok / failed / ignored)")
    def calls(self, breaker: CircuitBreaker) -> str:
        return f"{breaker.total_successes} / {breaker.total_failures} / {breaker.total_ignored}"

    @admin.display(description="last transition")
    def last_transition(self, breaker: CircuitBreaker) -> str:
        transition = breaker.transitions.order_by("-created_at", "-id").first()
        if transition is None:
            return "-"
        when = f"{transition.created_at:%Y-%m-%d %H:%M:%S}"
        return f"{when} → {transition.to_state} ({transition.actor})"

    @admin.display(description="open until")
    def open_until_display(self, breaker: CircuitBreaker) -> str:
        if breaker.state == BreakerState.FORCED_OPEN:
            return "until an operator enables it"
        return format_epoch(breaker.open_until) if breaker.open_until else "-"

    def save_model(self, request, obj, form, change) -> None:
        save_breaker_settings(obj, actor=request.user.get_username())

    def _operate(self, request, queryset, action: BreakerAction) -> None:
        actor = request.user.get_username()
        for breaker in queryset:
            try:
                action(
                    name=breaker.name, actor=actor, reason=f"{action.done} in the admin by {actor}"
                )
            except BreakerActionError as error:
                self.message_user(request, str(error), messages.WARNING)
                continue
            self.log_change(request, breaker, f"{action.done} the breaker")
            self.message_user(
                request, f"Breaker '{breaker.name}': {action.done}.", messages.SUCCESS
            )


@admin.register(BreakerTransition)
class BreakerTransitionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "breaker", "from_state", "to_state", "actor", "reason"]
    list_filter = ["breaker", "to_state", "actor"]
    search_fields = ["reason", "actor"]
    date_hierarchy = "created_at"


def _limits(requests: object, input_tokens: object, output_tokens: object, *, per: str) -> str:
    """A budget's limits, one per dimension: ``50 req, 40000 in, 8000 out per 60 s``."""
    return f"{requests} req, {input_tokens} in, {output_tokens} out per {per}"


def _usage(requests: object, input_tokens: object, output_tokens: object) -> str:
    """A budget's use, one figure per dimension: ``12 requests, 3400 in / 800 out tokens``."""
    return f"{requests} requests, {input_tokens} in / {output_tokens} out tokens"


@admin.register(RateLimitBudget)
class RateLimitBudgetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "limits",
        "usage_this_window",
        "usage_today",
        "queue_ahead",
        "paused",
    ]
    actions = ["resume_now"]
    readonly_fields = [
        "name",
        "usage_this_window",
        "usage_today",
        "queue_ahead",
        "paused",
        "pause_reason",
        "observed_limits",
        "totals",
    ]
    fieldsets = [
        (
            "Live usage",
            {
                "fields": [
                    "name",
                    "usage_this_window",
                    "usage_today",
                    "queue_ahead",
                    ("paused", "pause_reason"),
                    "observed_limits",
                    "totals",
                ]
            },
        ),
        ("Limits", {"fields": list(BUDGET_LIMIT_FIELDS)}),
    ]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="limits per window / day")
    def limits(self, budget: RateLimitBudget) -> str:
        per_window = _limits(
            budget.requests_per_window,
            budget.input_tokens_per_window,
            budget.output_tokens_per_window,
            per=f"{budget.window_seconds:g} s",
        )
        return f"{per_window}; {budget.requests_per_day} req/day"

    @admin.display(description="this window")
    def usage_this_window(self, budget: RateLimitBudget) -> str:
        window = budget_status(budget, now=time.time())["window"]
        requests = f"{window['requests']} of {budget.requests_per_window}"
        return _usage(requests, window["input_tokens"], window["output_tokens"])

    @admin.display(description="today (UTC)")
    def usage_today(self, budget: RateLimitBudget) -> str:
        today = budget_status(budget, now=time.time())["today"]
        cap = f" of {budget.tokens_per_day}" if budget.tokens_per_day else ""
        requests = f"{today['requests']} of {budget.requests_per_day} requests"
        return f"{requests}, {today['tokens']}{cap} tokens"

    @admin.display(description="queue ahead")
    def queue_ahead(self, budget: RateLimitBudget) -> str:
        ahead = budget_status(budget, now=time.time())["next_slot_in_s"]
        return f"next slot in {ahead:.1f} s" if ahead > 0 else "a slot is free now"

    @admin.display(description="paused until")
    def paused(self, budget: RateLimitBudget) -> str:
        until = budget_status(budget, now=time.time())["paused_until"]
        return format_epoch(until) if until else "-"

    @admin.display(description="limits reported by the API")
    def observed_limits(self, budget: RateLimitBudget) -> str:
        return _limits(
            budget.observed_requests_limit or "-",
            budget.observed_input_tokens_limit or "-",
            budget.observed_output_tokens_limit or "-",
            per="minute",
        )

    @admin.display(description="lifetime")
    def totals(self, budget: RateLimitBudget) -> str:
        return _usage(budget.total_requests, budget.total_input_tokens, budget.total_output_tokens)

    def save_model(self, request, obj, form, change) -> None:
        save_budget_limits(obj, actor=request.user.get_username())

    @admin.action(description="Resume now (end a pause)", permissions=["change"])
    def resume_now(self, request, queryset) -> None:
        actor = request.user.get_username()
        for budget in queryset:
            budget_resume(name=budget.name, actor=actor)
            self.log_change(request, budget, "resumed the budget")
        self.message_user(request, "Resumed.", messages.SUCCESS)


admin.site.site_header = "Eidolon operations"
admin.site.site_title = "Eidolon"
admin.site.index_title = "Reliability controls and analyses"


# --- prices (kept in one block: the price table's admin)
from reliability.models import PRICE_FIELDS, ModelPrice  # noqa: E402


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The price table, $ per million tokens. An edit prices the calls recorded after it; a
    call's cost is frozen when it is recorded. Prices below zero are refused (the model's
    validators)."""

    list_display = ["model", *PRICE_FIELDS, "updated_at"]
    search_fields = ["model"]
    readonly_fields = ["updated_at"]
