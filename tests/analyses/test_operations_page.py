"""The operator dashboard at /operations/: staff only; breakers, budgets and health as they are;
its buttons act through reliability.controls in the operator's name."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from reliability.breaker import admit, get_or_create_breaker, record
from reliability.families import members
from reliability.models import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    HealthComponentState,
    HealthStatus,
    HealthTransition,
    RateLimitBudget,
)
from reliability.outcomes import BreakerVerdict
from tests.analyses.page_support import make_user
from tests.anthropic_support import open_anthropic_breaker

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    """Staff who may operate the controls (reliability.operate_controls)."""
    user = make_user("operator", staff=True)
    user.user_permissions.add(Permission.objects.get(codename="operate_controls"))
    return user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def component(name: str, *, history: list[tuple[float, str]], critical: bool = True):
    """A health component whose status changed ``hours`` ago to ``status``, oldest first."""
    now = timezone.now()
    last_hours, last_status = history[-1]
    state = HealthComponentState.objects.create(
        name=name,
        status=last_status,
        critical=critical,
        message=f"{name} is {last_status}",
        since=now - dt.timedelta(hours=last_hours),
        checked_at=now,
        latency_ms=3.5,
    )
    previous = HealthStatus.UNKNOWN
    for hours, status in history:
        HealthTransition.objects.create(
            component=state,
            from_status=previous,
            to_status=status,
            created_at=now - dt.timedelta(hours=hours),
        )
        previous = status
    return state


class TestAccess:
    def test_anonymous__goes_to_login(self, client):
        assert client.get("/operations/")["Location"] == "/accounts/login/?next=/operations/"
        get_or_create_breaker("git")
        response = client.post("/operations/breakers/git/force-open/")
        assert response["Location"].startswith("/accounts/login/")
        assert CircuitBreaker.objects.get(name="git").state == BreakerState.CLOSED

    def test_users_who_are_not_staff__are_refused(self):
        client = signed_in(make_user("alice"))
        get_or_create_breaker("git")
        assert client.get("/operations/").status_code == 403
        assert client.post("/operations/breakers/git/force-open/").status_code == 403
        assert CircuitBreaker.objects.get(name="git").state == BreakerState.CLOSED

    def test_empty__says_what_will_appear(self, operator):
        page = signed_in(operator).get("/operations/").content.decode()
        assert "No breaker yet" in page and "No budget yet" in page
        assert "is <code>manage.py health_monitor</code> running?" in page


class TestDashboard:
    def test_breakers__state_failure_rate_open_until_and_the_actions_that_apply(self, operator):
        opened = open_anthropic_breaker(recovery_timeout=300)
        get_or_create_breaker("git")
        page = signed_in(operator).get("/operations/").content.decode()
        assert 'data-breaker="anthropic" data-state="open"' in page
        assert '<span class="pill state state-open">open</span>' in page
        assert re.search(r"<dt>failure rate</dt><dd>[\d.]+ %</dd>", page)
        until = dt.datetime.fromtimestamp(opened.open_until, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        assert f"<dt>open until</dt><dd>{until}</dd>" in page
        anthropic = page[page.index('data-breaker="anthropic"') : page.index('data-breaker="git"')]
        actions = re.findall(r'data-action="([a-z-]+)"', anthropic)
        assert actions == ["reset", "force-open", "disable"]
        assert 'data-breaker="git" data-state="closed"' in page

    def test_budgets__a_bar_per_limit_and_the_pause(self, operator):
        now = time.time()
        RateLimitBudget.objects.create(
            name="anthropic",
            requests_per_window=50,
            window_started_at=now - 5,
            window_requests=45,
            window_input_tokens=1000,
            total_input_tokens=1000,
            day_started_at=now - 5,
            day_requests=45,
            paused_until=now + 120,
            pause_reason="429 from the API",
        )
        page = signed_in(operator).get("/operations/").content.decode()
        assert 'max="50" low="35" high="45" optimum="0" value="45"' in page
        assert "45 / 50" in page and "1000 / 40000" in page and "tokens today" in page
        assert "paused until" in page and "429 from the API" in page
        assert 'action="/operations/budgets/anthropic/resume/"' in page

    def test_submission_budgets__show_requests_only(self, operator):
        RateLimitBudget.objects.create(name="submissions:7", requests_per_window=30)
        page = signed_in(operator).get("/operations/").content.decode()
        budget = page[page.index('data-budget="submissions:7"') :]
        assert "requests / window" in budget and "input tokens" not in budget

    def test_health__each_component_with_status_and_24h_uptime(self, operator):
        component("database", history=[(2, HealthStatus.HEALTHY)])
        component("disk", history=[(2, HealthStatus.HEALTHY), (1, HealthStatus.UNHEALTHY)])
        component("overall", history=[(2, HealthStatus.HEALTHY)], critical=False)
        page = signed_in(operator).get("/operations/").content.decode()
        names = re.findall(r"<td><strong>([a-z_]+)</strong>", page)
        assert names == ["overall", "database", "disk"]
        disk = page[page.index("<strong>disk</strong>") :]
        assert '<span class="pill state state-unhealthy">unhealthy</span>' in disk
        assert re.search(r"</meter> 50\.0\d %", disk)  # up 1 h of the 2 h observed
        assert "100.00 %" in page and "3.5 ms" in page

    def test_links_to_the_admin_pages(self, operator):
        page = signed_in(operator).get("/operations/").content.decode()
        for url in (
            "/admin/reliability/circuitbreaker/",
            "/admin/reliability/ratelimitbudget/",
            "/admin/reliability/healthcomponentstate/",
            "/admin/analyses/analysis/",
        ):
            assert f'href="{url}"' in page, url


class TestActions:
    @pytest.mark.parametrize(
        ("slug", "state"),
        [("force-open", BreakerState.FORCED_OPEN), ("disable", BreakerState.DISABLED)],
    )
    def test_breaker_action__applies_in_the_operators_name(self, operator, slug, state):
        get_or_create_breaker("git")
        response = signed_in(operator).post(
            f"/operations/breakers/git/{slug}/", {"reason": "drill"}, follow=True
        )
        assert CircuitBreaker.objects.get(name="git").state == state
        last = BreakerTransition.objects.latest("id")
        assert last.actor == "operator" and last.to_state == state and last.reason == "drill"
        assert ControlChange.objects.get(action=slug.replace("-", "_")).reason == "drill"
        assert "Breaker git is now" in response.content.decode()

    @pytest.mark.parametrize("slug", ["force-open", "disable", "reset"])
    def test_a_drastic_action_without_a_reason__does_nothing_and_says_why(self, operator, slug):
        open_anthropic_breaker(recovery_timeout=300)
        response = signed_in(operator).post(
            f"/operations/breakers/anthropic/{slug}/", {"reason": "  "}, follow=True
        )
        assert "give a reason first; nothing was done" in response.content.decode()
        assert CircuitBreaker.objects.get(name="anthropic").state == BreakerState.OPEN
        assert not ControlChange.objects.exists()

    def test_the_drastic_buttons_ask_for_a_reason(self, operator):
        get_or_create_breaker("git")
        page = signed_in(operator).get("/operations/").content.decode()
        for action in ("force open", "disable", "reset"):
            assert f'required maxlength="200" placeholder="reason to {action}"' in page
        assert 'placeholder="reason to enable"' not in page

    def test_reset__closes_an_open_breaker(self, operator):
        open_anthropic_breaker(recovery_timeout=300)
        signed_in(operator).post("/operations/breakers/anthropic/reset/", {"reason": "recovered"})
        assert CircuitBreaker.objects.get(name="anthropic").state == BreakerState.CLOSED

    def test_enable_on_a_closed_breaker__says_why_not(self, operator):
        get_or_create_breaker("git")
        response = signed_in(operator).post("/operations/breakers/git/enable/", follow=True)
        assert "nothing to enable" in response.content.decode()
        assert CircuitBreaker.objects.get(name="git").state == BreakerState.CLOSED

    def test_unknown_breaker_or_action__404_and_nothing_created(self, operator):
        client = signed_in(operator)
        get_or_create_breaker("git")
        assert client.post("/operations/breakers/nope/reset/").status_code == 404
        assert client.post("/operations/breakers/git/explode/").status_code == 404
        assert not CircuitBreaker.objects.filter(name="nope").exists()

    def test_budget_resume__ends_the_pause(self, operator):
        RateLimitBudget.objects.create(name="anthropic", paused_until=time.time() + 300)
        signed_in(operator).post("/operations/budgets/anthropic/resume/")
        assert RateLimitBudget.objects.get(name="anthropic").paused_until == 0.0
        assert signed_in(operator).post("/operations/budgets/nope/resume/").status_code == 404

    def test_posts_without_csrf__are_refused(self, operator):
        get_or_create_breaker("git")
        client = Client(enforce_csrf_checks=True)
        client.force_login(operator)
        assert client.post("/operations/breakers/git/force-open/").status_code == 403
        assert CircuitBreaker.objects.get(name="git").state == BreakerState.CLOSED


class TestServingModel:
    """Which model reviews, coloured as its state; each model's breaker has its own panel."""

    def _open(self, name: str) -> None:
        get_or_create_breaker(name)
        CircuitBreaker.objects.filter(name=name).update(failure_threshold=1, recovery_timeout=300)
        record(admit(name), BreakerVerdict.FAILURE, duration=0.1, reason="http_529")

    def test_the_fallback_serves_while_the_primarys_breaker_is_open__amber(self, operator):
        primary, fallback = members("anthropic")
        self._open(primary)
        get_or_create_breaker(fallback)
        page = signed_in(operator).get("/operations/").content.decode()
        assert 'data-serving-model="claude-haiku-4-5" data-degraded="true"' in page
        assert (
            '<span class="pill state state-degraded" data-role="serving">'
            "reviewing on claude-haiku-4-5</span>"
        ) in page
        assert "(claude-sonnet-5-5 open until " in page
        assert f'data-breaker="{primary}" data-state="open"' in page
        # Its buttons reach the member's breaker by its full name.
        response = signed_in(operator).post(
            f"/operations/breakers/{primary}/reset/", {"reason": "recovered"}
        )
        assert response.status_code == 302
        assert CircuitBreaker.objects.get(name=primary).state == BreakerState.CLOSED
        page = signed_in(operator).get("/operations/").content.decode()
        assert 'data-serving-model="claude-sonnet-5-5" data-degraded="false"' in page
        assert (
            '<span class="pill state state-closed" data-role="serving">'
            "reviewing on claude-sonnet-5-5</span>"
        ) in page

    def test_no_model_admits__red(self, operator):
        for name in members("anthropic"):
            self._open(name)
        page = signed_in(operator).get("/operations/").content.decode()
        assert 'data-serving-model="" data-degraded="false"' in page
        assert (
            '<span class="pill state state-open" data-role="serving">no model admits reviews</span>'
        ) in page
