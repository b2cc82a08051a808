"""Operator controls: tune breakers and budgets, reset / force open / disable / enable breakers
(the drastic ones after a confirmation page with a reason), read their history. Thin: every change
goes through ``reliability.controls``, which records it.

Decisions: breakers and budgets are system-owned (created on first use), so they have no Add and
no Delete; their change page keeps one Save, for their tunable settings only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.utils.html import format_html

from reliability.breaker import window_stats
from reliability.clock import epoch_datetime
from reliability.controls import (
    OPERATOR_ACTIONS,
    AlreadyInState,
    BreakerAction,
    BreakerActionError,
    budget_resume,
    control_history,
    describe_changes,
    may_operate_controls,
    save_breaker_settings,
    save_budget_limits,
)
from reliability.dashboard import breaker_actions
from reliability.display import (
    format_time,
    format_usd,
    relative_time,
    time_column,
    time_with_relative,
)
from reliability.families import family_of, member_of, members
from reliability.health.admin import ReadOnlyAdmin, register_health_pages
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    PRICE_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    ModelPrice,
    RateLimitBudget,
)
from reliability.ratelimit import utc_day_start
from reliability.serving import serving_member
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
NO_SAVE_AND_CONTINUE = {"show_save_and_continue": False, "show_save_and_add_another": False}


def state_badge_html(state: str, label: str) -> str:
    return format_html(
        '<span class="badge" style="background:{}">{}</span>',
        STATE_COLOURS.get(state, "#868e96"),
        label,
    )


def coloured_state(breaker: CircuitBreaker) -> str:
    return state_badge_html(breaker.state, breaker.get_state_display())


def epoch_with_relative(epoch: float) -> str:
    """A time stored as epoch seconds, in the one format: ``... UTC (in 40 s)``."""
    return time_with_relative(epoch_datetime(epoch))


def history_table(*, target: str, name: str) -> str:
    return render_to_string(
        "admin/reliability/history.html",
        {"entries": control_history(target=target, name=name)},
    )


def _admin_action(action: BreakerAction) -> Callable[..., None]:
    """``action`` as an admin action of the same name, on the selected breakers."""

    @admin.action(description=f"{action.label} ({action.effect})", permissions=["change"])
    def operate(modeladmin: CircuitBreakerAdmin, request, queryset):
        return modeladmin._operate(request, queryset, action)

    operate.__name__ = action.key  # the action's name in the admin's form
    return operate


class OperatorControlsAdmin(admin.ModelAdmin):
    """Editing and the actions need the operators' permission beyond the model's change
    permission; without it a staff user's pages are read-only and offer no action."""

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and may_operate_controls(request.user)


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(OperatorControlsAdmin):
    list_display = [
        "name",
        "model_in_chain",
        "state_badge",
        "failure_rate",
        "consecutive_failures",
        "calls",
        "last_transition",
        "open_until_display",
    ]
    list_display_links = ["name"]
    actions = [_admin_action(action) for action in OPERATOR_ACTIONS.values()]
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
        "history",
    ]
    fieldsets = [
        (
            "Live state",
            {
                "fields": [
                    ("name", "state_badge", "open_until_display"),
                    ("consecutive_failures", "failure_rate"),
                    ("half_open_in_flight", "half_open_successes"),
                    ("calls", "total_rejected", "generation"),
                ]
            },
        ),
        ("History (newest first)", {"fields": ["history"]}),
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

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the code that calls out would create it again on its next call

    def change_view(self, request, object_id, form_url="", extra_context=None):
        breaker = self.get_object(request, object_id)
        actions = []
        if breaker is not None and self.has_change_permission(request, breaker):
            actions = [a for a in breaker_actions(breaker.state) if a.to_state != breaker.state]
        context = {**NO_SAVE_AND_CONTINUE, "breaker_actions": actions, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="state", ordering="state")
    def state_badge(self, breaker: CircuitBreaker) -> str:
        return coloured_state(breaker)

    @admin.display(description="model")
    def model_in_chain(self, breaker: CircuitBreaker) -> str:
        """A family member's model, its place in the chain and whether it serves now."""
        family = family_of(breaker.name)
        chain = members(family)
        if breaker.name not in chain:
            return "-"
        place = chain.index(breaker.name)
        role = "primary" if place == 0 else f"fallback {place}"
        serving = serving_member(family, now=time.time())
        if serving is not None and serving.name == breaker.name:
            return format_html(
                '{} <small class="quiet">({})</small> <strong data-serving="true">serving</strong>',
                member_of(breaker.name),
                role,
            )
        return format_html('{} <small class="quiet">({})</small>', member_of(breaker.name), role)

    @admin.display(description="failure rate (window)")
    def failure_rate(self, breaker: CircuitBreaker) -> str:
        stats = window_stats(breaker, now=time.time())
        return f"{stats.failure_rate:.0f}% of {stats.calls:.0f} calls"

    @admin.display(description="calls ok / failed / ignored")
    def calls(self, breaker: CircuitBreaker) -> str:
        return f"{breaker.total_successes} / {breaker.total_failures} / {breaker.total_ignored}"

    @admin.display(description="last transition")
    def last_transition(self, breaker: CircuitBreaker) -> str:
        transition = breaker.transitions.order_by("-created_at", "-id").first()
        if transition is None:
            return "-"
        return format_html(
            '{} → {} ({})<br><small class="quiet nowrap">{} · {}</small>',
            transition.from_state,
            transition.to_state,
            transition.actor,
            format_time(transition.created_at),
            relative_time(transition.created_at),
        )

    @admin.display(description="open until")
    def open_until_display(self, breaker: CircuitBreaker) -> str:
        if breaker.state == BreakerState.FORCED_OPEN:
            return "until an operator enables it"
        return epoch_with_relative(breaker.open_until) if breaker.open_until else "-"

    @admin.display(description="transitions and operators' changes")
    def history(self, breaker: CircuitBreaker) -> str:
        return history_table(target=ControlChange.Target.BREAKER, name=breaker.name)

    def save_model(self, request, obj, form, change) -> None:
        save_breaker_settings(obj, actor=request.user.get_username())

    def construct_change_message(self, request, form, formsets, add=False):
        return "Changed the settings (old and new values in the breaker's history)."

    def _operate(self, request, queryset, action: BreakerAction):
        if action.needs_reason:
            reason = request.POST.get("reason", "").strip()
            if request.POST.get("confirm") != "yes" or not reason:
                return self._confirmation_page(request, queryset, action)
        else:
            reason = ""
        actor = request.user.get_username()
        for breaker in queryset:
            try:
                action(
                    name=breaker.name,
                    actor=actor,
                    reason=reason or f"{action.done} in the admin by {actor}",
                )
            except AlreadyInState as error:
                self.message_user(request, f"{error}: nothing done.", messages.INFO)
                continue
            except BreakerActionError as error:
                self.message_user(request, str(error), messages.WARNING)
                continue
            self.log_change(request, breaker, f"{action.done} the breaker: {reason}".strip(": "))
            self.message_user(
                request, f"Breaker '{breaker.name}': {action.done}.", messages.SUCCESS
            )
        if request.POST.get("_from_change_page") and len(queryset) == 1:
            return redirect("admin:reliability_circuitbreaker_change", queryset[0].pk)
        return None

    def _confirmation_page(self, request, queryset, action: BreakerAction) -> TemplateResponse:
        """Like Django's delete confirmation: what will happen to which breakers, a reason to
        give, and a button that repeats the action with ``confirm=yes``."""
        asked = request.POST.get("confirm") == "yes"
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.label}: are you sure?",
            "opts": self.model._meta,
            "action": action,
            "breakers": list(queryset),
            "reason": request.POST.get("reason", ""),
            "reason_missing": asked,
            "from_change_page": bool(request.POST.get("_from_change_page")),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/reliability/circuitbreaker/confirm_action.html", context
        )


