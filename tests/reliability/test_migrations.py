"""Data migrations of reliability, run by Django's MigrationExecutor on the test database."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from reliability.families import members

BEFORE = ("reliability", "0006_operate_controls_permission")
AFTER = ("reliability", "0007_anthropic_breaker_to_primary_model")
PRIMARY = members("anthropic")[0]


def migrate_to(target: tuple[str, str]):
    """Migrate reliability to ``target``; returns the historical apps at that point."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def latest() -> tuple[str, str]:
    (leaf,) = MigrationExecutor(connection).loader.graph.leaf_nodes("reliability")
    return leaf


@pytest.fixture
def at_0006():
    apps = migrate_to(BEFORE)
    yield apps
    migrate_to(latest())  # back to the latest for the tests that follow,
    # on a new connection: statements the old one prepared expect the columns as they were.
    connection.close()


@pytest.mark.django_db(transaction=True)
class TestAnthropicBreakerToPrimaryModel:
    def _old_rows(self, apps) -> int:
        CircuitBreaker = apps.get_model("reliability", "CircuitBreaker")
        RateLimitBudget = apps.get_model("reliability", "RateLimitBudget")
        BreakerTransition = apps.get_model("reliability", "BreakerTransition")
        ControlChange = apps.get_model("reliability", "ControlChange")
        breaker = CircuitBreaker.objects.create(
            name="anthropic", failure_threshold=7, state="open", total_failures=42
        )
        BreakerTransition.objects.create(
            breaker=breaker,
            from_state="closed",
            to_state="open",
            reason="3 consecutive failures",
            generation=1,
            created_at=dt.datetime.now(dt.UTC),
        )
        RateLimitBudget.objects.create(name="anthropic", requests_per_window=120)
        for target in ("breaker", "budget"):
            ControlChange.objects.create(
                target=target,
                name="anthropic",
                action="edit",
                actor="ops",
                created_at=dt.datetime.now(dt.UTC),
            )
        return breaker.pk

    def test_migrate__the_anthropic_rows_become_the_primary_models_with_their_history(
        self, at_0006
    ):
        breaker_id = self._old_rows(at_0006)
        apps = migrate_to(AFTER)
        CircuitBreaker = apps.get_model("reliability", "CircuitBreaker")
        breaker = CircuitBreaker.objects.get(name=PRIMARY)
        assert (breaker.pk, breaker.failure_threshold, breaker.state) == (breaker_id, 7, "open")
        assert breaker.total_failures == 42
        assert apps.get_model("reliability", "BreakerTransition").objects.get().breaker_id == (
            breaker_id
        )
        budget = apps.get_model("reliability", "RateLimitBudget").objects.get()
        assert (budget.name, budget.requests_per_window) == (PRIMARY, 120)
        changes = apps.get_model("reliability", "ControlChange").objects
        assert sorted(changes.values_list("target", "name")) == [
            ("breaker", PRIMARY),
            ("budget", PRIMARY),
        ]
        assert not CircuitBreaker.objects.filter(name="anthropic").exists()

    def test_migrate__left_alone_when_the_primary_models_row_exists(self, at_0006):
        self._old_rows(at_0006)
        CircuitBreaker = at_0006.get_model("reliability", "CircuitBreaker")
        CircuitBreaker.objects.create(name=PRIMARY, failure_threshold=3)
        apps = migrate_to(AFTER)
        rows = apps.get_model("reliability", "CircuitBreaker").objects
        assert dict(rows.values_list("name", "failure_threshold")) == {"anthropic": 7, PRIMARY: 3}
        # The budget had no primary row: it still moves.
        budgets = apps.get_model("reliability", "RateLimitBudget").objects
        assert list(budgets.values_list("name", flat=True)) == [PRIMARY]

    def test_migrate_backwards__the_primary_models_rows_are_anthropic_again(self, at_0006):
        self._old_rows(at_0006)
        migrate_to(AFTER)
        apps = migrate_to(BEFORE)
        rows = apps.get_model("reliability", "CircuitBreaker").objects
        assert list(rows.values_list("name", flat=True)) == ["anthropic"]

    def test_migrate__nothing_to_do_on_a_new_database(self, at_0006):
        apps = migrate_to(AFTER)
        assert not apps.get_model("reliability", "CircuitBreaker").objects.exists()
