"""The status strip: its data (one function, few queries), the admin index showing it in full and
the home page showing anonymous visitors only its public part."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection

from analyses.models import Analysis, AnalysisStatus, LLMCall
from eidolon_site.status_strip import status_strip
from reliability.controls import breaker_reset
from reliability.health.history import monitor_stale_after
from reliability.models import BreakerState, CircuitBreaker, HealthComponentState, RateLimitBudget
from reliability.ratelimit import utc_day_start

pytestmark = pytest.mark.django_db

PAUSE_REASON = "paused: upstream spend limit (private)"
HEALTH_DETAIL = "OperationalError: password authentication failed (private)"


def breaker(name: str, state: str) -> CircuitBreaker:
    now = time.time()
    return CircuitBreaker.objects.create(
        name=name, state=state, state_changed_at=now, window_started_at=now
    )


def llm_call(cost: str | None, *, days_ago: int = 0) -> LLMCall:
    call = LLMCall.objects.create(
        provider="anthropic",
        model="claude-sonnet-4-5",
        attempt=1,
        status="ok",
        latency_ms=5,
        cost_usd=None if cost is None else Decimal(cost),
    )
    if days_ago:
        earlier = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=days_ago)
        LLMCall.objects.filter(pk=call.pk).update(created_at=earlier)
    return call


@pytest.fixture
def busy_service():
    """A degraded service: an open and a closed breaker, a paused budget that spent money
    today, analyses queued and running, LLM calls today and yesterday."""
    now = time.time()
    HealthComponentState.objects.create(
        name="overall",
        status="degraded",
        message="disk: 93% used",
        detail=HEALTH_DETAIL,
        since=dt.datetime.now(tz=dt.UTC),
        checked_at=dt.datetime.now(tz=dt.UTC),
    )
    breaker("anthropic", BreakerState.OPEN)
    breaker("git", BreakerState.CLOSED)
    RateLimitBudget.objects.create(
        name="nightly-batch",
        requests_per_day=1000,
        day_started_at=utc_day_start(now),
        day_requests=250,
        day_tokens=123_456,
        day_cost_usd=Decimal("0.98765432"),
        paused_until=now + 600,
        pause_reason=PAUSE_REASON,
    )
    for status, count in ((AnalysisStatus.RUNNING, 2), (AnalysisStatus.QUEUED, 3)):
        for _ in range(count):
            Analysis.objects.create(source="/srv/private-repo", status=status)
    Analysis.objects.create(source="/srv/done", status=AnalysisStatus.COMPLETED)
    llm_call("0.0100")
    llm_call("0.0023")
    llm_call(None)  # unpriced: counts nothing
    llm_call("5.0000", days_ago=1)


class TestStatusStrip:
    def test_full__health_breakers_budget_day_analyses_and_spend_today(self, busy_service):
        strip = status_strip(public=False)
        assert strip.health.status == "degraded"
        assert [(b.name, b.state) for b in strip.breakers] == [
            ("anthropic", "open"),
            ("git", "closed"),
        ]
        (budget,) = strip.budgets
        assert (budget.requests, budget.requests_per_day, budget.tokens) == (250, 1000, 123_456)
        assert budget.cost_usd == Decimal("0.98765432") and budget.paused
        assert budget.requests_percent == 25.0
        assert (strip.running, strip.queued) == (2, 3)
        assert strip.spend_today_usd == Decimal("0.0123")

    def test_public__no_budgets_and_no_money(self, busy_service):
        strip = status_strip(public=True)
        assert strip.budgets == [] and strip.spend_today_usd is None
        assert strip.health.status == "degraded" and (strip.running, strip.queued) == (2, 3)

    def test_five_queries_in_full__three_in_public(self, busy_service, django_assert_num_queries):
        with django_assert_num_queries(5):
            status_strip(public=False)
        with django_assert_num_queries(3):
            status_strip(public=True)

    def test_a_budget_last_used_yesterday__nothing_used_today(self, busy_service):
        RateLimitBudget.objects.update(day_started_at=utc_day_start(time.time()) - 86_400)
        (budget,) = status_strip(public=False).budgets
        assert (budget.requests, budget.tokens, budget.cost_usd) == (0, 0, Decimal(0))

    def test_a_stale_or_missing_health_record__unknown(self, busy_service):
        stale = dt.datetime.now(tz=dt.UTC) - monitor_stale_after() - dt.timedelta(seconds=5)
        HealthComponentState.objects.filter(name="overall").update(checked_at=stale)
        assert status_strip(public=True).health.status == "unknown"
        HealthComponentState.objects.all().delete()
        assert status_strip(public=True).health.status == "unknown"


@pytest.fixture
def operator(client):
    user = User.objects.create_user("operator", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


class TestAdminIndex:
    def test_shows_the_strip_in_colour_with_links(self, busy_service, operator, client):
        response = client.get("/admin/")
        body = response.content.decode()
        assert response.status_code == 200
        assert 'class="state state-degraded"' in body
        assert 'class="state state-open">anthropic open' in body
        assert 'class="state state-closed">git closed' in body
        assert "250 / 1,000 requests" in body and "123,456 tokens" in body
        assert "$0.9877 today" in body  # the budget's spend, to the hundredth of a cent
        assert "$0.0123" in body  # today's LLM calls
        assert "2 running" in body and "3 queued" in body
        for link in (
            "/admin/reliability/healthcomponentstate/",
            "/admin/reliability/circuitbreaker/",
            "/admin/reliability/ratelimitbudget/",
            "/admin/analyses/analysis/?status__exact=running",
            "/admin/analyses/llmcall/",
            "/admin/reliability/modelprice/",
            'href="/health"',
        ):
            assert link in body, link
        assert "Reliability" in body  # Django's app list is still there, below

    def test_an_empty_service__says_so(self, operator, client):
        body = client.get("/admin/").content.decode()
        assert "state-unknown" in body and "the health monitor has not run" in body
        assert "none yet (created on first use)" in body and "$0.0000" in body


class TestHomePage:
    def test_anonymous__public_strip_with_links__no_money_or_private_data(
        self, busy_service, client
    ):
        response = client.get("/")
        body = response.content.decode()
        assert response.status_code == 200
        assert 'class="pill state-degraded"' in body
        assert "state-open" in body and "anthropic open" in body
        assert "2 running" in body and "3 queued" in body
        assert 'href="/health"' in body and 'href="/analyses/"' in body
        assert 'href="/analyses/?status=running"' in body
        for private in (
            "$",
            "0.0123",
            "0.9877",
            "0.98765432",
            "nightly-batch",
            "123456",
            PAUSE_REASON,
            HEALTH_DETAIL,
            "93% used",
            "/srv/private-repo",
            "Budgets and spend today",
        ):
            assert private not in body, private

    def test_staff__a_link_to_the_full_strip(self, busy_service, operator, client):
        body = client.get("/").content.decode()
        assert "Budgets and spend today in the admin" in body
        assert "0.0123" not in body  # the home page shows no money, even to staff

    def test_database_unreadable__the_page_without_the_strip(self, client):
        def refuse(execute, sql, params, many, context):
            raise OperationalError("the database is down")

        with connection.execute_wrapper(refuse):
            response = client.get("/")
        body = response.content.decode()
        assert response.status_code == 200
        assert "Status unavailable right now" in body and "strip-health" not in body

    def test_kept_a_moment__one_read_serves_a_burst_of_visitors(
        self, busy_service, client, settings, django_assert_max_num_queries
    ):
        settings.EIDOLON_STATUS_STRIP_CACHE_SECONDS = 60
        assert "anthropic open" in client.get("/").content.decode()
        breaker_reset(name="anthropic", actor="ops", reason="recovered")
        with django_assert_max_num_queries(0):
            assert "anthropic open" in client.get("/").content.decode()  # still the reading
        settings.EIDOLON_STATUS_STRIP_CACHE_SECONDS = 0
        assert "anthropic closed" in client.get("/").content.decode()

    def test_nothing_recorded_yet__unknown_and_no_breakers(self, client):
        body = client.get("/").content.decode()
        assert "state-unknown" in body and "no calls yet" in body
        assert "0 running" in body