@admin.register(BreakerTransition)
class BreakerTransitionAdmin(ReadOnlyAdmin):
    list_display = ["when", "breaker_name", "from_state", "to_state", "actor", "reason"]
    list_filter = ["breaker", "to_state", "actor"]
    search_fields = ["reason", "actor"]
    date_hierarchy = "created_at"
    list_select_related = ["breaker"]
    fields = ["breaker_name", "when", "from_state", "to_state", "actor", "reason"]
    when = time_column("created_at", "when", relative=True)

    @admin.display(description="breaker", ordering="breaker__name")
    def breaker_name(self, transition: BreakerTransition) -> str:
        return transition.breaker.name  # its own name, not the breaker's current state


@admin.register(ControlChange)
class ControlChangeAdmin(ReadOnlyAdmin):
    list_display = ["when", "target", "name", "action", "changed", "actor", "reason"]
    list_filter = ["target", "name", "action", "actor"]
    search_fields = ["name", "reason", "actor"]
    date_hierarchy = "created_at"
    fields = ["target", "name", "action", "changed", "actor", "reason", "when"]
    when = time_column("created_at", "when", relative=True)

    @admin.display(description="old → new")
    def changed(self, change: ControlChange) -> str:
        return describe_changes(change.changes) or "-"


def _limits(requests: object, input_tokens: object, output_tokens: object, *, per: str) -> str:
    """A budget's limits, one per dimension: ``50 req, 40000 in, 8000 out per 60 s``."""
    return f"{requests} req, {input_tokens} in, {output_tokens} out per {per}"


