"""The operator CLI: manage.py reliability show | breaker | budget."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from reliability.models import BreakerState, BreakerTransition, CircuitBreaker, RateLimitBudget
from reliability.ratelimit import Ask, pause, reserve
from tests.anthropic_support import open_anthropic_breaker

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("reliability", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def open_anthropic():
    open_anthropic_breaker(recovery_timeout=120)


class TestShow:
    def test_json__lists_every_breaker_and_budget(self, open_anthropic):
        reserve("anthropic", Ask(input_tokens=10, output_tokens=5))
        snapshot = json.loads(run("show", "--json"))
        (breaker,) = snapshot["breakers"]
        (budget,) = snapshot["budgets"]
        assert breaker["name"] == "anthropic" and breaker["state"] == "open"
        assert breaker["open_until"] == pytest.approx(time.time() + 120, abs=5)
        assert breaker["last_transition"]["reason"].startswith("1 consecutive failures")
        assert budget["window"]["requests"] == 1
        assert budget["limits"]["requests_per_window"] == 50

    def test_text__says_when_an_open_breaker_retries(self, open_anthropic):
        text = run("show")
        assert "anthropic" in text and "open until" in text


class TestBreakerCommand:
    def test_reset__closes_and_names_the_operator(self, open_anthropic):
        assert "now closed" in run("breaker", "anthropic", "--reset", "--reason", "provider fixed")
        transition = BreakerTransition.objects.order_by("-id").first()
        assert transition.to_state == BreakerState.CLOSED
        assert transition.actor.startswith("cli")
        assert transition.reason == "provider fixed"

    @pytest.mark.parametrize(
        ("flag", "state"), [("--force-open", "forced_open"), ("--disable", "disabled")]
    )
    def test_operator_modes(self, open_anthropic, flag, state):
        run("breaker", "anthropic", flag)
        assert CircuitBreaker.objects.get(name="anthropic").state == state
        run("breaker", "anthropic", "--enable")
        assert CircuitBreaker.objects.get(name="anthropic").state == "closed"

    def test_set__tunes_thresholds_and_keeps_the_state(self, open_anthropic):
        run("breaker", "anthropic", "--set", "failure_threshold=7", "--set", "window_type=time")
        breaker = CircuitBreaker.objects.get(name="anthropic")
        assert (breaker.failure_threshold, breaker.window_type, breaker.state) == (
            7,
            "time",
            "open",
        )

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["breaker", "nope", "--reset"], "no breaker named 'nope'; known: anthropic, git"),
            (
                ["breaker", "anthropic", "--set", "failure_threshold=0"],
                "greater than or equal to 1",
            ),
            (["breaker", "anthropic", "--set", "state=closed"], "not a tunable field"),
            (["breaker", "anthropic", "--set", "failure_threshold"], "--set takes FIELD=VALUE"),
            (["breaker", "anthropic", "--set", "recovery_timeout=soon"], "must be a float"),
            (["breaker", "anthropic", "--enable"], "nothing to enable"),
            (["budget", "nope", "--rpm", "5"], "no budget named 'nope'"),
            (["budget", "anthropic"], "nothing to do"),
            (["budget", "anthropic", "--rpm", "0"], "greater than or equal to 1"),
        ],
    )
    def test_bad_input_gets_a_clear_error_and_changes_nothing(self, open_anthropic, args, message):
        before = list(CircuitBreaker.objects.values())
        with pytest.raises(CommandError, match=message):
            run(*args)
        assert list(CircuitBreaker.objects.values()) == before


class TestBudgetCommand:
    def test_sets_limits(self):
        run(
            "budget",
            "anthropic",
            "--rpm",
            "120",
            "--input-tpm",
            "80000",
            "--output-tpm",
            "16000",
            "--rpd",
            "9000",
            "--tokens-per-day",
            "1000000",
        )
        budget = RateLimitBudget.objects.get(name="anthropic")
        assert (budget.requests_per_window, budget.input_tokens_per_window) == (120, 80_000)
        assert (budget.output_tokens_per_window, budget.requests_per_day) == (16_000, 9_000)
        assert budget.tokens_per_day == 1_000_000
        run("budget", "anthropic", "--tokens-per-day", "0")
        assert RateLimitBudget.objects.get(name="anthropic").tokens_per_day is None

    def test_resume__ends_a_pause(self):
        RateLimitBudget.objects.create(name="anthropic")
        pause("anthropic", until=time.time() + 600, reason="http_429")
        run("budget", "anthropic", "--resume")
        assert RateLimitBudget.objects.get(name="anthropic").paused_until == 0
