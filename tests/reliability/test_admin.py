"""Operators in the Django admin: who may act, what an action does, what it leaves behind."""

from __future__ import annotations

import time

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User

from reliability.breaker import admit, get_or_create_breaker, record
from reliability.families import members
from reliability.models import (
    CONFIG_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    RateLimitBudget,
)
from reliability.outcomes import BreakerVerdict
from reliability.ratelimit import Ask, pause, reserve
from tests.anthropic_support import open_anthropic_breaker
from tests.processes import run_manage, subprocess_environment

CHANGELIST = "/admin/reliability/circuitbreaker/"

ADMIT_FROM_ANOTHER_PROCESS = """
from reliability.breaker import admit
from reliability.exceptions import CircuitOpenError
try:
    admit("anthropic")
    print("ADMITTED")
except CircuitOpenError as error:
    print("REJECTED", error)
"""


def admit_in_another_process() -> str:
    result = run_manage(
        "shell",
        "-c",
        ADMIT_FROM_ANOTHER_PROCESS,
        env=subprocess_environment(EIDOLON_LOG_LEVEL="WARNING"),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def staff_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username=username, password="pw-for-tests-only", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def confirmed(action: str, breaker: CircuitBreaker, reason: str = "provider recovered") -> dict:
    """The form of an action's confirmation page, confirmed with ``reason``."""
    return {"action": action, "_selected_action": [breaker.pk], "confirm": "yes", "reason": reason}


def reset_action(client, breaker: CircuitBreaker):
    return client.post(CHANGELIST, confirmed("reset", breaker), follow=True)


@pytest.mark.django_db(transaction=True)
class TestBreakerActions:
    def test_only_holders_of_the_change_permission_can_reset__and_it_reaches_other_processes(
        self, client
    ):
        breaker = open_anthropic_breaker(recovery_timeout=3600)
        assert admit_in_another_process().startswith("REJECTED circuit 'anthropic' is open")

        client.force_login(staff_user("viewer", "view_circuitbreaker"))
        listing = client.get(CHANGELIST)
        assert listing.status_code == 200
        assert 'value="reset"' not in listing.content.decode()
        reset_action(client, breaker)
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.OPEN
        assert BreakerTransition.objects.count() == 1

        client.force_login(
            staff_user("olga", "view_circuitbreaker", "change_circuitbreaker", "operate_controls")
        )
        assert 'value="reset"' in client.get(CHANGELIST).content.decode()
        response = reset_action(client, breaker)
        assert "Breaker &#x27;anthropic&#x27;: reset." in response.content.decode()
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.CLOSED
        transition = BreakerTransition.objects.order_by("-id").first()
        assert (transition.from_state, transition.to_state) == ("open", "closed")
        assert transition.actor == "olga"
        assert transition.reason == "provider recovered"
        assert LogEntry.objects.filter(user__username="olga", object_id=str(breaker.pk)).exists()

        assert admit_in_another_process() == "ADMITTED"


@pytest.mark.django_db
class TestBreakerPages:
    @pytest.fixture
    def operator(self, client):
        client.force_login(
            staff_user("op", "view_circuitbreaker", "change_circuitbreaker", "operate_controls")
        )
        return client

    def test_the_list_shows_state_in_colour__counts_and_open_until(self, operator):
        open_anthropic_breaker(recovery_timeout=3600)
        body = operator.get(CHANGELIST).content.decode()
        assert 'style="background:#c92a2a">open</span>' in body
        assert "0% of 0 calls" in body  # counts restart with each transition
        assert "→ open (system)" in body
        assert "will retry" not in body and "20" in body  # open-until is a timestamp

    def test_the_list_shows_each_models_place_in_the_chain_and_which_serves(self, operator):
        primary, fallback = members("anthropic")
        for name in (primary, fallback, "git"):
            get_or_create_breaker(name)
        CircuitBreaker.objects.filter(name=primary).update(failure_threshold=1)
        record(admit(primary), BreakerVerdict.FAILURE, duration=0.1)
        body = operator.get(CHANGELIST).content.decode()
        assert 'claude-sonnet-5-5 <small class="quiet">(primary)</small></td>' in body
        assert (
            'claude-haiku-4-5 <small class="quiet">(fallback 1)</small> '
            '<strong data-serving="true">serving</strong>'
        ) in body
        assert body.count('data-serving="true"') == 1

    def test_a_models_breaker_takes_new_thresholds(self, operator):
        breaker = get_or_create_breaker(members("anthropic")[1])
        url = f"{CHANGELIST}{breaker.pk}/change/"
        response = operator.post(url, self.change_form_data(breaker, failure_threshold=9))
        assert response.status_code == 302
        assert CircuitBreaker.objects.get(pk=breaker.pk).failure_threshold == 9

    def test_force_open_disable_and_enable_are_recorded_with_the_actor(self, operator):
        breaker = open_anthropic_breaker(recovery_timeout=3600)
        for action, state in [
            ("force_open", BreakerState.FORCED_OPEN),
            ("enable", BreakerState.CLOSED),
            ("disable", BreakerState.DISABLED),
            ("enable", BreakerState.CLOSED),
        ]:
            operator.post(CHANGELIST, confirmed(action, breaker))
            assert CircuitBreaker.objects.get(pk=breaker.pk).state == state
        actors = set(
            BreakerTransition.objects.exclude(actor="system").values_list("actor", flat=True)
        )
        assert actors == {"op"}

    def test_enable_on_a_closed_breaker_says_why_nothing_happened(self, operator):
        breaker = open_anthropic_breaker(recovery_timeout=3600)
        operator.post(CHANGELIST, confirmed("reset", breaker))
        response = operator.post(
            CHANGELIST, {"action": "enable", "_selected_action": [breaker.pk]}, follow=True
        )
        assert "nothing to enable" in response.content.decode()

    def change_form_data(self, breaker: CircuitBreaker, **changes) -> dict:
        data = {field: getattr(breaker, field) for field in CONFIG_FIELDS}
        data.update(changes)
        return data

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"failure_threshold": 0}, "Ensure this value is greater than or equal to 1."),
            ({"failure_rate_threshold": 150}, "less than or equal to 100"),
            ({"minimum_calls": 50, "window_size": 20}, "never holds more than N calls"),
            ({"recovery_timeout": "soon"}, "Enter a number."),
        ],
    )
    def test_invalid_thresholds_are_refused_with_a_reason(self, operator, changes, message):
        breaker = open_anthropic_breaker(recovery_timeout=3600)
        url = f"{CHANGELIST}{breaker.pk}/change/"
        response = operator.post(url, self.change_form_data(breaker, **changes))
        assert response.status_code == 200
        assert message in response.content.decode()
        assert CircuitBreaker.objects.get(pk=breaker.pk).failure_threshold == 1

    def test_a_saved_threshold_leaves_the_live_state_alone(self, operator):
        CircuitBreaker.objects.create(
            name="anthropic",
            failure_threshold=5,
            state_changed_at=time.time(),
            window_started_at=time.time(),
        )
        stale = CircuitBreaker.objects.get(name="anthropic")  # the form was loaded while closed
        for _ in range(5):  # ...and meanwhile another process opened the breaker
            record(admit("anthropic"), BreakerVerdict.FAILURE, duration=0.1)
        url = f"{CHANGELIST}{stale.pk}/change/"
        response = operator.post(url, self.change_form_data(stale, failure_threshold=7))
        assert response.status_code == 302
        saved = CircuitBreaker.objects.get(pk=stale.pk)
        assert saved.failure_threshold == 7
        assert saved.state == BreakerState.OPEN
        assert saved.generation == 1

    def test_anonymous_users_are_sent_to_the_login_page(self, client):
        response = client.get(CHANGELIST)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
class TestBudgetPages:
    def test_budgets_show_limits_usage_and_pause(self, client):
        reserve("anthropic", Ask(input_tokens=100, output_tokens=50))
        pause("anthropic", until=time.time() + 120, reason="http_429: retry-after 120 s")
        client.force_login(
            staff_user("op", "view_ratelimitbudget", "change_ratelimitbudget", "operate_controls")
        )
        body = client.get("/admin/reliability/ratelimitbudget/").content.decode()
        assert "1 of 50 requests, 100 in / 50 out tokens" in body
        assert "1 of 5000 requests" in body
        assert ">paused</span> until 20" in body
        budget = RateLimitBudget.objects.get()
        detail = client.get(f"/admin/reliability/ratelimitbudget/{budget.pk}/change/")
        assert "50 req, 40000 in, 8000 out per 60 s; 5000 req/day" in detail.content.decode()
        assert "http_429: retry-after 120 s" in detail.content.decode()
        response = client.post(
            "/admin/reliability/ratelimitbudget/",
            {"action": "resume_now", "_selected_action": [RateLimitBudget.objects.get().pk]},
            follow=True,
        )
        assert "Resumed." in response.content.decode()
