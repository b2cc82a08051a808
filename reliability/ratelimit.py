"""Rate-limit budgets over shared database state: requests and input/output tokens per window,
requests and tokens per UTC day, and pauses when the API pushes back.

Per-window limits use GCRA without bursts (theoretical arrival times): admitting a request
reserves the next free slot in every dimension at once, so one ``UPDATE`` of one row admits it,
consecutive requests start at least window/limit apart, and no window ever holds more requests
than the limit, across all processes. A caller whose slot lies in the future sleeps until it
without holding any lock or transaction; reservations are handed out in order, so nobody
starves. Tokens are charged on the estimate up front and corrected by ``reconcile``.

Daily limits are fixed UTC days: a counter that resets at midnight, so a day's quota can be used
in bursts. A 429 seen by any process pauses the whole budget until its ``retry-after``;
``anthropic-ratelimit-*`` headers that report an exhausted or lower limit tighten it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

import structlog
from django.conf import settings
from django.db.models import Case, DecimalField, F, FloatField, Q, Value, When
from django.db.models.functions import Greatest, Least
from django.db.models.lookups import GreaterThan, LessThanOrEqual

from reliability import metrics
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.exceptions import BudgetExhaustedError, format_epoch
from reliability.families import family_of
from reliability.models import BUDGET_LIMIT_FIELDS, RateLimitBudget
from reliability.pricing import dollars
from reliability.ratelimit_headers import HEADER_DIMENSIONS, header_signals
from reliability.spacing import Spacing, slot_seconds, spacing_of
from reliability.sql import (
    Param,
    by_name,
    counter,
    int_param,
    named_row,
    prepared_select,
    prepared_update,
)

logger = structlog.get_logger(__name__)

DAY_SECONDS = 86_400.0
# However small the headroom, a caller may start this much after its slot.
_MIN_LATENESS = 0.02

# What a reservation reads: the limits, and the limits the API reported.
CONFIG_COLUMNS = ("id", "name", *BUDGET_LIMIT_FIELDS, *HEADER_DIMENSIONS.values())


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """A slot granted by a budget: start the request at ``start_at``."""

    budget_id: int
    name: str
    start_at: float
    input_tokens: int
    output_tokens: int
    seconds_per_request: float
    window_seconds: float
    seconds_per_input_token: float
    seconds_per_output_token: float
    max_lateness: float  # later than this after start_at, the slot is given up (see below)
    placed_at: float = 0.0  # the slot first granted (start_at may move earlier while waiting)
    observed_limits: Mapping[str, int | None] = dataclasses.field(default_factory=dict)
    # The budget's ``output_seconds_returned`` when the slot was last placed (``ratelimit_wait``).
    output_seconds_returned: float = 0.0


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks of a budget: its estimated tokens, the latest its slot may start
    (None: whenever), the tokens its analysis has used so far (for the per-analysis cap), and
    for the spend caps its estimated cost and its analysis's spend so far (None: unpriced)."""

    input_tokens: int
    output_tokens: int
    deadline: float | None = None
    analysis_tokens_used: int | None = None
    estimated_cost_usd: Decimal | None = None
    analysis_spent_usd: Decimal | None = None

    @property
    def cost(self) -> int:
        return self.input_tokens + self.output_tokens


def budget_defaults(name: str) -> dict[str, Any]:
    """Settings' defaults for budget ``name``; ``family:key`` budgets (one per user, say) take
    the family's."""
    defaults = settings.EIDOLON_BUDGET_DEFAULTS
    return dict(defaults.get(name) or defaults.get(family_of(name), {}))


def get_or_create_budget(name: str) -> RateLimitBudget:
    budget, _ = RateLimitBudget.objects.get_or_create(name=name, defaults=budget_defaults(name))
    return budget


CONFIG_STATEMENT = "budget_config"


def _config(name: str) -> dict[str, Any]:
    return named_row(
        CONFIG_STATEMENT,
        model=RateLimitBudget,
        name=name,
        fields=CONFIG_COLUMNS,
        create=lambda: get_or_create_budget(name),
    )


def utc_day_start(now: float) -> float:
    return now - (now % DAY_SECONDS)


def _next_free_slot() -> Greatest:
    return Greatest(
        F("next_request_at"),
        F("next_input_at"),
        F("next_output_at"),
        F("paused_until"),
        Param("now"),
        output_field=FloatField(),
    )


_MONEY = DecimalField(max_digits=16, decimal_places=8)
_OTHER_SLOTS = ("next_request_at", "next_input_at", "paused_until")


