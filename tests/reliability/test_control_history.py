"""Operators' changes are traceable: every threshold or limit edit and every action is recorded
with who, when, old and new values and why (admin and CLI alike); drastic actions need a
confirmation with a reason; the breaker's page shows its history and its action buttons."""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from reliability.breaker import get_or_create_breaker
from reliability.families import members
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    CONFIG_FIELDS,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    RateLimitBudget,
)
from reliability.ratelimit import get_or_create_budget, pause
from tests.reliability.test_reliability_command import open_breaker

# The primary model's breaker and budget: "anthropic" now names every model's.
PRIMARY = members("anthropic")[0]

pytestmark = pytest.mark.django_db

BREAKERS = "/admin/reliability/circuitbreaker/"
BUDGETS = "/admin/reliability/ratelimitbudget/"


@pytest.fixture
def operator(client):
    user = User.objects.create_user("olga", password="pw-for-tests-only", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=[
                "view_circuitbreaker",
                "change_circuitbreaker",
                "view_ratelimitbudget",
                "change_ratelimitbudget",
                "view_breakertransition",
                "operate_controls",
            ]
        )
    )
    client.force_login(user)
    return client


def run(*args: str) -> str:
    out = StringIO()
    call_command("reliability", *args, stdout=out)
    return out.getvalue()


def recorded() -> tuple[int, int]:
    return BreakerTransition.objects.count(), ControlChange.objects.count()


