"""The staff's reliability API: the state of breakers, budgets and health, and the breaker
actions through the same services as the admin (same transitions, same history)."""

from __future__ import annotations

import datetime as dt

import pytest

from reliability.breaker import admit, get_or_create_breaker, record
from reliability.families import members
from reliability.models import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    HealthComponentState,
    HealthStatus,
)
from reliability.outcomes import BreakerVerdict
from reliability.ratelimit import get_or_create_budget
from tests.api_support import ANONYMOUS, caller

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR = ("change_circuitbreaker", "operate_controls")
# One breaker per model of EIDOLON_AI_MODELS; "anthropic" names them all.
PRIMARY, FALLBACK = members("anthropic")


def open_breaker(name: str, *, recovery_timeout: float) -> None:
    """Breaker ``name``, opened by one overloaded reply."""
    get_or_create_breaker(name)
    CircuitBreaker.objects.filter(name=name).update(
        failure_threshold=1, recovery_timeout=recovery_timeout
    )
    record(admit(name), BreakerVerdict.FAILURE, duration=0.1, reason="http_529")


@pytest.fixture
def operator():
    return caller("olga", staff=True, permissions=OPERATOR)


@pytest.fixture
def viewer():
    """Staff, without the permission to change breakers."""
    return caller("vera", staff=True)


@pytest.fixture
def member():
    """Not staff, even with the permission."""
    return caller("alice", permissions=OPERATOR)


@pytest.fixture
def state() -> None:
    open_breaker(PRIMARY, recovery_timeout=3600)
    get_or_create_breaker(FALLBACK)
    get_or_create_breaker("git")
    get_or_create_budget(PRIMARY)
    HealthComponentState.objects.create(
        name="database",
        status=HealthStatus.HEALTHY,
        critical=True,
        message="ok",
        latency_ms=1.5,
        since=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
    )


class TestState:
    async def test_staff__breakers_budgets_and_health(self, operator, state):
        response = await operator.call("GET", "/api/reliability")
        assert response.status_code == 200
        body = response.json()
        breakers = {breaker["name"]: breaker for breaker in body["breakers"]}
        assert breakers[PRIMARY]["state"] == "open"
        assert breakers[PRIMARY]["last_transition"]["from"] == "closed"
        assert breakers[PRIMARY]["last_transition"]["to"] == "open"
        assert breakers[PRIMARY]["open_until"] is not None
        assert breakers[FALLBACK]["state"] == "closed"
        assert breakers["git"]["state"] == "closed"
        assert [budget["name"] for budget in body["budgets"]] == [PRIMARY]
        ai = body["ai"]
        assert (ai["serving"], ai["degraded"]) == ("claude-haiku-4-5", True)
        assert [(m["model"], m["state"], m["admits"]) for m in ai["members"]] == [
            ("claude-sonnet-5-5", "open", False),
            ("claude-haiku-4-5", "closed", True),
        ]
        assert ai["members"][0]["open_until"] == breakers[PRIMARY]["open_until"]
        assert body["budgets"][0]["limits"]["requests_per_window"] == 50
        assert body["health"] == [
            {
                "name": "database",
                "status": "healthy",
                "critical": True,
                "message": "ok",
                "detail": "",
                "latency_ms": 1.5,
                "since": "2026-11-30T00:00:00+00:00",
                "checked_at": None,
            }
        ]

    async def test_staff_without_the_change_permission__may_look(self, viewer, state):
        assert (await viewer.call("GET", "/api/reliability")).status_code == 200

    async def test_not_staff__403__anonymous__401(self, member, state):
        response = await member.call("GET", "/api/reliability")
        assert response.status_code == 403
        assert response.json() == {"detail": "staff only"}
        assert (await ANONYMOUS.call("GET", "/api/reliability")).status_code == 401