def _greatest(*expressions: Any) -> Greatest:
    return Greatest(*expressions, output_field=FloatField())


def _own_slack() -> Greatest:
    """How much later than its other dimensions allow a slot starts, for want of output."""
    return _greatest(F("next_output_at") - _greatest(*map(F, _OTHER_SLOTS), Param("now")), 0.0)


def _reservation_values() -> dict[str, Any]:
    """One request's reservation: every dimension's next slot moves on from the same start."""
    start = _next_free_slot()
    new_day = Q(day_started_at__lt=Param("today"))
    new_window = Q(window_started_at__lte=Param("window_edge"))

    return {
        "next_request_at": start + Param("request_seconds"),
        "next_input_at": start + Param("input_seconds"),
        "next_output_at": start + Param("output_seconds"),
        "output_slack": Case(  # summed over the queue since it was last empty
            When(GreaterThan(start, Param("now")), then=F("output_slack") + _own_slack()),
            default=_own_slack(),
            output_field=FloatField(),
        ),
        "day_started_at": Case(
            When(new_day, then=Param("today")),
            default=F("day_started_at"),
            output_field=FloatField(),
        ),
        "day_requests": counter("day_requests", Value(1), reset_when=new_day),
        "day_tokens": counter("day_tokens", int_param("cost"), reset_when=new_day),
        "day_cost_usd": Case(  # spend is charged after the call (``charge_spend``)
            When(new_day, then=Value(Decimal(0))), default=F("day_cost_usd"), output_field=_MONEY
        ),
        "window_started_at": Case(
            When(new_window, then=Param("now")),
            default=F("window_started_at"),
            output_field=FloatField(),
        ),
        "window_requests": counter("window_requests", Value(1), reset_when=new_window),
        "window_input_tokens": counter(
            "window_input_tokens", int_param("input_tokens"), reset_when=new_window
        ),
        "window_output_tokens": counter(
            "window_output_tokens", int_param("output_tokens"), reset_when=new_window
        ),
        "total_requests": F("total_requests") + 1,
        "total_input_tokens": F("total_input_tokens") + int_param("input_tokens"),
        "total_output_tokens": F("total_output_tokens") + int_param("output_tokens"),
    }


def _reservation_condition(*, has_token_cap: bool, has_deadline: bool, has_spend_cap: bool) -> Q:
    """Admit only within the daily caps and, if the caller has one, before its deadline."""
    new_day = Q(day_started_at__lt=Param("today"))
    condition = new_day | Q(day_requests__lt=int_param("requests_per_day"))
    if has_token_cap:
        condition &= new_day | Q(day_tokens__lte=int_param("tokens_left_today"))
    if has_spend_cap:
        condition &= new_day | Q(day_cost_usd__lte=Param("spend_left_today", _MONEY))
    if has_deadline:
        condition &= Q(LessThanOrEqual(_next_free_slot(), Param("deadline")))
    return condition


@dataclass(frozen=True, kw_only=True)
class ReservationPlan:
    """Everything one reservation's UPDATE needs, worked out from the budget's limits."""

    name: str
    config: Mapping[str, Any]
    spacing: Spacing
    statement_key: tuple
    params: dict[str, Any]
    input_tokens: int
    output_tokens: int

    @property
    def has_token_cap(self) -> bool:
        return self.config["tokens_per_day"] is not None

    @property
    def has_deadline(self) -> bool:
        return self.params["deadline"] is not None

    @property
    def has_spend_cap(self) -> bool:
        return self.params["spend_left_today"] is not None

    def reservation(self, next_request_at: float, output_seconds_returned: float) -> Reservation:
        """The reservation, given what the UPDATE returned (``RESERVE_RETURNING``)."""
        return Reservation(
            budget_id=self.config["id"],
            name=self.name,
            start_at=next_request_at - self.spacing.request,
            placed_at=next_request_at - self.spacing.request,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            seconds_per_request=self.spacing.request,
            window_seconds=self.config["window_seconds"],
            seconds_per_input_token=self.spacing.input_token,
            seconds_per_output_token=self.spacing.output_token,
            max_lateness=max(
                _MIN_LATENESS, settings.EIDOLON_RATE_HEADROOM * self.config["window_seconds"] / 2
            ),
            observed_limits={column: self.config[column] for column in HEADER_DIMENSIONS.values()},
            output_seconds_returned=output_seconds_returned,
        )


RESERVE_RETURNING = ("next_request_at", "output_seconds_returned")


def _exceeds_analysis_cap(cap: int | None, ask: Ask) -> bool:
    """Whether the ask would take its analysis over its token cap."""
    used = ask.analysis_tokens_used
    return cap is not None and used is not None and used + ask.cost > cap


