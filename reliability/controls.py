"""Operator controls, one service each, called alike by the admin, the CLI and the staff API:
breaker actions (reset, force open, disable, enable), threshold and limit tuning, and ending a
budget's pause.

Tuning writes only the tuning columns: the state columns of the same row keep changing in other
processes, and saving a whole stale instance would overwrite them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

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


@dataclass(frozen=True)
class BreakerAction:
    """An operator's action on a breaker: ``action(name=..., actor=..., reason=...)`` moves the
    breaker to ``to_state`` (from any state, or only from ``from_states``) and returns it."""

    key: str  # as the CLI, the admin and the API name it: "force_open"
    to_state: str
    done: str  # what it did, for the history and messages: "forced open"
    effect: str  # what it does, for operators choosing it: "reject every call"
    from_states: tuple[str, ...] = ()  # empty: every state
    refusal: str = ""  # why it does not apply to a breaker in another state
    # Templates read its key, label and slug; they must not call it.
    do_not_call_in_templates: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return self.key.replace("_", " ").capitalize()

    @property
    def slug(self) -> str:
        """As URLs name it (the staff API, the dashboard's buttons): "force-open"."""
        return self.key.replace("_", "-")

    def __call__(
        self, *, name: str, actor: str, reason: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> CircuitBreaker:
        breaker = get_or_create_breaker(name, clock=clock)
        if self.from_states and breaker.state not in self.from_states:
            raise BreakerActionError(f"breaker '{name}' is {breaker.state}, {self.refusal}")
        reason = f"{self.done} by operator" if reason is None else reason
        transition(
            breaker.pk,
            expected=None,
            to_state=self.to_state,
            reason=reason,
            clock=clock,
            actor=actor,
        )
        breaker.refresh_from_db()
        return breaker


# Close the breaker and clear its counts (also ends forced-open and disabled).
breaker_reset = BreakerAction("reset", BreakerState.CLOSED, "reset", "close and clear counts")
# Reject every call until an operator resets or enables the breaker.
breaker_force_open = BreakerAction(
    "force_open", BreakerState.FORCED_OPEN, "forced open", "reject every call"
)
# Admit every call (outcomes are still counted) until an operator enables it.
breaker_disable = BreakerAction(
    "disable", BreakerState.DISABLED, "disabled", "admit every call, keep counting"
)
# Return a forced-open or disabled breaker to normal operation (closed).
breaker_enable = BreakerAction(
    "enable",
    BreakerState.CLOSED,
    "enabled",
    "end forced-open or disabled",
    from_states=(BreakerState.FORCED_OPEN, BreakerState.DISABLED),
    refusal="not forced open or disabled: nothing to enable (use reset to close it)",
)
OPERATOR_ACTIONS = {
    action.key: action
    for action in (breaker_reset, breaker_force_open, breaker_disable, breaker_enable)
}
ACTIONS_BY_SLUG = {action.slug: action for action in OPERATOR_ACTIONS.values()}


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
