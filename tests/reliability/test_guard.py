"""The guard through the real anthropic SDK, against the fault-injecting fake over loopback."""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY

from reliability.breaker import transition
from reliability.clock import SYSTEM_CLOCK
from reliability.exceptions import (
    BudgetExhaustedError,
    CallTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
)
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.guard import AttemptReport, Guard, TokenEstimate, Wait, guard_for
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.outcomes import Outcome, classify_exception
from reliability.retry import RetryBudget, RetryPolicy
from tests.anthropic_support import MODEL, ask, generous_anthropic_limits

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake():
    with FakeAnthropic(config=FakeConfig(seed=1)).running() as server:
        yield server


@pytest.fixture
def client(fake):
    return anthropic.AsyncAnthropic(
        api_key="test-key", base_url=fake.base_url, max_retries=0, timeout=10.0
    )


@pytest.fixture
def make_guard():
    def make(*, timeout: float = 5.0, max_attempts: int = 4, failure_threshold: int = 50):
        generous_anthropic_limits(failure_threshold=failure_threshold)
        return Guard(
            target="anthropic",
            budget="anthropic",
            timeout=timeout,
            retry_policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.05, max_delay=0.2),
            retry_budget=RetryBudget(min_retries=100),
        )

    async def make_async(**options) -> Guard:
        return await sync_to_async(make)(**options)

    return make_async


async def breaker_row(guard: Guard) -> CircuitBreaker:
    await guard.drain()  # successes are recorded in the background
    return await sync_to_async(CircuitBreaker.objects.get)(name="anthropic")


async def budget_row(guard: Guard) -> RateLimitBudget:
    await guard.drain()
    return await sync_to_async(RateLimitBudget.objects.get)(name="anthropic")


class TestRetriesThroughTheSdk:
    async def test_529_529_200__costs_exactly_three_requests_and_succeeds(
        self, fake, client, make_guard
    ):
        guard = await make_guard()
        fake.script("overloaded", "overloaded", "ok")
        reports: list[AttemptReport] = []
        message = await guard.call(ask(client), on_attempt=reports.append)
        assert message.content[0].type == "text"
        assert [r.status for r in fake.requests] == [529, 529, 200]
        # Exactly one retry layer: the SDK never retried on its own.
        assert {r.headers.get("x-stainless-retry-count", "0") for r in fake.requests} == {"0"}
        breaker = await breaker_row(guard)
        assert (breaker.total_failures, breaker.total_successes) == (2, 1)
        # Each attempt was budgeted on its own (the seed charged a retried request once).
        assert (await budget_row(guard)).total_requests == 3
        assert [(r.number, r.outcome.reason, r.will_retry) for r in reports] == [
            (1, "http_529", True),
            (2, "http_529", True),
            (3, "ok", False),
        ]

    async def test_the_sdk_makes_no_retries_of_its_own(self, fake, client, make_guard):
        guard = await make_guard(max_attempts=1)
        fake.script("overloaded")
        with pytest.raises(anthropic.InternalServerError):
            await guard.call(ask(client))
        assert len(fake.requests) == 1
        # The same fault with the SDK's default retries would have cost three requests.
        fake.reset()
        fake.script("overloaded", "overloaded", "overloaded")
        retrying_sdk = anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url)
        retrying_sdk._client.timeout = 10.0
        with pytest.raises(anthropic.InternalServerError):
            await retrying_sdk.with_options(max_retries=2).messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert len(fake.requests) == 3

    async def test_400__costs_one_request_and_is_not_retried(self, fake, client, make_guard):
        guard = await make_guard()
        fake.script("bad_request")
        with pytest.raises(anthropic.BadRequestError):
            await guard.call(ask(client))
        assert len(fake.requests) == 1
        breaker = await breaker_row(guard)
        assert (breaker.total_failures, breaker.total_ignored) == (0, 1)  # a caller error

    async def test_401__counts_as_a_failure_and_is_not_retried(self, fake, client, make_guard):
        guard = await make_guard()
        fake.script("auth")
        with pytest.raises(anthropic.AuthenticationError):
            await guard.call(ask(client))
        assert len(fake.requests) == 1
        assert (await breaker_row(guard)).total_failures == 1

    async def test_a_connection_reset_is_retried(self, fake, client, make_guard):
        guard = await make_guard()
        fake.script("reset", "ok")
        await guard.call(ask(client))
        assert len(fake.requests) == 2


