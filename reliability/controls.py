"""Operator controls, one service each, called alike by the admin, the CLI and the staff API:
breaker actions (reset, force open, disable, enable), threshold and limit tuning, and ending a
budget's pause. Each is recorded as a ``ControlChange`` (who, when, old and new values, why): the
operators' history beside the breaker's transitions.

Tuning writes only the tuning columns: the state columns of the same row keep changing in other
processes, and saving a whole stale instance would overwrite them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import structlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from reliability.breaker import get_or_create_breaker, transition
from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.families import family_of, members, names_meant
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    CONFIG_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    RateLimitBudget,
)

logger = structlog.get_logger(__name__)

# What every page, admin action and API call that changes a breaker's or a budget's behaviour
# requires, beyond being staff (CircuitBreaker.Meta.permissions). The CLI needs none: whoever
# runs manage.py already holds the database and the settings.
OPERATE_CONTROLS = "reliability.operate_controls"


def may_operate_controls(user: Any) -> bool:
    """Whether ``user`` may change the reliability controls: active staff with the permission."""
    return bool(user.is_active and user.is_staff and user.has_perm(OPERATE_CONTROLS))


class BreakerActionError(ValueError):
    """An operator action that does not apply to the breaker's current state."""


class AlreadyInState(BreakerActionError):
    """The breaker is already where the action would move it: nothing was done or recorded."""


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
    # Stops or drops something: pages take it only once confirmed, with the operator's reason.
    needs_reason: bool = True
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
        if breaker.state == self.to_state:
            raise AlreadyInState(f"breaker '{name}' is already {breaker.get_state_display()}")
        reason = f"{self.done} by operator" if reason is None else reason
        with transaction.atomic():
            transition(
                breaker.pk,
                expected=None,
                to_state=self.to_state,
                reason=reason,
                clock=clock,
                actor=actor,
            )
            record_control_change(
                target=ControlChange.Target.BREAKER,
                name=name,
                action=self.key,
                actor=actor,
                reason=reason,
                clock=clock,
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
    needs_reason=False,
)
OPERATOR_ACTIONS = {
    action.key: action
    for action in (breaker_reset, breaker_force_open, breaker_disable, breaker_enable)
}
ACTIONS_BY_SLUG = {action.slug: action for action in OPERATOR_ACTIONS.values()}


def breaker_names_meant(name: str) -> list[str]:
    """The breakers an operator means by ``name``: a family's members (``anthropic``: one per
    model), or the breaker itself; [] when no breaker by that name exists or is configured."""
    return _names_meant(name, defaults=settings.EIDOLON_BREAKER_DEFAULTS, model=CircuitBreaker)


def budget_names_meant(name: str) -> list[str]:
    """As ``breaker_names_meant``, for rate-limit budgets."""
    return _names_meant(name, defaults=settings.EIDOLON_BUDGET_DEFAULTS, model=RateLimitBudget)


def _names_meant(
    name: str,
    *,
    defaults: dict[str, Any],
    model: type[CircuitBreaker] | type[RateLimitBudget],
) -> list[str]:
    meant = names_meant(name)
    if meant != [name]:
        return meant
    configured = family_of(name) in defaults and (
        name in defaults or name in members(family_of(name))
    )
    return meant if configured or model.objects.filter(name=name).exists() else []


@dataclass(frozen=True)
class ActionResult:
    """What an action did to one breaker: moved it (``breaker``), or why not (``refusal``)."""

    name: str
    breaker: CircuitBreaker | None = None
    refusal: str = ""
    already: bool = False  # already in the state the action moves to: nothing recorded


