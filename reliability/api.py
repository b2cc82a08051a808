"""The staff's JSON API of the reliability controls: the state of breakers, budgets and health,
and the breaker actions, through the same services as the admin and ``manage.py reliability``.

Staff only (403 for other users; the site's API answers 401 to anonymous callers); the
actions also need the permissions to change breakers and to operate the reliability controls
(``reliability.operate_controls``), as the admin's do. An action applies to a
breaker that exists (404 otherwise: the API never creates breakers); one that does not fit the
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

from reliability.controls import ACTIONS_BY_SLUG, may_operate_controls
from reliability.models import HEALTH_COMPONENT_FIELDS, CircuitBreaker, HealthComponentState
from reliability.status import breaker_status, health_components, reliability_snapshot

router = Router(tags=["reliability"])

BreakerName = Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]{1,64}$")]
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


class ReliabilityOut(Schema):
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
    if not CircuitBreaker.objects.filter(name=name).exists():
        raise HttpError(404, f"no breaker named {name!r}")
    actor = user.get_username()
    breaker = ACTIONS_BY_SLUG[action](
        name=name, actor=actor, reason=f"{action} through the API by {actor}"
    )
    return breaker_status(breaker, now=time.time())


@router.post(
    "/breakers/{name}/{action}",
    response={200: BreakerOut, 403: None, 404: None, 409: None},
    by_alias=True,
    summary="Operate a breaker",
)
async def operate_breaker(
    request: HttpRequest, name: Path[BreakerName], action: Path[BreakerActionSlug]
):
    """reset (close, clear counts), force-open (reject every call), disable (admit every
    call) or enable (end forced-open or disabled). Staff with the permissions to change
    breakers and to operate the reliability controls, as in the admin."""
    _require_staff(request)
    return await sync_to_async(_operate)(user=request.auth, name=name, action=action)