def _exceeds_analysis_spend_cap(cap: Decimal | None, ask: Ask) -> bool:
    """Whether the ask's estimated cost would take its analysis's spend past its cap (an
    unpriced call, whose cost is unknown, is not held back)."""
    spent, estimate = ask.analysis_spent_usd, ask.estimated_cost_usd
    return cap is not None and spent is not None and estimate is not None and spent + estimate > cap


def _spend_left_today(config: Mapping[str, Any], ask: Ask) -> Decimal | None:
    """The day's spend the ask leaves room for (None: no daily spend cap applies to it)."""
    cap = config["usd_per_day"]
    if cap is None or ask.estimated_cost_usd is None:
        return None
    return cap - ask.estimated_cost_usd


def plan_reservation(config: Mapping[str, Any], ask: Ask, *, now: float) -> ReservationPlan | None:
    """The reservation's statement and parameters; None when a per-analysis cap forbids it."""
    cost = ask.cost
    if _exceeds_analysis_cap(config["tokens_per_analysis"], ask):
        return None
    if _exceeds_analysis_spend_cap(config["usd_per_analysis"], ask):
        return None
    spacing, window = spacing_of(config), config["window_seconds"]
    has_token_cap = config["tokens_per_day"] is not None
    spend_left_today = _spend_left_today(config, ask)
    return ReservationPlan(
        name=config["name"],
        config=config,
        spacing=spacing,
        statement_key=(
            "budget_reserve",
            has_token_cap,
            ask.deadline is not None,
            spend_left_today is not None,
        ),
        params={
            "pk": config["id"],
            "now": now,
            "today": utc_day_start(now),
            "window_edge": now - config["window_seconds"],
            "request_seconds": spacing.request,
            "input_seconds": slot_seconds(ask.input_tokens, spacing.input_token, window),
            "output_seconds": slot_seconds(ask.output_tokens, spacing.output_token, window),
            "input_tokens": ask.input_tokens,
            "output_tokens": ask.output_tokens,
            "cost": cost,
            "requests_per_day": config["requests_per_day"],
            "tokens_left_today": (config["tokens_per_day"] or 0) - cost,
            "deadline": ask.deadline,
            "spend_left_today": spend_left_today,
        },
        input_tokens=ask.input_tokens,
        output_tokens=ask.output_tokens,
    )


def reserve(name: str, ask: Ask, *, clock: Clock = SYSTEM_CLOCK) -> Reservation:
    """Reserve the next slot of budget ``name`` for one request: one atomic UPDATE.

    Raises ``BudgetExhaustedError`` (reserving nothing) when the slot would start after the
    ask's ``deadline``, or a daily or per-analysis cap would be exceeded. The limits are read
    first (a short indexed read) so that the UPDATE itself stays short: every process applies
    an operator's change from its next request.
    """
    now = clock.now()
    plan = plan_reservation(_config(name), ask, now=now)
    row = None
    if plan is not None:
        row = prepared_update(
            plan.statement_key,
            model=RateLimitBudget,
            condition=lambda: _reservation_condition(
                has_token_cap=plan.has_token_cap,
                has_deadline=plan.has_deadline,
                has_spend_cap=plan.has_spend_cap,
            ),
            values=_reservation_values,
            params=plan.params,
            returning=RESERVE_RETURNING,
        )
    if row is None:
        _raise_refusal(name, ask, now=now)
    metrics.ratelimit_requests.labels(budget=name).inc()
    return plan.reservation(row["next_request_at"], row["output_seconds_returned"])


def _raise_refusal(name: str, ask: Ask, *, now: float) -> NoReturn:
    """Say why ``reserve`` admitted nothing."""
    budget = RateLimitBudget.objects.get(name=name)
    reason, available_at = _refusal(budget, ask, now=now)
    metrics.ratelimit_rejections.labels(budget=name, reason=reason.split(" (")[0][:40]).inc()
    logger.warning("ratelimit_refused", budget=name, reason=reason)
    raise BudgetExhaustedError(budget=name, reason=reason, available_at=available_at)


