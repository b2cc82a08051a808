"""Operator controls, one service each, called alike by the admin, the CLI and the staff API:
breaker actions (reset, force open, disable, enable), threshold and limit tuning, and ending a
budget's pause.

Tuning writes only the tuning columns: the state columns of the same row keep changing in other
processes, and saving a whole stale instance would overwrite them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog
from django.core.exceptions import ValidationError

from reliability.breaker import get_or_create_breaker, transition
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    CONFIG_FIELDS,
    BreakerState,
    CircuitBreaker,
    RateLimitBudget,
)

logger = structlog.get_logger(__name__)


class BreakerActionError(ValueError):
    """An operator action that does not apply to the breaker's current state."""


def _operator_transition(
    *, name: str, to_state: str, actor: str, reason: str, clock: Clock
) -> CircuitBreaker:
    breaker = get_or_create_breaker(name, clock=clock)
    transition(
        breaker.pk, expected=None, to_state=to_state, reason=reason, clock=clock, actor=actor
    )
    breaker.refresh_from_db()
    return breaker


def breaker_reset(
    *, name: str, actor: str, reason: str = "reset by operator", clock: Clock = SYSTEM_CLOCK
) -> CircuitBreaker:
    """Close the breaker and clear its counts (also ends forced-open and disabled)."""
    return _operator_transition(
        name=name, to_state=BreakerState.CLOSED, actor=actor, reason=reason, clock=clock
    )


def breaker_force_open(
    *, name: str, actor: str, reason: str = "forced open by operator", clock: Clock = SYSTEM_CLOCK
) -> CircuitBreaker:
    """Reject every call until an operator resets or enables the breaker."""
    return _operator_transition(
        name=name, to_state=BreakerState.FORCED_OPEN, actor=actor, reason=reason, clock=clock
    )


def breaker_disable(
    *, name: str, actor: str, reason: str = "disabled by operator", clock: Clock = SYSTEM_CLOCK
) -> CircuitBreaker:
    """Admit every call (outcomes are still counted) until an operator enables it."""
    return _operator_transition(
        name=name, to_state=BreakerState.DISABLED, actor=actor, reason=reason, clock=clock
    )


def breaker_enable(
    *, name: str, actor: str, reason: str = "enabled by operator", clock: Clock = SYSTEM_CLOCK
) -> CircuitBreaker:
    """Return a forced-open or disabled breaker to normal operation (closed)."""
    state = get_or_create_breaker(name, clock=clock).state
    if state not in (BreakerState.FORCED_OPEN, BreakerState.DISABLED):
        raise BreakerActionError(
            f"breaker '{name}' is {state}, not forced open or disabled: nothing to enable "
            "(use reset to close it)"
        )
    return _operator_transition(
        name=name, to_state=BreakerState.CLOSED, actor=actor, reason=reason, clock=clock
    )


OPERATOR_ACTIONS = {
    "reset": breaker_reset,
    "force_open": breaker_force_open,
    "disable": breaker_disable,
    "enable": breaker_enable,
}


def budget_resume(*, name: str, actor: str) -> None:
    """End a budget's pause now: every process may admit again from its next request."""
    RateLimitBudget.objects.filter(name=name).update(paused_until=0.0, pause_reason="")
    logger.info("ratelimit_resumed", budget=name, actor=actor)


def assign_fields(
    instance: CircuitBreaker | RateLimitBudget,
    raw_values: Mapping[str, str],
    *,
    allowed: Iterable[str],
) -> None:
    """Set fields from text (``--set failure_threshold=5``), converted by the model's fields."""
    allowed = tuple(allowed)
    errors: dict[str, list[str]] = {}
    for name, raw in raw_values.items():
        if name not in allowed:
            errors[name] = [f"not a tunable field; choose from: {', '.join(allowed)}"]
            continue
        field = instance._meta.get_field(name)
        value = None if field.null and raw.strip().lower() in {"", "none", "null"} else raw
        try:
            setattr(instance, name, field.to_python(value))
        except ValidationError as error:
            errors[name] = error.messages
    if errors:
        raise ValidationError(errors)


def save_breaker_settings(breaker: CircuitBreaker, *, actor: str) -> CircuitBreaker:
    """Validate and store a breaker's thresholds; every process uses them from its next call."""
    _save_tuning(
        breaker, fields=CONFIG_FIELDS, event="breaker_tuned", actor=actor, breaker=breaker.name
    )
    return breaker


def save_budget_limits(budget: RateLimitBudget, *, actor: str) -> RateLimitBudget:
    """Validate and store a budget's limits; every process uses them from its next request."""
    _save_tuning(
        budget, fields=BUDGET_LIMIT_FIELDS, event="budget_tuned", actor=actor, budget=budget.name
    )
    return budget


def _save_tuning(
    instance: CircuitBreaker | RateLimitBudget,
    *,
    fields: tuple[str, ...],
    event: str,
    **log_context: str,
) -> None:
    instance.full_clean()
    instance.save(update_fields=fields)
    logger.info(event, **log_context, **{field: getattr(instance, field) for field in fields})
