"""Rate-limit budgets over the real database: GCRA spacing, daily caps, pauses, fairness."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime

import pytest

from reliability.exceptions import BudgetExhaustedError
from reliability.models import RateLimitBudget
from reliability.ratelimit import (
    Ask,
    get_or_create_budget,
    observe_headers,
    pause,
    reconcile,
    reserve,
)
from tests.budget_support import acquire, busiest_window
from tests.clocks import FakeClock


@pytest.fixture(autouse=True)
def exact_spacing(settings):
    """Most tests reason about exact slots; one below checks the headroom on its own."""
    settings.EIDOLON_RATE_HEADROOM = 0.0


@pytest.fixture
def clock():
    # Mid-day UTC, so daily-window tests know where midnight is.
    return FakeClock(start=datetime(2027, 3, 1, 12, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def make_budget():
    def make(name: str = "api", **limits) -> RateLimitBudget:
        limits.setdefault("window_seconds", 10.0)
        limits.setdefault("requests_per_window", 10)
        limits.setdefault("input_tokens_per_window", 1_000_000)
        limits.setdefault("output_tokens_per_window", 1_000_000)
        limits.setdefault("requests_per_day", 100_000)
        return RateLimitBudget.objects.create(name=name, **limits)

    return make


def take(clock: FakeClock, name: str = "api", *, tokens_in: int = 0, tokens_out: int = 0, **kw):
    return reserve(name, Ask(tokens_in, tokens_out, **kw), clock=clock)


@pytest.mark.django_db
class TestSpacing:
    def test_created_on_first_use__with_the_seed_defaults(self):
        budget = get_or_create_budget("anthropic")
        assert (budget.requests_per_window, budget.input_tokens_per_window) == (50, 40_000)
        assert (budget.requests_per_day, budget.window_seconds) == (5_000, 60.0)

    def test_requests_are_spaced_window_over_limit(self, make_budget, clock):
        make_budget(requests_per_window=10, window_seconds=10)
        starts = [take(clock).start_at - clock.now() for _ in range(4)]
        assert starts == pytest.approx([0.0, 1.0, 2.0, 3.0])

    def test_no_window_ever_holds_more_than_the_limit(self, make_budget, clock):
        make_budget(requests_per_window=7, window_seconds=10)
        rng = random.Random(4)
        starts = []
        for _ in range(300):
            clock.advance(rng.expovariate(2.0))  # arrivals faster than the limit
            starts.append(take(clock).start_at)
        assert busiest_window(starts, window=10.0) == 7

    def test_headroom_keeps_a_fraction_of_the_limit_free(self, make_budget, clock, settings):
        settings.EIDOLON_RATE_HEADROOM = 0.02
        make_budget(requests_per_window=10, window_seconds=10)
        first, second = take(clock), take(clock)
        assert second.start_at - first.start_at == pytest.approx(1.0 / 0.98)

    def test_tokens_are_spaced_by_their_cost(self, make_budget, clock):
        make_budget(requests_per_window=1000, input_tokens_per_window=1000, window_seconds=10)
        starts = [take(clock, tokens_in=250).start_at - clock.now() for _ in range(5)]
        assert starts == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0])

    def test_one_start_time_serves_every_dimension(self, make_budget, clock):
        # Reserving each dimension on its own would let two requests start 0.1 s apart here.
        make_budget(requests_per_window=5, input_tokens_per_window=100, window_seconds=10)
        first = take(clock, tokens_in=100)  # tokens busy for 10 s
        second = take(clock, tokens_in=1)
        third = take(clock, tokens_in=1)
        assert second.start_at - first.start_at == pytest.approx(10.0)
        assert third.start_at - second.start_at == pytest.approx(2.0)  # the request spacing

    def test_slots_are_granted_in_order__nobody_starves(self, make_budget, clock):
        make_budget(requests_per_window=2, window_seconds=1)
        starts = [take(clock).start_at for _ in range(50)]
        assert starts == sorted(starts)
        assert len(set(starts)) == 50


@pytest.mark.django_db
class TestReconcile:
    def test_unused_tokens_are_given_back(self, make_budget, clock):
        make_budget(requests_per_window=1000, input_tokens_per_window=1000, window_seconds=10)
        first = take(clock, tokens_in=500)
        reconcile(first, input_tokens=100, output_tokens=0)
        assert take(clock, tokens_in=100).start_at - clock.now() == pytest.approx(1.0)
        assert RateLimitBudget.objects.get().total_input_tokens == 200

    def test_extra_tokens_push_the_next_caller_back(self, make_budget, clock):
        make_budget(requests_per_window=1000, output_tokens_per_window=1000, window_seconds=10)
        first = take(clock, tokens_out=100)
        reconcile(first, input_tokens=0, output_tokens=500)
        assert take(clock, tokens_out=10).start_at - clock.now() == pytest.approx(5.0)


@pytest.mark.django_db
class TestCaps:
    def test_daily_request_limit__refuses_until_midnight(self, make_budget, clock):
        make_budget(requests_per_window=1000, requests_per_day=3)
        for _ in range(3):
            take(clock)
        with pytest.raises(BudgetExhaustedError, match="daily request limit of 3 reached") as err:
            take(clock)
        midnight = datetime(2027, 3, 2, tzinfo=UTC).timestamp()
        assert err.value.available_at == midnight
        clock.advance(midnight - clock.now() + 1)
        take(clock)  # a new day
        assert RateLimitBudget.objects.get().day_requests == 1

    def test_daily_token_cap(self, make_budget, clock):
        make_budget(tokens_per_day=1000)
        take(clock, tokens_in=600, tokens_out=300)
        with pytest.raises(BudgetExhaustedError, match="daily token cap of 1000"):
            take(clock, tokens_in=100, tokens_out=1)
        take(clock, tokens_in=50, tokens_out=50)

    def test_analysis_token_cap(self, make_budget, clock):
        make_budget(tokens_per_analysis=5000)
        take(clock, tokens_in=1000, analysis_tokens_used=3000)
        with pytest.raises(BudgetExhaustedError, match="analysis token cap of 5000"):
            take(clock, tokens_in=1000, tokens_out=500, analysis_tokens_used=4000)

    def test_a_slot_past_the_deadline_is_refused__and_nothing_is_reserved(self, make_budget, clock):
        make_budget(requests_per_window=1, window_seconds=10)
        take(clock)
        before = RateLimitBudget.objects.get()
        with pytest.raises(BudgetExhaustedError, match="after the caller's deadline"):
            take(clock, deadline=clock.now() + 5)
        after = RateLimitBudget.objects.get()
        assert after.next_request_at == before.next_request_at
        assert after.total_requests == before.total_requests == 1


@pytest.mark.django_db
class TestBackpressure:
    def test_a_pause_delays_every_caller(self, make_budget, clock):
        make_budget()
        assert pause("api", until=clock.now() + 2, reason="http_429: retry-after 2 s")
        assert take(clock).start_at == pytest.approx(clock.now() + 2)

    def test_a_shorter_pause_does_not_shorten_a_longer_one(self, make_budget, clock):
        make_budget()
        pause("api", until=clock.now() + 30, reason="long")
        assert not pause("api", until=clock.now() + 2, reason="short")
        assert RateLimitBudget.objects.get().paused_until == clock.now() + 30

    def test_exhausted_ratelimit_headers_pause_until_their_reset(self, make_budget, clock):
        make_budget()
        reset = datetime.fromtimestamp(clock.now() + 7, tz=UTC).isoformat()
        observe_headers(
            "api",
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": reset,
            },
            clock=clock,
        )
        assert take(clock).start_at == pytest.approx(clock.now() + 7)

    def test_a_lower_reported_limit_tightens_the_spacing(self, make_budget, clock):
        make_budget(requests_per_window=100, window_seconds=60)
        observe_headers("api", {"anthropic-ratelimit-requests-limit": "30"}, clock=clock)
        budget = RateLimitBudget.objects.get()
        assert budget.observed_requests_limit == 30
        first, second = take(clock), take(clock)
        assert second.start_at - first.start_at == pytest.approx(2.0)  # 60 s / 30


class PausingClock(FakeClock):
    """Another process sees a 429 while our caller sleeps."""

    def __init__(self, start: float, pause_for: float) -> None:
        super().__init__(start)
        self.pause_for = pause_for
        self.paused = False

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if not self.paused:
            self.paused = True
            until = self.now() + self.pause_for
            await asyncio.to_thread(pause, "api", until=until, reason="http_429")


@pytest.mark.django_db(transaction=True)
class TestWaiting:
    async def test_acquire_waits_for_its_slot_and_reports_it(self, make_budget, clock):
        await asyncio.to_thread(make_budget, requests_per_window=2, window_seconds=10)
        waits: list[float] = []
        await acquire("api", input_tokens=0, output_tokens=0, clock=clock)
        start = clock.now()
        reservation = await acquire(
            "api", input_tokens=0, output_tokens=0, clock=clock, on_wait=waits.append
        )
        assert reservation.start_at == pytest.approx(start + 5)
        assert waits == [pytest.approx(start + 5)]
        assert clock.now() == pytest.approx(start + 5)

    async def test_a_pause_that_begins_while_waiting_requeues_the_waiter(self, make_budget):
        clock = PausingClock(start=1_900_000_000.0, pause_for=3.0)
        await asyncio.to_thread(make_budget, requests_per_window=2, window_seconds=10)
        await acquire("api", input_tokens=0, output_tokens=0, clock=clock)
        first_slot = clock.now() + 5
        reservation = await acquire("api", input_tokens=0, output_tokens=0, clock=clock)
        assert reservation.start_at >= first_slot + 3  # not before the pause ends
        budget = await asyncio.to_thread(RateLimitBudget.objects.get)
        assert budget.total_requests == 2  # the abandoned slot was given back

    async def test_no_lock_is_held_while_waiting__seed_bug_3(self, make_budget):
        # The seed slept while holding its lock, so every other caller waited behind it.
        await asyncio.to_thread(make_budget, requests_per_window=1, window_seconds=1.5)
        await acquire("api", input_tokens=0, output_tokens=0)
        waiter = asyncio.create_task(acquire("api", input_tokens=0, output_tokens=0))
        await asyncio.sleep(0.2)  # the waiter is now sleeping until its slot
        elapsed: list[float] = []

        def reserve_from_another_connection() -> None:
            began = time.monotonic()
            reserve("api", Ask(input_tokens=0, output_tokens=0))
            elapsed.append(time.monotonic() - began)

        thread = threading.Thread(target=reserve_from_another_connection)
        thread.start()
        await asyncio.to_thread(thread.join, 5)
        assert not waiter.done()
        assert elapsed and elapsed[0] < 0.5
        await waiter