class TestRateLimitBackpressure:
    async def test_429_with_retry_after_2__waits_and_pauses_the_budget_for_everyone(
        self, fake, client, make_guard
    ):
        guard = await make_guard()
        fake.configure(retry_after_s=2)
        fake.script("rate_limit")
        waits: list[Wait] = []
        began = time.monotonic()
        first = asyncio.create_task(guard.call(ask(client, "first"), on_wait=waits.append))
        await asyncio.sleep(0.5)  # the 429 has paused the budget by now
        other_waits: list[Wait] = []
        second = await guard.call(ask(client, "second"), on_wait=other_waits.append)
        await first
        assert time.monotonic() - began >= 2.0
        arrivals = [r.received_monotonic for r in fake.requests]
        assert [r.status for r in fake.requests] == [429, 200, 200]
        assert min(arrivals[1:]) - arrivals[0] >= 2.0  # nobody called during the pause
        assert second.content
        assert any(w.reason == "rate_budget" for w in other_waits)
        assert "waiting for the rate budget until" in other_waits[0].describe()
        assert (await breaker_row(guard)).total_failures == 0  # a 429 never trips the breaker

    async def test_a_retry_after_beyond_the_deadline_fails_at_once(self, fake, client, make_guard):
        guard = await make_guard()
        fake.configure(retry_after_s=30)
        fake.script("rate_limit")
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="retry-after of 30"):
            await guard.call(ask(client), deadline=time.time() + 5)
        assert time.monotonic() - began < 1.0
        assert len(fake.requests) == 1


class TestTimeouts:
    async def test_a_hang_is_cut_at_the_timeout(self, fake, client, make_guard):
        guard = await make_guard(timeout=0.5, max_attempts=1)
        fake.script("hang")
        began = time.monotonic()
        with pytest.raises((CallTimeoutError, anthropic.APITimeoutError)):
            await guard.call(ask(client))
        elapsed = time.monotonic() - began
        assert 0.45 <= elapsed < 1.5
        breaker = await breaker_row(guard)
        assert breaker.total_failures == 1 and breaker.consecutive_failures == 1

    async def test_the_timeout_never_outlives_the_deadline(self, fake, client, make_guard):
        guard = await make_guard(timeout=30, max_attempts=1)
        fake.script("hang")
        began = time.monotonic()
        with pytest.raises((CallTimeoutError, anthropic.APITimeoutError)):
            await guard.call(ask(client), deadline=time.time() + 0.6)
        assert time.monotonic() - began < 1.5