class TestBreakerActions:
    @pytest.mark.parametrize(
        ("action", "state_after"),
        [
            ("reset", BreakerState.CLOSED),
            ("force-open", BreakerState.FORCED_OPEN),
            ("disable", BreakerState.DISABLED),
        ],
    )
    async def test_action__changes_the_state_and_records_who(
        self, operator, state, action, state_after
    ):
        response = await operator.call("POST", f"/api/reliability/breakers/{PRIMARY}/{action}")
        assert response.status_code == 200
        assert response.json()["state"] == state_after
        breaker = await CircuitBreaker.objects.aget(name=PRIMARY)
        assert breaker.state == state_after
        transition = await BreakerTransition.objects.filter(breaker=breaker).alatest("created_at")
        assert transition.actor == "olga"
        assert transition.reason == f"{action} through the API by olga"

    async def test_enable__ends_forced_open__409_when_there_is_nothing_to_enable(
        self, operator, state
    ):
        await operator.call("POST", "/api/reliability/breakers/git/force-open")
        enabled = await operator.call("POST", "/api/reliability/breakers/git/enable")
        again = await operator.call("POST", "/api/reliability/breakers/git/enable")
        assert enabled.status_code == 200 and enabled.json()["state"] == "closed"
        assert again.status_code == 409
        assert "nothing to enable" in again.json()["detail"]

    async def test_the_family_name__acts_on_each_model_and_answers_with_each(self, operator, state):
        response = await operator.call("POST", "/api/reliability/breakers/anthropic/reset")
        assert response.status_code == 200
        body = response.json()
        assert body["family"] == "anthropic"
        assert [
            (item["breaker"]["name"], item["breaker"]["state"], item["done"], item["detail"])
            for item in body["breakers"]
        ] == [
            (PRIMARY, "closed", True, ""),
            (FALLBACK, "closed", False, f"breaker '{FALLBACK}' is already closed"),
        ]
        assert not await CircuitBreaker.objects.filter(name="anthropic").aexists()
        forced = await operator.call("POST", "/api/reliability/breakers/anthropic/force-open")
        assert [item["breaker"]["state"] for item in forced.json()["breakers"]] == [
            "forced_open",
            "forced_open",
        ]

    async def test_the_family_name__409_when_every_member_refuses(self, operator, state):
        response = await operator.call("POST", "/api/reliability/breakers/anthropic/enable")
        assert response.status_code == 409
        assert response.json()["detail"].startswith("refused for every breaker of 'anthropic'")

    async def test_an_unknown_breaker__404_and_none_is_created(self, operator, state):
        response = await operator.call("POST", "/api/reliability/breakers/nonesuch/reset")
        assert response.status_code == 404
        assert response.json() == {"detail": "no breaker named 'nonesuch'"}
        assert not await CircuitBreaker.objects.filter(name="nonesuch").aexists()

    @pytest.mark.parametrize(
        "url",
        [
            "/api/reliability/breakers/anthropic/explode",  # not an action: 422
            "/api/reliability/breakers/anthropic/force_open",  # the URL spells it force-open: 422
            "/api/reliability/breakers/a%20b/reset",  # not a name: 422
            "/api/reliability/breakers/a%00b/reset",  # NUL: 422
            f"/api/reliability/breakers/{'a' * 65}/reset",  # longer than a name may be: 422
        ],
    )
    async def test_a_bad_name_or_action__422(self, operator, state, url):
        response = await operator.call("POST", url)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "path"

    async def test_staff_without_the_change_permission__403__as_in_the_admin(self, viewer, state):
        response = await viewer.call("POST", "/api/reliability/breakers/anthropic/reset")
        assert response.status_code == 403
        assert (await CircuitBreaker.objects.aget(name=PRIMARY)).state == BreakerState.OPEN

    async def test_not_staff__403__anonymous__401(self, member, state):
        url = "/api/reliability/breakers/anthropic/reset"
        assert (await member.call("POST", url)).status_code == 403
        assert (await ANONYMOUS.call("POST", url)).status_code == 401
        assert (await CircuitBreaker.objects.aget(name=PRIMARY)).state == BreakerState.OPEN