def _refusal(budget: RateLimitBudget, ask: Ask, *, now: float) -> tuple[str, float | None]:
    """Why ``budget`` cannot admit ``ask``, and when it could again (None: not by waiting)."""
    cost = ask.cost
    tomorrow = utc_day_start(now) + DAY_SECONDS
    same_day = budget.day_started_at >= utc_day_start(now)
    cap = budget.tokens_per_analysis
    if _exceeds_analysis_cap(cap, ask):
        return (
            f"the analysis token cap of {cap} would be exceeded "
            f"({ask.analysis_tokens_used} used, {cost} more estimated)",
            None,
        )
    if _exceeds_analysis_spend_cap(budget.usd_per_analysis, ask):
        spent = (ask.analysis_spent_usd or Decimal(0)).quantize(Decimal("0.001"))
        return (
            f"spend cap of {dollars(budget.usd_per_analysis)} per analysis reached: "
            f"{dollars(spent)} spent (the next call is estimated at "
            f"{dollars(ask.estimated_cost_usd.quantize(Decimal('0.0001')))})",
            None,
        )
    if same_day and budget.day_requests >= budget.requests_per_day:
        return f"daily request limit of {budget.requests_per_day} reached", tomorrow
    token_cap = budget.tokens_per_day
    if same_day and token_cap is not None and budget.day_tokens + cost > token_cap:
        return f"daily token cap of {token_cap} reached", tomorrow
    spend_left = _spend_left_today(budget.__dict__, ask)
    if same_day and spend_left is not None and budget.day_cost_usd > spend_left:
        return (
            f"daily spend cap of {dollars(budget.usd_per_day)} reached: "
            f"{dollars(budget.day_cost_usd.quantize(Decimal('0.001')))} spent today",
            tomorrow,
        )
    slots = (budget.next_request_at, budget.next_input_at, budget.next_output_at)
    available_at = max(*slots, budget.paused_until, now)
    return (
        f"the next free slot ({format_epoch(available_at)}) is after the caller's "
        f"deadline ({format_epoch(ask.deadline or now)})",
        available_at,
    )


def paused_until(name: str) -> float:
    row = prepared_select(
        "budget_paused_until",
        model=RateLimitBudget,
        condition=by_name,
        fields=["paused_until"],
        params={"name": name},
    )
    return row["paused_until"] if row else 0.0


ADJUST_STATEMENT = "budget_adjust"


def adjustment_params(
    reservation: Reservation,
    *,
    requests: int,
    input_tokens: int,
    output_tokens: int,
    move_token_slots: bool,
) -> dict[str, Any]:
    """The adjustment's parameters; with ``move_token_slots`` the token slots move by the
    difference between the slots of the tokens reserved and of those plus the extra ones."""

    def slot_change(reserved: int, extra: int, per_token: float) -> float:
        if not move_token_slots:
            return 0.0
        window = reservation.window_seconds
        return slot_seconds(reserved + extra, per_token, window) - slot_seconds(
            reserved, per_token, window
        )

    return {
        "pk": reservation.budget_id,
        "requests": requests,
        "tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_seconds": slot_change(
            reservation.input_tokens, input_tokens, reservation.seconds_per_input_token
        ),
        "output_seconds": slot_change(
            reservation.output_tokens, output_tokens, reservation.seconds_per_output_token
        ),
    }


def _returned(*, within_slack: bool = False) -> Greatest | Least:
    """The output time an adjustment gives back (none when it takes more); ``within_slack``:
    no more than the queue's ``output_slack``."""
    returned = _greatest(Value(0.0) - Param("output_seconds"), Value(0.0))
    if not within_slack:
        return returned
    return Least(returned, F("output_slack"), output_field=FloatField())


def _adjust_counts(reservation: Reservation, **adjustment: Any) -> None:
    """Add (or take back) requests and tokens, and the tokens' time on the token slots if asked."""
    prepared_update(
        ADJUST_STATEMENT,
        model=RateLimitBudget,
        values=lambda: {
            # Output time given back moves the queue forward (``ratelimit_wait``): the callers
            # waiting move their slots, and the next slots of the other dimensions follow as
            # far as the last slot waited for output tokens (no further: their own spacing).
            "next_request_at": F("next_request_at") - _returned(within_slack=True),
            "next_input_at": F("next_input_at")
            + Param("input_seconds")
            - _returned(within_slack=True),
            "output_slack": F("output_slack") - _returned(within_slack=True),
            "next_output_at": F("next_output_at") + Param("output_seconds"),
            "output_seconds_returned": F("output_seconds_returned") + _returned(),
            "day_requests": Greatest(F("day_requests") + int_param("requests"), 0),
            "day_tokens": Greatest(F("day_tokens") + int_param("tokens"), 0),
            "window_requests": Greatest(F("window_requests") + int_param("requests"), 0),
            "window_input_tokens": Greatest(
                F("window_input_tokens") + int_param("input_tokens"), 0
            ),
            "window_output_tokens": Greatest(
                F("window_output_tokens") + int_param("output_tokens"), 0
            ),
            "total_requests": F("total_requests") + int_param("requests"),
            "total_input_tokens": F("total_input_tokens") + int_param("input_tokens"),
            "total_output_tokens": F("total_output_tokens") + int_param("output_tokens"),
        },
        params=adjustment_params(reservation, **adjustment),
    )