class TestThresholdChanges:
    def test_an_admin_edit__recorded_with_old_and_new_values_and_the_actor(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        data = {field: getattr(breaker, field) for field in CONFIG_FIELDS}
        old = breaker.failure_threshold
        response = operator.post(
            f"{BREAKERS}{breaker.pk}/change/", {**data, "failure_threshold": old + 4}
        )
        assert response.status_code == 302
        change = ControlChange.objects.get()
        assert (change.target, change.name, change.action) == ("breaker", PRIMARY, "edit")
        assert change.changes == {"failure_threshold": [old, old + 4]}
        assert change.actor == "olga"
        page = operator.get(f"{BREAKERS}{breaker.pk}/change/").content.decode()
        assert f"failure_threshold: {old} → {old + 4}" in page

    def test_saving_unchanged_settings__records_nothing(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        data = {field: getattr(breaker, field) for field in CONFIG_FIELDS}
        operator.post(f"{BREAKERS}{breaker.pk}/change/", data)
        assert ControlChange.objects.count() == 0

    def test_a_cli_edit__recorded_with_old_and_new_values_and_the_cli_actor(self):
        breaker = get_or_create_breaker(PRIMARY)
        old = breaker.recovery_timeout
        run("breaker", PRIMARY, "--set", "recovery_timeout=90", "--set", "minimum_calls=7")
        change = ControlChange.objects.get()
        assert change.changes["recovery_timeout"] == [old, 90.0]
        assert change.changes["minimum_calls"][1] == 7
        assert change.actor.startswith("cli")

    def test_budget_limits__from_the_cli_and_the_admin(self, operator):
        budget = get_or_create_budget(PRIMARY)
        old_rpm = budget.requests_per_window
        run("budget", PRIMARY, "--rpm", "12")
        cli = ControlChange.objects.get()
        assert (cli.target, cli.changes) == ("budget", {"requests_per_window": [old_rpm, 12]})
        assert cli.actor.startswith("cli")

        budget.refresh_from_db()
        form = {field: getattr(budget, field) for field in BUDGET_LIMIT_FIELDS}
        form = {key: "" if value is None else value for key, value in form.items()}
        response = operator.post(f"{BUDGETS}{budget.pk}/change/", {**form, "requests_per_day": 99})
        assert response.status_code == 302
        admin_change = ControlChange.objects.latest("id")
        assert admin_change.changes == {"requests_per_day": [budget.requests_per_day, 99]}
        assert admin_change.actor == "olga"
        page = operator.get(f"{BUDGETS}{budget.pk}/change/").content.decode()
        assert f"requests_per_day: {budget.requests_per_day} → 99" in page
        assert f"requests_per_window: {old_rpm} → 12" in page


class TestConfirmation:
    @pytest.mark.parametrize("action", ["force_open", "disable", "reset"])
    def test_without_confirming__a_confirmation_page_and_nothing_changes(self, operator, action):
        breaker = open_breaker(PRIMARY, recovery_timeout=3600)
        before = recorded()
        response = operator.post(BREAKERS, {"action": action, "_selected_action": [breaker.pk]})
        assert response.status_code == 200
        page = response.content.decode()
        assert 'name="reason"' in page and 'name="confirm" value="yes"' in page
        assert PRIMARY in page
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.OPEN
        assert recorded() == before

    def test_confirming_without_a_reason__asks_again_and_nothing_changes(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        response = operator.post(
            BREAKERS,
            {"action": "force_open", "_selected_action": [breaker.pk], "confirm": "yes"},
        )
        assert "Give a reason" in response.content.decode()
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.CLOSED
        assert recorded() == (0, 0)

    def test_confirmed_with_a_reason__acts_and_records_the_reason(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        reason = "provider incident INC-42"
        operator.post(
            BREAKERS,
            {
                "action": "force_open",
                "_selected_action": [breaker.pk],
                "confirm": "yes",
                "reason": reason,
            },
        )
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.FORCED_OPEN
        change = ControlChange.objects.get()
        assert (change.action, change.reason, change.actor) == ("force_open", reason, "olga")
        transition = BreakerTransition.objects.get()
        assert (transition.from_state, transition.to_state) == ("closed", "forced_open")
        assert transition.reason == reason
        page = operator.get(f"{BREAKERS}{breaker.pk}/change/").content.decode()
        assert "force open: closed → forced_open" in page and reason in page

    def test_from_the_breaker_page__back_to_it_after_confirming(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        page = operator.get(f"{BREAKERS}{breaker.pk}/change/").content.decode()
        assert 'data-action="force_open"' in page and 'data-action="disable"' in page
        assert 'data-action="reset"' not in page  # closed already: nothing to reset
        response = operator.post(
            BREAKERS,
            {
                "action": "disable",
                "_selected_action": [breaker.pk],
                "_from_change_page": "1",
                "confirm": "yes",
                "reason": "testing the fallback",
            },
        )
        assert response.status_code == 302
        assert response["Location"] == f"{BREAKERS}{breaker.pk}/change/"

    def test_enable_needs_no_confirmation(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        run("breaker", PRIMARY, "--force-open", "--reason", "drill")
        operator.post(BREAKERS, {"action": "enable", "_selected_action": [breaker.pk]})
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.CLOSED


class TestResetOfAClosedBreaker:
    def test_admin__records_nothing_new_and_says_already_closed(self, operator):
        breaker = get_or_create_breaker(PRIMARY)
        before = recorded()
        response = operator.post(
            BREAKERS,
            {
                "action": "reset",
                "_selected_action": [breaker.pk],
                "confirm": "yes",
                "reason": "just in case",
            },
            follow=True,
        )
        assert "already closed" in response.content.decode()
        assert recorded() == before

    def test_cli__says_so_and_records_nothing(self):
        get_or_create_breaker("git")
        assert "already closed" in run("breaker", "git", "--reset")
        assert recorded() == (0, 0)

    def test_an_open_breaker_is_reset_as_before(self):
        open_breaker(PRIMARY, recovery_timeout=3600)
        run("breaker", PRIMARY, "--reset", "--reason", "provider fixed")
        change = ControlChange.objects.get()
        assert (change.action, change.reason) == ("reset", "provider fixed")
        assert BreakerTransition.objects.latest("id").to_state == BreakerState.CLOSED


class TestHistoryPages:
    def test_the_transitions_list__each_rows_own_from_and_to(self, operator):
        breaker = open_breaker(PRIMARY, recovery_timeout=3600)
        run("breaker", PRIMARY, "--reset", "--reason", "fixed")
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == BreakerState.CLOSED
        page = operator.get("/admin/reliability/breakertransition/").content.decode()
        rows = page[page.index('id="result_list"') :].split("<tr")[2:]
        cells = [
            (row.split('field-from_state">')[1][:6], row.split('field-to_state">')[1][:6])
            for row in rows
        ]
        assert cells == [("open</", "closed"), ("closed", "open</")]
        assert f"{PRIMARY} (closed)" not in page  # not the breaker's current state

    def test_a_budget_pause_reason__shown_only_while_paused(self, operator):
        budget = get_or_create_budget(PRIMARY)
        pause(PRIMARY, until=time.time() + 300, reason="http_429: retry-after 300 s")
        url = f"{BUDGETS}{budget.pk}/change/"
        assert "http_429: retry-after 300 s" in operator.get(url).content.decode()
        RateLimitBudget.objects.filter(pk=budget.pk).update(paused_until=time.time() - 1)
        assert "http_429" not in operator.get(url).content.decode()  # the pause expired

    def test_resume__clears_the_reason_and_is_recorded(self, operator):
        budget = get_or_create_budget(PRIMARY)
        pause(PRIMARY, until=time.time() + 300, reason="http_429")
        operator.post(BUDGETS, {"action": "resume_now", "_selected_action": [budget.pk]})
        budget.refresh_from_db()
        assert (budget.paused_until, budget.pause_reason) == (0.0, "")
        change = ControlChange.objects.get()
        assert (change.target, change.action, change.actor) == ("budget", "resume", "olga")

    def test_a_breaker_that_does_not_exist__the_admins_usual_answer(self, operator):
        response = operator.get(f"{BREAKERS}999999/change/")
        assert response.status_code == 302  # to the list, with "doesn't exist"


class TestOtherDoors:
    def test_the_operations_dashboards_buttons__recorded_too(self, client):
        staff = User.objects.create_user("dora", password="pw-for-tests-only", is_staff=True)
        staff.user_permissions.add(Permission.objects.get(codename="operate_controls"))
        client.force_login(staff)
        get_or_create_breaker("git")
        client.post("/operations/breakers/git/force-open/", {"reason": "drill"})
        change = ControlChange.objects.get()
        assert (change.target, change.name, change.action, change.actor, change.reason) == (
            "breaker",
            "git",
            "force_open",
            "dora",
            "drill",
        )
