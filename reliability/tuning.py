"""Operators' edits of breaker thresholds and budget limits (admin and CLI share these).

Only the tuning columns are written: the state columns of the same row keep changing in other
processes, and saving a whole stale instance would overwrite them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog
from django.core.exceptions import ValidationError

from reliability.models import BUDGET_LIMIT_FIELDS, CONFIG_FIELDS, CircuitBreaker, RateLimitBudget

logger = structlog.get_logger(__name__)


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
