"""The budget at its real limit: output estimated from recent replies, and the time a small
reply gives back handed to the callers already waiting for a slot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async

from reliability.models import RateLimitBudget
from reliability.output_estimate import OutputTokenEstimate, output_estimate_for
from reliability.ratelimit import Ask, reconcile, reserve
from reliability.ratelimit_wait import forget_started_requests, wait_for_slot
from tests.clocks import FakeClock


class TestOutputTokenEstimate:
    def test_fallback__until_enough_replies(self):
        estimate = OutputTokenEstimate(fallback=800, min_samples=5)
        for _ in range(4):
            estimate.observe(10)

        assert estimate.estimate(max_tokens=2048) == 800
        estimate.observe(10)
        assert estimate.estimate(max_tokens=2048) == 10

    def test_high_percentile__of_recent_replies(self):
        estimate = OutputTokenEstimate(fallback=800, percentile=0.95, min_samples=10)
        for tokens in range(1, 101):  # 1..100
            estimate.observe(tokens)

        assert estimate.estimate(max_tokens=2048) == 95

    def test_bounded_by_max_tokens__and_by_one(self):
        estimate = OutputTokenEstimate(fallback=5_000, min_samples=3)
        assert estimate.estimate(max_tokens=2048) == 2048  # the fallback, bounded
        for tokens in (4_000, 4_000, 4_000):
            estimate.observe(tokens)
        assert estimate.estimate(max_tokens=1024) == 1024
        zero = OutputTokenEstimate(fallback=0, min_samples=1)
        assert zero.estimate(max_tokens=1024) == 1

    def test_window__forgets_old_replies(self):
        estimate = OutputTokenEstimate(fallback=800, min_samples=2, max_samples=3)
        for tokens in (900, 900, 900, 50, 50, 50):
            estimate.observe(tokens)

        assert estimate.estimate(max_tokens=2048) == 50

    def test_one_estimate_per_kind(self):
        review = output_estimate_for(("model-a", "v1", "review"), fallback=800)
        assert output_estimate_for(("model-a", "v1", "review"), fallback=800) is review
        assert output_estimate_for(("model-a", "v1", "correction"), fallback=800) is not review


@pytest.fixture
def clock():
    return FakeClock(start=datetime(2027, 3, 1, 12, 0, tzinfo=UTC).timestamp())


@pytest.fixture(autouse=True)
def exact_spacing(settings):
    settings.EIDOLON_RATE_HEADROOM = 0.0
    forget_started_requests()
    yield
    forget_started_requests()


def output_bound_budget() -> RateLimitBudget:
    # 0.1 s per request, 0.01 s per output token: an 800-token estimate holds 8 s.
    return RateLimitBudget.objects.create(
        name="api",
        window_seconds=64.0,
        requests_per_window=640,
        input_tokens_per_window=10_000_000,
        output_tokens_per_window=6_400,
        requests_per_day=100_000,
    )


@pytest.mark.django_db(transaction=True)
class TestFreedCapacityReachesWaitingCallers:
    async def test_small_reply__moves_the_waiting_callers_slot_earlier(self, clock):
        await sync_to_async(output_bound_budget)()
        ask = Ask(0, 800)

        def reserve_slot():
            return reserve("api", ask, clock=clock)

        first = await wait_for_slot(
            await sync_to_async(reserve_slot)(), reserve_again=reserve_slot, clock=clock
        )
        second = await sync_to_async(reserve_slot)()
        old_slot = second.start_at
        assert old_slot - first.start_at == pytest.approx(8.0)

        clock.advance(1.0)  # the first reply arrives: 10 tokens, not 800
        await sync_to_async(reconcile)(first, input_tokens=0, output_tokens=10)
        used = await wait_for_slot(second, reserve_again=reserve_slot, clock=clock, recheck=0.5)

        # Admitted at its first look after the reply, 6.5 s before its old slot.
        assert used.start_at == pytest.approx(first.start_at + 1.5)
        assert used.start_at < old_slot - 6
        assert clock.now() == pytest.approx(first.start_at + 1.5)

    async def test_no_reply_below_its_estimate__the_slot_stays(self, clock):
        await sync_to_async(output_bound_budget)()
        ask = Ask(0, 800)

        def reserve_slot():
            return reserve("api", ask, clock=clock)

        first = await wait_for_slot(
            await sync_to_async(reserve_slot)(), reserve_again=reserve_slot, clock=clock
        )
        second = await sync_to_async(reserve_slot)()
        clock.advance(1.0)
        await sync_to_async(reconcile)(first, input_tokens=0, output_tokens=800)
        used = await wait_for_slot(second, reserve_again=reserve_slot, clock=clock, recheck=0.5)

        assert used.start_at == pytest.approx(second.start_at)
        assert used.start_at == pytest.approx(first.start_at + 8.0)

    async def test_moved_slot__keeps_the_request_spacing_after_started_requests(self, clock):
        # 2 s per request: the freed output time cannot bring the second closer than that.
        await sync_to_async(
            lambda: (
                output_bound_budget()
                .__class__.objects.filter(name="api")
                .update(requests_per_window=32)
            )
        )()
        ask = Ask(0, 800)

        def reserve_slot():
            return reserve("api", ask, clock=clock)

        first = await wait_for_slot(
            await sync_to_async(reserve_slot)(), reserve_again=reserve_slot, clock=clock
        )
        second = await sync_to_async(reserve_slot)()
        await sync_to_async(reconcile)(first, input_tokens=0, output_tokens=1)
        used = await wait_for_slot(second, reserve_again=reserve_slot, clock=clock, recheck=0.5)

        assert used.start_at == pytest.approx(first.start_at + 2.0)


class TestWholeRequestsPerWindow:
    def test_slot__rounds_the_requests_per_window_down(self):
        from reliability.spacing import slot_seconds

        per_token = 60 / 8_000
        # 8,000 / 300 = 26.7 requests a minute: 26 fit, so each holds 60 / 26 s.
        assert slot_seconds(300, per_token, 60.0, headroom=0) == pytest.approx(60 / 26)
        assert slot_seconds(400, per_token, 60.0, headroom=0) == pytest.approx(3.0)  # 20 fit
        # With 2 % headroom the 26 span 61.2 s: a start up to 1.2 s late stays in its window.
        with_headroom = 60 / (8_000 * 0.98)
        assert slot_seconds(300, with_headroom, 60.0, headroom=0.02) == pytest.approx(61.2 / 26)
        assert slot_seconds(0, per_token, 60.0) == 0.0
        assert slot_seconds(9_000, per_token, 60.0) == pytest.approx(9_000 * per_token)

    def test_no_window_holds_more_tokens_than_the_limit(self):
        from reliability.spacing import slot_seconds

        spacing = slot_seconds(300, 60 / (8_000 * 0.98), 60.0, headroom=0.02)
        # Every start up to 1 s late (lateness allowed by the headroom, and the network).
        starts = [index * spacing + (1.0 if index % 26 == 0 else 0.0) for index in range(200)]
        busiest = max(sum(1 for s in starts if t <= s < t + 60.0) for t in starts)
        assert busiest * 300 <= 8_000


@pytest.mark.django_db
class TestReturnedTimeMovesTheQueue:
    def test_output_bound__the_next_reservation_follows_the_returned_time(self, clock):
        output_bound_budget()
        reserve("api", Ask(0, 800), clock=clock)
        first = reserve("api", Ask(0, 800), clock=clock)  # placed 8 s on
        reconcile(first, input_tokens=0, output_tokens=10)  # 7.9 s given back

        after = reserve("api", Ask(0, 800), clock=clock)
        assert after.start_at - clock.now() == pytest.approx(8.1)  # not 16

    def test_request_bound__returned_output_time_leaves_the_request_spacing(self, clock):
        RateLimitBudget.objects.create(
            name="api",
            window_seconds=10.0,
            requests_per_window=10,  # 1 s apart
            input_tokens_per_window=10_000_000,
            output_tokens_per_window=1_000,  # 50 tokens: 0.5 s
            requests_per_day=100_000,
        )
        first = reserve("api", Ask(0, 50), clock=clock)
        reconcile(first, input_tokens=0, output_tokens=0)

        second = reserve("api", Ask(0, 50), clock=clock)
        assert second.start_at - first.start_at == pytest.approx(1.0)
