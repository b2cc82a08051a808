"""The operator CLI: manage.py reliability show | breaker | budget."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from reliability.breaker import admit, get_or_create_breaker, record
from reliability.families import members
from reliability.models import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    RateLimitBudget,
)
from reliability.outcomes import BreakerVerdict
from reliability.ratelimit import Ask, get_or_create_budget, pause, reserve

pytestmark = pytest.mark.django_db

# One breaker and budget per model of EIDOLON_AI_MODELS; "anthropic" names them all.
PRIMARY, FALLBACK = members("anthropic")


def run(*args: str) -> str:
    out = StringIO()
    call_command("reliability", *args, stdout=out)
    return out.getvalue()


def open_breaker(name: str, *, recovery_timeout: float) -> CircuitBreaker:
    """Breaker ``name``, opened by one overloaded reply."""
    now = time.time()
    CircuitBreaker.objects.create(
        name=name,
        failure_threshold=1,
        recovery_timeout=recovery_timeout,
        state_changed_at=now,
        window_started_at=now,
    )
    record(admit(name), BreakerVerdict.FAILURE, duration=0.1, reason="http_529")
    return CircuitBreaker.objects.get(name=name)


@pytest.fixture
def open_anthropic():
    """The primary model's breaker open, the fallback's closed."""
    open_breaker(PRIMARY, recovery_timeout=120)
    get_or_create_breaker(FALLBACK)


class TestShow:
    def test_json__lists_every_breaker_and_budget(self, open_anthropic):
        reserve(PRIMARY, Ask(input_tokens=10, output_tokens=5))
        snapshot = json.loads(run("show", "--json"))
        breakers = {breaker["name"]: breaker for breaker in snapshot["breakers"]}
        breaker, fallback = breakers.pop(PRIMARY), breakers.pop(FALLBACK)
        assert breakers == {}
        (budget,) = snapshot["budgets"]
        assert (breaker["state"], fallback["state"]) == ("open", "closed")
        assert breaker["open_until"] == pytest.approx(time.time() + 120, abs=5)
        assert breaker["last_transition"]["reason"].startswith("1 consecutive failures")
        assert budget["window"]["requests"] == 1
        assert budget["limits"]["requests_per_window"] == 50

    def test_text__says_when_an_open_breaker_retries(self, open_anthropic):
        text = run("show")
        assert PRIMARY in text and "open until" in text

    def test_text__names_the_model_serving__the_fallback_while_the_primary_is_open(
        self, open_anthropic
    ):
        first = run("show").splitlines()[0]
        assert first.startswith(
            "AI: reviewing on claude-haiku-4-5 (claude-sonnet-5-5 open until "
        ), first
        run("breaker", PRIMARY, "--reset")
        assert run("show").splitlines()[0] == "AI: reviewing on claude-sonnet-5-5"

    def test_text__no_model_admits_when_every_breaker_refuses(self, open_anthropic):
        run("breaker", FALLBACK, "--force-open")
        assert run("show").splitlines()[0] == (
            "AI: no model admits reviews (claude-sonnet-5-5 open, claude-haiku-4-5 forced_open)"
        )

    def test_json__has_the_serving_model_and_each_members_state(self, open_anthropic):
        ai = json.loads(run("show", "--json"))["ai"]
        assert (ai["serving"], ai["degraded"]) == ("claude-haiku-4-5", True)
        assert [(m["breaker"], m["state"], m["admits"]) for m in ai["members"]] == [
            (PRIMARY, "open", False),
            (FALLBACK, "closed", True),
        ]


class TestBreakerCommand:
    def test_reset__closes_and_names_the_operator(self, open_anthropic):
        assert "now closed" in run("breaker", PRIMARY, "--reset", "--reason", "provider fixed")
        transition = BreakerTransition.objects.order_by("-id").first()
        assert transition.to_state == BreakerState.CLOSED
        assert transition.actor.startswith("cli")
        assert transition.reason == "provider fixed"

    @pytest.mark.parametrize(
        ("flag", "state"), [("--force-open", "forced_open"), ("--disable", "disabled")]
    )
    def test_operator_modes(self, open_anthropic, flag, state):
        run("breaker", PRIMARY, flag)
        assert CircuitBreaker.objects.get(name=PRIMARY).state == state
        run("breaker", PRIMARY, "--enable")
        assert CircuitBreaker.objects.get(name=PRIMARY).state == "closed"

    def test_set__tunes_thresholds_and_keeps_the_state(self, open_anthropic):
        run("breaker", PRIMARY, "--set", "failure_threshold=7", "--set", "window_type=time")
        breaker = CircuitBreaker.objects.get(name=PRIMARY)
        assert (breaker.failure_threshold, breaker.window_type, breaker.state) == (
            7,
            "time",
            "open",
        )

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["breaker", "nope", "--reset"],
                f"no breaker named 'nope'; known: anthropic, {FALLBACK}, {PRIMARY}, git",
            ),
            (["breaker", "anthropic:gpt-2", "--reset"], "no breaker named 'anthropic:gpt-2'"),
            (
                ["breaker", "anthropic", "--set", "failure_threshold=0"],
                "greater than or equal to 1",
            ),
            (["breaker", "anthropic", "--set", "state=closed"], "not a tunable field"),
            (["breaker", "anthropic", "--set", "failure_threshold"], "--set takes FIELD=VALUE"),
            (["breaker", "anthropic", "--set", "recovery_timeout=soon"], "must be a float"),
            (["breaker", PRIMARY, "--enable"], "nothing to enable"),
            (["breaker", "anthropic", "--enable"], "refused for every breaker of 'anthropic'"),
            (["breaker", "anthropic", "--set", "minimum_calls=30"], "never holds more than"),
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


class TestFamilyName:
    """Scripts written for the single "anthropic" breaker act on every model's."""

    def test_reset__acts_on_every_member_one_line_each(self, open_anthropic):
        out = run("breaker", "anthropic", "--reset", "--reason", "provider fixed")
        assert out.splitlines() == [
            f"breaker {PRIMARY}: now closed",
            f"breaker '{FALLBACK}' is already closed: nothing done, nothing recorded",
        ]
        assert CircuitBreaker.objects.get(name=PRIMARY).state == BreakerState.CLOSED
        assert not CircuitBreaker.objects.filter(name="anthropic").exists()

    def test_force_open__every_member(self, open_anthropic):
        out = run("breaker", "anthropic", "--force-open")
        assert out.splitlines() == [
            f"breaker {PRIMARY}: now forced_open",
            f"breaker {FALLBACK}: now forced_open",
        ]
        out = run("breaker", "anthropic", "--enable")
        assert out.splitlines() == [
            f"breaker {PRIMARY}: now closed",
            f"breaker {FALLBACK}: now closed",
        ]

    def test_enable__a_member_it_does_not_fit_is_reported_the_others_move(self, open_anthropic):
        run("breaker", PRIMARY, "--force-open")
        out = run("breaker", "anthropic", "--enable")
        assert out.splitlines()[0] == f"breaker {PRIMARY}: now closed"
        assert out.splitlines()[1].startswith(f"breaker {FALLBACK}: refused: ")

    def test_set__every_member_or_none(self, open_anthropic):
        out = run("breaker", "anthropic", "--set", "failure_threshold=9")
        assert out.splitlines() == [
            f"breaker {PRIMARY}: settings saved",
            f"breaker {FALLBACK}: settings saved",
        ]
        assert set(CircuitBreaker.objects.values_list("failure_threshold", flat=True)) == {9}
        CircuitBreaker.objects.filter(name=FALLBACK).update(window_size=5, minimum_calls=5)
        with pytest.raises(CommandError, match="never holds more than"):
            run("breaker", "anthropic", "--set", "minimum_calls=8")
        assert CircuitBreaker.objects.get(name=PRIMARY).minimum_calls == 10


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
        budget = RateLimitBudget.objects.get(name=PRIMARY)
        assert (budget.requests_per_window, budget.input_tokens_per_window) == (120, 80_000)
        assert (budget.output_tokens_per_window, budget.requests_per_day) == (16_000, 9_000)
        assert budget.tokens_per_day == 1_000_000
        assert RateLimitBudget.objects.get(name=FALLBACK).requests_per_window == 120
        run("budget", "anthropic", "--tokens-per-day", "0")
        assert RateLimitBudget.objects.get(name=PRIMARY).tokens_per_day is None

    def test_family_name__prints_one_line_per_member_and_records_each(self):
        out = run("budget", "anthropic", "--rpm", "40")
        assert out.splitlines() == [
            f"budget {PRIMARY}: limits saved",
            f"budget {FALLBACK}: limits saved",
        ]
        assert sorted(ControlChange.objects.values_list("name", "changes")) == sorted(
            (name, {"requests_per_window": [50, 40]}) for name in (PRIMARY, FALLBACK)
        )

    def test_a_member_by_its_own_name__only_it_changes(self):
        get_or_create_budget(FALLBACK)
        assert run("budget", PRIMARY, "--rpm", "40") == f"budget {PRIMARY}: limits saved\n"
        assert RateLimitBudget.objects.get(name=FALLBACK).requests_per_window == 50

    def test_resume__ends_a_pause(self):
        RateLimitBudget.objects.create(name=PRIMARY)
        pause(PRIMARY, until=time.time() + 600, reason="http_429")
        out = run("budget", "anthropic", "--resume")
        assert out.splitlines() == [f"budget {PRIMARY}: resumed", f"budget {FALLBACK}: resumed"]
        assert RateLimitBudget.objects.get(name=PRIMARY).paused_until == 0