class TestBreakerAndBudgetTogether:
    async def test_an_outage_opens_the_breaker_and_stops_the_traffic(
        self, fake, client, make_guard
    ):
        guard = await make_guard(failure_threshold=3, max_attempts=4)
        fake.configure(fault_rates={"overloaded": 1.0})
        with pytest.raises(CircuitOpenError):
            await guard.call(ask(client))
        with pytest.raises(CircuitOpenError):
            await guard.call(ask(client))
        assert len(fake.requests) == 3
        assert (await breaker_row(guard)).state == "open"

    async def test_wait_for_breaker__waits_out_the_recovery_then_calls(
        self, fake, client, make_guard
    ):
        guard = await make_guard(failure_threshold=1, max_attempts=1)
        await sync_to_async(CircuitBreaker.objects.filter(name="anthropic").update)(
            recovery_timeout=1.0
        )
        fake.script("overloaded")
        with pytest.raises(anthropic.InternalServerError):
            await guard.call(ask(client))
        waits: list[Wait] = []
        began = time.monotonic()
        message = await guard.call(
            ask(client), deadline=time.time() + 10, wait_for_breaker=True, on_wait=waits.append
        )
        assert message.content
        assert time.monotonic() - began >= 0.9  # the recovery timeout, not a failure
        assert [w.reason for w in waits] == ["breaker"]
        assert waits[0].describe().startswith("AI circuit open until 20")
        assert len(fake.requests) == 2  # the waiting itself sent nothing
        assert (await breaker_row(guard)).state == "closed"  # the probe closed it

    async def test_wait_for_breaker__refuses_at_once_when_it_opens_past_the_deadline(
        self, fake, client, make_guard
    ):
        guard = await make_guard(failure_threshold=1, max_attempts=1)
        fake.script("overloaded")
        with pytest.raises(anthropic.InternalServerError):
            await guard.call(ask(client))
        waits: list[Wait] = []
        began = time.monotonic()
        with pytest.raises(CircuitOpenError):
            await guard.call(
                ask(client), deadline=time.time() + 5, wait_for_breaker=True, on_wait=waits.append
            )
        assert time.monotonic() - began < 1.0
        assert waits == []
        assert len(fake.requests) == 1

    async def test_a_call_waiting_for_its_slot__is_not_sent_once_the_breaker_opened(
        self, fake, client, make_guard
    ):
        # Found by chaos drill 2: calls admitted while closed, then queued for their budget
        # slots, all went out through the breaker after it had opened.
        guard = await make_guard(failure_threshold=1, max_attempts=1)
        await sync_to_async(RateLimitBudget.objects.filter(name="anthropic").update)(
            requests_per_window=2,
            window_seconds=2.0,  # a slot a second
        )
        fake.script("overloaded")
        first, second = await asyncio.gather(
            guard.call(ask(client)), guard.call(ask(client)), return_exceptions=True
        )
        outcomes = sorted(type(outcome).__name__ for outcome in (first, second))
        assert outcomes == ["CircuitOpenError", "OverloadedError"]
        assert len(fake.requests) == 1  # the second waited for its slot, then was refused
        budget = await budget_row(guard)
        assert budget.total_requests == 1  # its slot was given back
        breaker = await breaker_row(guard)
        assert (breaker.state, breaker.total_calls) == ("open", 1)

    async def test_a_probe_waiting_for_its_slot__is_not_sent_once_the_breaker_reopened(
        self, fake, client, make_guard
    ):
        guard = await make_guard(failure_threshold=1, max_attempts=1)
        await sync_to_async(RateLimitBudget.objects.filter(name="anthropic").update)(
            requests_per_window=2,
            window_seconds=2.0,  # a slot a second
        )
        await guard.call(ask(client))  # takes the slot of now
        row = await sync_to_async(CircuitBreaker.objects.get)(name="anthropic")
        await sync_to_async(CircuitBreaker.objects.filter(pk=row.pk).update)(
            state="open", generation=row.generation + 1, recovery_timeout=0.0
        )
        probe = asyncio.create_task(guard.call(ask(client)))  # half-opens it, waits a second
        await asyncio.sleep(0.5)
        await sync_to_async(transition)(
            row.pk,
            expected=None,
            to_state="open",
            reason="reopened by the test",
            clock=SYSTEM_CLOCK,
        )
        with pytest.raises(CircuitOpenError):
            await probe
        assert len(fake.requests) == 1

    async def test_wait_for_budget__waits_until_the_daily_cap_resets_only_within_the_deadline(
        self, client, make_guard
    ):
        guard = await make_guard()
        await sync_to_async(RateLimitBudget.objects.filter(name="anthropic").update)(
            requests_per_day=1
        )
        await guard.call(ask(client))
        began = time.monotonic()
        with pytest.raises(BudgetExhaustedError, match="daily request limit"):
            await guard.call(ask(client), deadline=time.time() + 5, wait_for_budget=True)
        assert time.monotonic() - began < 1.0  # tomorrow is past the deadline: no wait

    async def test_tokens_are_reconciled_to_what_the_reply_used(self, client, make_guard):
        guard = await make_guard()
        message = await guard.call(ask(client), estimate=TokenEstimate(5_000, 200))
        budget = await budget_row(guard)
        assert budget.total_input_tokens == message.usage.input_tokens
        assert budget.total_output_tokens == message.usage.output_tokens
        assert message.usage.input_tokens < 5_000


def admissions(path: str) -> float:
    sample = REGISTRY.get_sample_value(
        "eidolon_guard_admissions_total", {"target": "anthropic", "path": path}
    )
    return sample or 0.0


@pytest.mark.postgres
class TestPostgresFastPath:
    async def test_once_compiled__calls_are_admitted_without_the_database_thread(
        self, client, make_guard
    ):
        guard = await make_guard()
        inline_before, thread_before = admissions("inline"), admissions("thread")
        messages = [
            await guard.call(ask(client), estimate=TokenEstimate(5_000, 200)) for _ in range(3)
        ]
        # The first call of a process compiles the statements through the ORM, in the thread;
        # every later one runs them on the event loop's own connection.
        assert admissions("inline") - inline_before >= 2
        assert admissions("thread") - thread_before <= 1
        # Nothing was lost on the way: every success counted, every reply's tokens reconciled.
        assert (await breaker_row(guard)).total_successes == 3
        budget = await budget_row(guard)
        assert budget.total_requests == 3
        assert budget.total_input_tokens == sum(m.usage.input_tokens for m in messages)
        assert budget.total_output_tokens == sum(m.usage.output_tokens for m in messages)
        await guard.aclose()


class TestGuardFor:
    def test_one_guard_per_target__and_a_different_classification_is_refused(self):
        def classify_test_errors(exc: BaseException, *, now: float) -> Outcome:
            return classify_exception(exc, now=now)

        first = guard_for("classified-target", classify=classify_test_errors)
        assert guard_for("classified-target", classify=classify_test_errors) is first
        with pytest.raises(ValueError, match="classify_test_errors"):
            guard_for("classified-target")  # the default classification is another one
