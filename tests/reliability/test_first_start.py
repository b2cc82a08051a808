"""Operators see every named breaker and budget from the first start: ``migrate`` creates them
with the defaults from settings, so they can be tuned or forced open before the first call."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.core.management import call_command

from reliability.breaker import breaker_defaults
from reliability.first_start import ensure_named_controls
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.ratelimit import budget_defaults
from tests.processes import run_manage, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

# One breaker and one budget per model of the chain (the defaults: two models), and git's breaker.
PRIMARY, FALLBACK = (f"anthropic:{model}" for model in settings.EIDOLON_AI_MODELS)


@pytest.fixture
def on_migrate(settings):
    settings.EIDOLON_CREATE_CONTROLS_ON_MIGRATE = True


class TestFreshDatabase:
    @pytest.mark.slow
    def test_migrate_then_show__lists_both_breakers_and_the_budget_with_their_defaults(
        self, tmp_path
    ):
        env = subprocess_environment(
            DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
            EIDOLON_CREATE_CONTROLS_ON_MIGRATE="true",
        )
        env.pop("REDIS_URL", None)
        migrated = run_manage("migrate", "--verbosity", "0", env=env, timeout=180)
        assert migrated.returncode == 0, migrated.stderr

        shown = run_manage("reliability", "show", "--json", env=env)

        assert shown.returncode == 0, shown.stderr
        snapshot = json.loads(shown.stdout)
        breakers = {breaker["name"]: breaker for breaker in snapshot["breakers"]}
        budgets = {budget["name"]: budget for budget in snapshot["budgets"]}
        assert sorted(breakers) == sorted([PRIMARY, FALLBACK, "git"])
        assert sorted(budgets) == sorted([PRIMARY, FALLBACK])
        for name, breaker in breakers.items():
            assert breaker["state"] == "closed" and breaker["last_transition"] is None
            defaults = settings.EIDOLON_BREAKER_DEFAULTS[name.partition(":")[0]]
            for field in ("failure_threshold", "recovery_timeout", "slow_call_duration"):
                assert breaker["settings"][field] == defaults[field], (name, field)
        for name in (PRIMARY, FALLBACK):
            limits = budgets[name]["limits"]
            for field in (
                "requests_per_window",
                "input_tokens_per_window",
                "output_tokens_per_window",
            ):
                assert limits[field] == settings.EIDOLON_BUDGET_DEFAULTS["anthropic"][field]

    def test_admin__lists_both_breakers_and_the_budget_before_any_call(
        self, on_migrate, admin_client
    ):
        call_command("migrate", verbosity=0)  # up to date: only the post_migrate handlers run

        breakers = admin_client.get("/admin/reliability/circuitbreaker/").content.decode()
        budgets = admin_client.get("/admin/reliability/ratelimitbudget/").content.decode()

        assert re.search(r"\b3 circuit breakers\b", breakers), "the changelist counts three rows"
        assert f">{PRIMARY}<" in breakers and f">{FALLBACK}<" in breakers and ">git<" in breakers
        assert f">{PRIMARY}<" in budgets and ">submissions<" not in budgets


class TestCreation:
    def test_rows__have_the_values_first_use_would_give_them(self):
        created = ensure_named_controls()

        assert created == ([PRIMARY, FALLBACK, "git"], [PRIMARY, FALLBACK])
        for name in (PRIMARY, FALLBACK, "git"):
            breaker = CircuitBreaker.objects.get(name=name)
            for field, value in breaker_defaults(name).items():
                assert getattr(breaker, field) == value, (name, field)
        budget = RateLimitBudget.objects.get(name=FALLBACK)
        for field, value in budget_defaults(FALLBACK).items():
            assert getattr(budget, field) == value, field

    def test_migrate_again__keeps_what_operators_changed(self, on_migrate):
        call_command("migrate", verbosity=0)
        CircuitBreaker.objects.filter(name=PRIMARY).update(failure_threshold=9)
        RateLimitBudget.objects.filter(name=PRIMARY).update(requests_per_window=7)

        call_command("migrate", verbosity=0)

        assert CircuitBreaker.objects.count() == 3
        assert CircuitBreaker.objects.get(name=PRIMARY).failure_threshold == 9
        assert RateLimitBudget.objects.get(name=PRIMARY).requests_per_window == 7

    def test_switched_off__migrate_creates_nothing(self, settings):
        settings.EIDOLON_CREATE_CONTROLS_ON_MIGRATE = False
        call_command("migrate", verbosity=0)
        assert not CircuitBreaker.objects.exists() and not RateLimitBudget.objects.exists()