def release(reservation: Reservation) -> None:
    """Give back the counts of a reservation that was never used (its time slot stays spent)."""
    _adjust_counts(
        reservation,
        requests=-1,
        input_tokens=-reservation.input_tokens,
        output_tokens=-reservation.output_tokens,
        # Later reservations were spaced after this slot: its time cannot be given back.
        move_token_slots=False,
    )


def count_tokens(reservation: Reservation, *, input_tokens: int, output_tokens: int) -> None:
    metrics.ratelimit_tokens.labels(budget=reservation.name, direction="input").inc(input_tokens)
    metrics.ratelimit_tokens.labels(budget=reservation.name, direction="output").inc(output_tokens)


def correction(
    reservation: Reservation, *, input_tokens: int, output_tokens: int
) -> dict[str, Any] | None:
    """The adjustment from the estimate to the tokens used; None when they match."""
    extra_input = input_tokens - reservation.input_tokens
    extra_output = output_tokens - reservation.output_tokens
    if not (extra_input or extra_output):
        return None
    return {
        "requests": 0,
        "input_tokens": extra_input,
        "output_tokens": extra_output,
        "move_token_slots": True,
    }


def reconcile(reservation: Reservation, *, input_tokens: int, output_tokens: int) -> None:
    """Correct the budget from the estimate to what the request really used."""
    count_tokens(reservation, input_tokens=input_tokens, output_tokens=output_tokens)
    adjustment = correction(reservation, input_tokens=input_tokens, output_tokens=output_tokens)
    if adjustment is not None:
        _adjust_counts(reservation, **adjustment)


def charge_spend(name: str, *, cost_usd: Decimal, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Add what calls cost to budget ``name``'s spend today and in total: one atomic UPDATE,
    which starts a new UTC day (its requests, tokens and spend from zero) as a reservation
    does. False when there is no such budget."""
    today = utc_day_start(clock.now())
    new_day = Q(day_started_at__lt=today)
    amount = Value(cost_usd, output_field=_MONEY)
    return bool(
        RateLimitBudget.objects.filter(name=name).update(
            day_started_at=Case(
                When(new_day, then=Value(today)),
                default=F("day_started_at"),
                output_field=FloatField(),
            ),
            day_requests=counter("day_requests", Value(0), reset_when=new_day),
            day_tokens=counter("day_tokens", Value(0), reset_when=new_day),
            day_cost_usd=Case(
                When(new_day, then=amount),
                default=F("day_cost_usd") + amount,
                output_field=_MONEY,
            ),
            total_cost_usd=F("total_cost_usd") + amount,
        )
    )


def pause(name: str, *, until: float, reason: str) -> bool:
    """Stop budget ``name`` admitting anything before ``until`` (epoch), for every process."""
    changed = RateLimitBudget.objects.filter(name=name, paused_until__lt=until).update(
        paused_until=until, pause_reason=reason[:200]
    )
    if changed:
        metrics.ratelimit_pauses.labels(budget=name, reason=reason.split(":")[0][:40]).inc()
        logger.warning("ratelimit_paused", budget=name, until=format_epoch(until), reason=reason)
    return bool(changed)


def observe_headers(
    name: str,
    headers: Mapping[str, str],
    *,
    budget_id: int | None = None,
    known_limits: Mapping[str, int | None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Tighten the budget from ``anthropic-ratelimit-*`` response headers.

    An exhausted dimension (``remaining: 0``) pauses the budget until its ``reset``; a limit
    lower than the configured one becomes the effective limit.
    """
    signals = header_signals(headers, now=clock.now())
    for until, reason in signals.pauses:
        pause(name, until=until, reason=reason)
    if signals.limits_changed(known_limits):
        _record_observed_limits(budget_id or _config(name)["id"], signals.limits)


def _record_observed_limits(budget_id: int, observed: Mapping[str, int]) -> None:
    fields = tuple(sorted(observed))

    def changed() -> Q:
        differs = Q()
        for field in fields:
            differs |= ~Q(**{field: int_param(field)})
        return differs

    # One conditional UPDATE, which writes nothing when the limits are as already recorded.
    prepared_update(
        ("budget_observed", fields),
        model=RateLimitBudget,
        condition=changed,
        values=lambda: {field: int_param(field) for field in fields},
        params={"pk": budget_id, **observed},
    )