def _usage(requests: object, input_tokens: object, output_tokens: object) -> str:
    """A budget's use, one figure per dimension: ``12 requests, 3400 in / 800 out tokens``."""
    return f"{requests} requests, {input_tokens} in / {output_tokens} out tokens"


@admin.register(RateLimitBudget)
class RateLimitBudgetAdmin(OperatorControlsAdmin):
    list_display = [
        "name",
        "paused",
        "usage_this_window",
        "usage_today",
        "spend_today",
        "queue_ahead",
    ]
    actions = ["resume_now"]
    readonly_fields = [
        "name",
        "limits",
        "usage_this_window",
        "usage_today",
        "spend_today",
        "queue_ahead",
        "paused",
        "pause_reason_display",
        "observed_limits",
        "totals",
        "history",
    ]
    fieldsets = [
        (
            "Live usage",
            {
                "fields": [
                    ("name", "paused", "pause_reason_display"),
                    "limits",
                    ("usage_this_window", "queue_ahead"),
                    ("usage_today", "spend_today"),
                    "observed_limits",
                    "totals",
                ]
            },
        ),
        ("History (newest first)", {"fields": ["history"]}),
        ("Limits", {"fields": list(BUDGET_LIMIT_FIELDS)}),
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # created again on the next request under its name

    def change_view(self, request, object_id, form_url="", extra_context=None):
        context = {**NO_SAVE_AND_CONTINUE, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

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

    @admin.display(description="spend today")
    def spend_today(self, budget: RateLimitBudget) -> str:
        same_day = budget.day_started_at >= utc_day_start(time.time())
        spent = format_usd(budget.day_cost_usd if same_day else 0)
        day_cap = f" of {format_usd(budget.usd_per_day)}" if budget.usd_per_day is not None else ""
        per_analysis = budget.usd_per_analysis
        analysis_cap = f"; cap {format_usd(per_analysis)} per analysis" if per_analysis else ""
        return f"{spent}{day_cap}{analysis_cap}"

    @admin.display(description="queue ahead")
    def queue_ahead(self, budget: RateLimitBudget) -> str:
        ahead = budget_status(budget, now=time.time())["next_slot_in_s"]
        return f"next slot in {ahead:.1f} s" if ahead > 0 else "a slot is free now"

    @admin.display(description="state")
    def paused(self, budget: RateLimitBudget) -> str:
        until = budget_status(budget, now=time.time())["paused_until"]
        if not until:
            return state_badge_html(BreakerState.CLOSED, "admitting")
        return format_html(
            "{} until {}", state_badge_html(BreakerState.OPEN, "paused"), epoch_with_relative(until)
        )

    @admin.display(description="pause reason")
    def pause_reason_display(self, budget: RateLimitBudget) -> str:
        # Shown only while paused: the reason of a pause that ended is history, not state.
        return budget_status(budget, now=time.time())["pause_reason"] or "-"

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
        usage = _usage(budget.total_requests, budget.total_input_tokens, budget.total_output_tokens)
        return f"{usage}, {format_usd(budget.total_cost_usd)}"

    @admin.display(description="operators' changes")
    def history(self, budget: RateLimitBudget) -> str:
        return history_table(target=ControlChange.Target.BUDGET, name=budget.name)

    def save_model(self, request, obj, form, change) -> None:
        save_budget_limits(obj, actor=request.user.get_username())

    def construct_change_message(self, request, form, formsets, add=False):
        return "Changed the limits (old and new values in the budget's history)."

    @admin.action(description="Resume now (end a pause)", permissions=["change"])
    def resume_now(self, request, queryset) -> None:
        actor = request.user.get_username()
        for budget in queryset:
            budget_resume(name=budget.name, actor=actor, reason=f"resumed in the admin by {actor}")
            self.log_change(request, budget, "resumed the budget")
        self.message_user(request, "Resumed.", messages.SUCCESS)


admin.site.site_header = "Eidolon operations"
admin.site.site_title = "Eidolon"
admin.site.index_title = "Reliability controls and analyses"
# The app list beside every page took a quarter of a 1400 px screen from the lists; the index and
# the breadcrumbs lead everywhere it did.
admin.site.enable_nav_sidebar = False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The price table, $ per million tokens. An edit prices the calls recorded after it; a
    call's cost is frozen when it is recorded. Prices below zero are refused (the model's
    validators)."""

    list_display = ["model", *PRICE_FIELDS, "updated"]
    search_fields = ["model"]
    readonly_fields = ["updated_at"]
    updated = time_column("updated_at", "updated")
