"""A call that repeats one that gave up (``deferred``) is a retry: it waits for the retry budget,
so repeating calls after an outage never multiplies the traffic."""

from __future__ import annotations

import time

import anthropic
import pytest
from asgiref.sync import sync_to_async

from reliability.exceptions import DeadlineExceededError
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.guard import Guard, Wait
from reliability.retry import RetryBudget, RetryPolicy
from tests.anthropic_support import ask, generous_anthropic_limits
from tests.clocks import FakeClock


class TestNextRetryAt:
    def test_now__while_the_budget_has_a_retry(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.2, window=60, min_retries=1, clock=clock)
        assert budget.next_retry_at() == clock.now()

    def test_when_the_oldest_retry_leaves_the_window(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.2, window=60, min_retries=2, clock=clock)
        first_at = clock.now()
        assert budget.try_acquire_retry()
        clock.advance(10)
        assert budget.try_acquire_retry()
        assert not budget.try_acquire_retry()
        assert budget.next_retry_at() == first_at + 60
        clock.advance(50)
        assert budget.try_acquire_retry()  # the moment it named

    def test_calls_leaving_the_window_take_their_retries_with_them(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.5, window=60, min_retries=1, clock=clock)
        start = clock.now()
        for _ in range(4):
            budget.record_call()  # 4 calls earn 2 retries
        clock.advance(30)
        assert budget.try_acquire_retry() and budget.try_acquire_retry()
        # At start + 60 the calls leave (allowed falls to the minimum, 1) while both retries
        # still count; only when the first retry leaves too is there room again.
        assert budget.next_retry_at() == start + 30 + 60


@pytest.mark.django_db(transaction=True)
class TestDeferredCalls:
    @pytest.fixture
    def fake(self):
        with FakeAnthropic(config=FakeConfig(seed=1)).running() as server:
            yield server

    async def guard(self, fake: FakeAnthropic, *, window: float) -> tuple[Guard, object]:
        await sync_to_async(generous_anthropic_limits)()
        guard = Guard(
            target="anthropic",
            budget="anthropic",
            timeout=5.0,
            retry_policy=RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=0.2),
            # Were a deferred call counted as a call, it would earn the next one its retry.
            retry_budget=RetryBudget(ratio=1.0, window=window, min_retries=1),
        )
        client = anthropic.AsyncAnthropic(
            api_key="test-key", base_url=fake.base_url, max_retries=0, timeout=10.0
        )
        return guard, client

    async def test_waits_for_the_retry_budget__and_earns_no_retry_itself(self, fake):
        guard, client = await self.guard(fake, window=1.5)
        waits: list[Wait] = []
        await guard.call(ask(client), deferred=True, on_wait=waits.append)
        assert waits == []  # the budget's one retry
        started = time.monotonic()
        await guard.call(ask(client), deferred=True, on_wait=waits.append)
        waited = time.monotonic() - started

        assert 1.0 <= waited < 3.0
        assert waits and {wait.reason for wait in waits} == {"retry_budget"}
        assert "retry budget" in waits[0].describe()
        assert len(fake.requests) == 2
        await guard.drain()

    async def test_no_retry_before_the_deadline__refused_without_a_request(self, fake):
        guard, client = await self.guard(fake, window=60)
        await guard.call(ask(client), deferred=True)
        with pytest.raises(DeadlineExceededError, match="retry budget"):
            await guard.call(ask(client), deferred=True, deadline=time.time() + 5)
        assert len(fake.requests) == 1
        await guard.drain()