def operate_breakers(
    action: BreakerAction,
    *,
    names: list[str],
    actor: str,
    reason: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[ActionResult]:
    """``action`` on each breaker of ``names`` (a family's members, say), each on its own: one
    that does not fit its state is reported, not raised, and the others still move."""
    results = []
    for name in names:
        try:
            breaker = action(name=name, actor=actor, reason=reason, clock=clock)
        except AlreadyInState as error:
            results.append(ActionResult(name, refusal=str(error), already=True))
        except BreakerActionError as error:
            results.append(ActionResult(name, refusal=str(error)))
        else:
            results.append(ActionResult(name, breaker=breaker))
    return results


def record_control_change(
    *,
    target: str,
    name: str,
    action: str,
    actor: str,
    changes: Mapping[str, list] | None = None,
    reason: str = "",
    clock: Clock = SYSTEM_CLOCK,
) -> ControlChange:
    return ControlChange.objects.create(
        target=target,
        name=name,
        action=action,
        changes=dict(changes or {}),
        reason=reason,
        actor=actor,
        created_at=epoch_datetime(clock.now()),
    )


def budget_resume(*, name: str, actor: str, reason: str = "") -> None:
    """End a budget's pause now: every process may admit again from its next request."""
    with transaction.atomic():
        RateLimitBudget.objects.filter(name=name).update(paused_until=0.0, pause_reason="")
        record_control_change(
            target=ControlChange.Target.BUDGET,
            name=name,
            action="resume",
            actor=actor,
            reason=reason,
        )
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


def save_breaker_settings(
    breaker: CircuitBreaker, *, actor: str, reason: str = ""
) -> dict[str, list]:
    """Validate and store a breaker's thresholds; every process uses them from its next call.
    Returns what changed, ``{"field": [old, new]}`` (recorded in the history unless empty)."""
    return _save_tuning(
        breaker,
        fields=CONFIG_FIELDS,
        target=ControlChange.Target.BREAKER,
        actor=actor,
        reason=reason,
    )


def save_budget_limits(budget: RateLimitBudget, *, actor: str, reason: str = "") -> dict[str, list]:
    """Validate and store a budget's limits; every process uses them from its next request.
    Returns what changed, ``{"field": [old, new]}`` (recorded in the history unless empty)."""
    return _save_tuning(
        budget,
        fields=BUDGET_LIMIT_FIELDS,
        target=ControlChange.Target.BUDGET,
        actor=actor,
        reason=reason,
    )


def _save_tuning(
    instance: CircuitBreaker | RateLimitBudget,
    *,
    fields: tuple[str, ...],
    target: str,
    actor: str,
    reason: str,
) -> dict[str, list]:
    instance.full_clean()
    with transaction.atomic():
        stored = (
            type(instance).objects.select_for_update().filter(pk=instance.pk).values(*fields).get()
        )
        changes = {
            field: [_recordable(stored[field]), _recordable(getattr(instance, field))]
            for field in fields
            if stored[field] != getattr(instance, field)
        }
        instance.save(update_fields=fields)
        if changes:
            record_control_change(
                target=target,
                name=instance.name,
                action="edit",
                actor=actor,
                changes=changes,
                reason=reason,
            )
    logger.info(f"{target}_tuned", name=instance.name, actor=actor, changes=changes)
    return changes


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a breaker's or budget's history: a state transition or an operator's change."""

    at: datetime
    kind: str  # "transition" or "change"
    what: str  # "open → closed", "edit", "force open"
    details: str  # the values changed, or the transition's reason
    actor: str
    reason: str


def _recordable(value: Any) -> Any:
    """A setting's value as the history's JSON keeps it: dollar caps as exact text."""
    return str(value) if isinstance(value, Decimal) else value


def describe_changes(changes: Mapping[str, list]) -> str:
    """``failure_threshold: 5 → 3; minimum_calls: 10 → 20``."""
    return "; ".join(f"{field}: {old} → {new}" for field, (old, new) in changes.items())


def control_history(*, target: str, name: str, limit: int = 50) -> list[HistoryEntry]:
    """A breaker's transitions and the operators' changes to it (a budget's changes), merged by
    time, newest first. An operator's action and the transition it made are one line."""
    changes = list(ControlChange.objects.filter(target=target, name=name)[:limit])
    transitions = []
    if target == ControlChange.Target.BREAKER:
        transitions = list(
            BreakerTransition.objects.filter(breaker__name=name).order_by("-created_at", "-id")[
                :limit
            ]
        )
    entries = []
    for change in changes:
        made = _transition_of(change, transitions)
        what = change.action.replace("_", " ")
        if made is not None:
            transitions.remove(made)
            what = f"{what}: {made.from_state} → {made.to_state}"
        entries.append(
            HistoryEntry(
                at=change.created_at,
                kind="change",
                what=what,
                details=describe_changes(change.changes),
                actor=change.actor,
                reason=change.reason,
            )
        )
    entries += [
        HistoryEntry(
            at=row.created_at,
            kind="transition",
            what=f"{row.from_state} → {row.to_state}",
            details="",
            actor=row.actor,
            reason=row.reason,
        )
        for row in transitions
    ]
    return sorted(entries, key=lambda entry: entry.at, reverse=True)[:limit]


def _transition_of(
    change: ControlChange, transitions: list[BreakerTransition]
) -> BreakerTransition | None:
    """The transition an operator's action made (written in the same transaction)."""
    for row in transitions:
        same_moment = abs((row.created_at - change.created_at).total_seconds()) < 2
        if same_moment and (row.actor, row.reason) == (change.actor, change.reason):
            return row
    return None
