"""The staff's JSON API of the reliability controls: the state of breakers, budgets and health,
and the breaker actions, through the same services as the admin and ``manage.py reliability``.

Staff only (403 for other users; the site's API answers 401 to anonymous callers); the
actions also need the permissions to change breakers and to operate the reliability controls
(``reliability.operate_controls``), as the admin's do. An action applies to a
breaker that exists (404 otherwise: the API never creates breakers), or to each existing member
of a family named by the family (``anthropic``: every model's breaker); one that does not fit the
breaker's state (enabling a closed breaker) is 409.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Field, ModelSchema, Path, Router, Schema
from ninja.errors import HttpError
from pydantic import StringConstraints

from reliability.controls import (
    ACTIONS_BY_SLUG,
    BreakerActionError,
    may_operate_controls,
    operate_breakers,
)
from reliability.families import names_meant
from reliability.models import HEALTH_COMPONENT_FIELDS, CircuitBreaker, HealthComponentState
from reliability.status import breaker_status, health_components, reliability_snapshot

router = Router(tags=["reliability"])

# A breaker (``git``, ``anthropic:claude-haiku-4-5``) or a family of them (``anthropic``).
BreakerName = Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_.:@]{1,64}$")]
# The actions as URLs name them ("force-open").
BreakerActionSlug = Literal[tuple(ACTIONS_BY_SLUG)]  # type: ignore[valid-type]


class TransitionOut(Schema):
    at: str
    from_: str = Field(alias="from")  # "from" is a Python keyword; the routes dump by alias
    to: str
    reason: str
    actor: str


class BreakerOut(Schema):
    name: str
    state: str
    consecutive_failures: int
    window_calls: float
    failure_rate_percent: float
    slow_call_rate_percent: float
    open_until: float | None
    half_open_in_flight: int
    totals: dict[str, int]
    last_transition: TransitionOut | None
    settings: dict[str, Any]


class BudgetOut(Schema):
    name: str
    limits: dict[str, float | None]
    window: dict[str, int]
    today: dict[str, int]
    next_slot_in_s: float
    paused_until: float | None
    pause_reason: str
    observed_limits: dict[str, int | None]


class HealthComponentOut(ModelSchema):
    since: str  # ISO 8601, as everywhere in this API
    checked_at: str | None

    class Meta:
        model = HealthComponentState
        fields = list(HEALTH_COMPONENT_FIELDS)


class AIMemberOut(Schema):
    breaker: str
    model: str
    state: str
    admits: bool = Field(description="Whether its breaker admits new reviews.")
    open_until: float | None


class AIServingOut(Schema):
    family: str
    serving: str | None = Field(
        description="The model new reviews go to: the first of the chain whose breaker admits "
        "them; null when none does."
    )
    degraded: bool = Field(description="A fallback serves: the primary's breaker refuses.")
    members: list[AIMemberOut]


class MemberActionOut(Schema):
    done: bool = Field(description="Whether the action moved this breaker.")
    detail: str = Field(description="Why not, when it did not.")
    breaker: BreakerOut


class FamilyActionOut(Schema):
    family: str
    breakers: list[MemberActionOut]


class ReliabilityOut(Schema):
    ai: AIServingOut
    breakers: list[BreakerOut]
    budgets: list[BudgetOut]
    health: list[HealthComponentOut]


def _require_staff(request: HttpRequest) -> None:
    if not request.auth.is_staff:  # type: ignore[attr-defined]
        raise HttpError(403, "staff only")


def _snapshot() -> dict[str, Any]:
    return {**reliability_snapshot(now=time.time()), "health": health_components()}


@router.get(
    "", response={200: ReliabilityOut, 403: None}, by_alias=True, summary="Reliability state"
)
async def reliability_state(request: HttpRequest):
    """Breakers (state, failure rate, open until), budgets (usage, pause) and the health of
    each component as the health monitor last saw it."""
    _require_staff(request)
    return await sync_to_async(_snapshot)()


def _operate(*, user: Any, name: str, action: str) -> dict[str, Any]:
    if not (user.has_perm("reliability.change_circuitbreaker") and may_operate_controls(user)):
        raise HttpError(
            403,
            "operating breakers needs the permissions reliability.change_circuitbreaker "
            "and reliability.operate_controls",
        )
    meant = names_meant(name)
    existing = set(CircuitBreaker.objects.filter(name__in=meant).values_list("name", flat=True))
    names = [member for member in meant if member in existing]
    if not names:
        raise HttpError(404, f"no breaker named {name!r}")
    actor = user.get_username()
    reason = f"{action} through the API by {actor}"
    if meant == [name]:
        breaker = ACTIONS_BY_SLUG[action](name=name, actor=actor, reason=reason)
        return breaker_status(breaker, now=time.time())
    results = operate_breakers(ACTIONS_BY_SLUG[action], names=names, actor=actor, reason=reason)
    if all(result.refusal and not result.already for result in results):
        raise BreakerActionError(
            f"refused for every breaker of {name!r}: "
            + "; ".join(result.refusal for result in results)
        )
    now = time.time()
    breakers = {b.name: b for b in CircuitBreaker.objects.filter(name__in=names)}
    return {
        "family": name,
        "breakers": [
            {
                "done": result.breaker is not None,
                "detail": result.refusal,
                "breaker": breaker_status(breakers[result.name], now=now),
            }
            for result in results
        ],
    }


@router.post(
    "/breakers/{name}/{action}",
    response={200: BreakerOut | FamilyActionOut, 403: None, 404: None, 409: None},
    by_alias=True,
    summary="Operate a breaker",
)
async def operate_breaker(
    request: HttpRequest, name: Path[BreakerName], action: Path[BreakerActionSlug]
):
    """reset (close, clear counts), force-open (reject every call), disable (admit every
    call) or enable (end forced-open or disabled). A family's name (``anthropic``) acts on each
    of its members (``anthropic:<model>``, one per model) and answers with each; 409 only when
    every member refused. Staff with the permissions to change
    breakers and to operate the reliability controls, as in the admin."""
    _require_staff(request)
    return await sync_to_async(_operate)(user=request.auth, name=name, action=action)
