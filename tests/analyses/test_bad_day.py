"""A bad day costs time, not results: under transient faults every function is reviewed, with
about the least possible number of requests, and an outage never multiplies the traffic.

Through the real SDK against the fault-injecting fake on loopback. The product's windows are
scaled down for CI (the retry budget's 60 s window to 3 s, a breaker's recovery to 1-3 s); the
ratios and thresholds are the product's.
"""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.models import Analysis, AnalysisStatus, CodeUnit, LLMCall, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.providers.anthropic import AnthropicProvider
from analyses.review_responder import review_responder
from analyses.services import analysis_cancel, analysis_create, analysis_resume
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.fake_anthropic.config import Fault
from reliability.models import BreakerTransition
from reliability.retry import RetryBudget
from tests.anthropic_support import as_anthropic, generous_anthropic_limits, write_project
from tests.anthropic_support import provider_for as anthropic_provider

pytestmark = pytest.mark.django_db(transaction=True)

# The mix: 37 % of attempts fail.
FAULT_MIX = {"overloaded": 0.20, "rate_limit": 0.10, "server_error": 0.05, "reset": 0.02}
FAULT_MIX_SEED = 1  # a typical seed, not a lucky one: see test_the_seed_is_typical
FUNCTIONS = 60  # write_project(functions=54): 54 functions and 6 helpers
CONCURRENCY = 10
RETRY_BUDGET_WINDOW = 3.0  # the product's 10 s, scaled down


def provider_for(fake: FakeAnthropic) -> AnthropicProvider:
    """The product's retry policy and retry budget (its window scaled down), a fresh guard."""
    retry_budget = RetryBudget(ratio=0.2, window=RETRY_BUDGET_WINDOW, min_retries=3)
    return anthropic_provider(fake, retry_budget=retry_budget)


@pytest.fixture
def fake():
    # Roomy token limits: what the fake advertises becomes the budget's limit.
    config = FakeConfig(seed=11, input_tokens_limit=10**8, output_tokens_limit=10**8)
    with FakeAnthropic(config=config, responder=review_responder).running() as server:
        yield server


async def breaker_and_budget(**breaker) -> None:
    """A roomy rate budget and the ``anthropic`` breaker tuned by ``breaker``."""
    await sync_to_async(partial(generous_anthropic_limits, **breaker))()


async def new_analysis(root: Path, **options) -> Analysis:
    analysis = await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True, **options
    )
    await as_anthropic(analysis)
    return analysis


def review_requests(fake: FakeAnthropic) -> list:
    return [r for r in fake.requests if r.path == "/v1/messages"]


async def units_of(analysis: Analysis) -> list[dict]:
    return await sync_to_async(list)(
        CodeUnit.objects.filter(analysis=analysis, reviewable=True).values(
            "qualname", "status", "failure_reason"
        )
    )


async def reloaded(analysis: Analysis) -> Analysis:
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


def least_requests(seed: int, *, reviews: int) -> int:
    """The fewest requests that review ``reviews`` functions when the fake draws its faults with
    ``seed``: it draws one fault per request, in order, so this is where the ``reviews``-th
    success falls. A run that wastes no request makes exactly this many."""
    rng, cumulative = random.Random(f"faults-{seed}"), sum(FAULT_MIX.values())  # as the fake seeds
    successes = requests = 0
    while successes < reviews:
        requests += 1
        successes += rng.random() >= cumulative
    return requests


class TestFaultMix:
    def test_the_seed_is_typical(self):
        """The seed of the next test needs neither more nor fewer requests than most."""
        spread = sorted(least_requests(seed, reviews=FUNCTIONS) for seed in range(200))
        chosen = least_requests(FAULT_MIX_SEED, reviews=FUNCTIONS)
        assert spread[60] <= chosen <= spread[140], (chosen, spread[60], spread[140])

    async def test_37_percent_faults__every_function_reviewed_at_the_least_cost(
        self, fake, tmp_path
    ):
        await breaker_and_budget(failure_threshold=3, recovery_timeout=3)
        fake.configure(fault_rates=FAULT_MIX, retry_after_s=1.0, seed=FAULT_MIX_SEED)
        root = write_project(tmp_path, functions=FUNCTIONS - 6)
        analysis = await new_analysis(root, concurrency=CONCURRENCY)
        started = time.monotonic()
        status = await run_analysis(analysis.pk, provider=provider_for(fake))
        took = time.monotonic() - started
        analysis = await reloaded(analysis)

        requests = len(review_requests(fake))
        reviewed = analysis.functions_total
        least = least_requests(FAULT_MIX_SEED, reviews=reviewed)
        print(f"\n{reviewed} functions: {requests} requests (least {least}) in {took:.1f} s")
        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert reviewed == FUNCTIONS
        assert analysis.functions_analyzed == reviewed
        assert {u["status"] for u in await units_of(analysis)} == {UnitStatus.ANALYZED}
        assert requests <= 1.1 * FUNCTIONS / (1 - 0.37)  # the bound: 104.8
        assert requests == least  # not one request wasted
        assert analysis.llm_requests == requests
        faults = {r.fault for r in review_requests(fake)}
        assert {Fault.OVERLOADED, Fault.RATE_LIMIT, Fault.SERVER_ERROR} <= faults

        again = await new_analysis(root, concurrency=CONCURRENCY)
        assert await run_analysis(again.pk, provider=provider_for(fake)) == "completed"
        again = await reloaded(again)
        assert len(review_requests(fake)) == requests  # the second run pays nothing
        assert again.functions_cached == reviewed


class TestOutage:
    async def test_an_outage_mid_run__waits_it_out_with_probes_only(self, fake, tmp_path):
        threshold, recovery, outage = 3, 1.0, 6.0
        await breaker_and_budget(failure_threshold=threshold, recovery_timeout=recovery)
        fake.configure(latency_s=0.05)
        analysis = await new_analysis(
            write_project(tmp_path, functions=FUNCTIONS - 6), concurrency=CONCURRENCY
        )
        run = asyncio.create_task(run_analysis(analysis.pk, provider=provider_for(fake)))
        await asyncio.to_thread(fake.wait_for_requests, 20, timeout=30)
        fake.configure(fault_rates={"overloaded": 1.0})
        began = time.monotonic()
        await asyncio.sleep(outage)
        fake.configure(fault_rates={})
        ended = time.monotonic()
        status = await asyncio.wait_for(run, timeout=60)
        analysis = await reloaded(analysis)

        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.functions_analyzed == analysis.functions_total == FUNCTIONS
        during = [r for r in review_requests(fake) if began <= r.received_monotonic <= ended]
        assert all(r.fault == Fault.OVERLOADED for r in during)
        transitions = await sync_to_async(list)(
            BreakerTransition.objects.filter(breaker__name="anthropic")
            .order_by("created_at", "id")
            .values_list("to_state", "created_at")
        )
        opened_at = next(at for state, at in transitions if state == "open")
        half_opened = sum(1 for state, _ in transitions if state == "half_open")
        before_open = [r for r in during if r.received_at < opened_at]
        windows = int(outage / recovery) + 1
        print(
            f"\noutage of {outage:g} s: {len(during)} requests reached the fake, "
            f"{len(before_open)} before the breaker opened (threshold {threshold}, "
            f"{CONCURRENCY} concurrent units), {half_opened} half-open windows"
        )
        # The breaker admits, while closed, its threshold and what the concurrent units send
        # before it hears of the failures (one each at most); then one probe per recovery
        # window, no more.
        assert half_opened <= windows + 1
        assert len(during) <= threshold + CONCURRENCY + half_opened


class TestPermanentFailures:
    async def test_a_400__fails_the_unit_at_once_with_one_request(self, fake, tmp_path):
        await breaker_and_budget()
        fake.script("bad_request")
        analysis = await new_analysis(write_project(tmp_path, functions=1), concurrency=1)
        status = await run_analysis(analysis.pk, provider=provider_for(fake))

        assert status == AnalysisStatus.COMPLETED_WITH_ERRORS
        failed = [u for u in await units_of(analysis) if u["status"] == UnitStatus.FAILED]
        assert len(failed) == 1
        assert "rejected the request (400" in failed[0]["failure_reason"]
        assert len(review_requests(fake)) == 2  # the 400, then the other function's review

    async def test_resume__reviews_the_failed_units_again(self, fake, tmp_path):
        await breaker_and_budget()
        fake.script("bad_request")
        analysis = await new_analysis(write_project(tmp_path, functions=1), concurrency=1)
        await run_analysis(analysis.pk, provider=provider_for(fake))
        assert (await reloaded(analysis)).functions_failed == 1

        await sync_to_async(analysis_resume)(analysis_id=analysis.pk, actor="test")
        status = await run_analysis(analysis.pk, provider=provider_for(fake))
        analysis = await reloaded(analysis)

        assert status == AnalysisStatus.COMPLETED
        assert analysis.functions_failed == 0
        assert analysis.functions_analyzed == analysis.functions_total == 2
        assert len(review_requests(fake)) == 3  # only the failed unit was asked again


class TestStopping:
    async def test_cancel__stops_the_units_put_off_waiting_for_the_retry_budget(
        self, fake, tmp_path
    ):
        # A breaker that never opens: units give up on their attempts and are put off.
        await breaker_and_budget(failure_threshold=1000, minimum_calls=10_000)
        fake.configure(fault_rates={"overloaded": 1.0})
        analysis = await new_analysis(write_project(tmp_path, functions=4), concurrency=5)
        deferred = asyncio.Event()

        def watch(progress: dict) -> None:
            # Units put off, and the analysis says what it waits for.
            if progress["deferred"] and "retry budget" in progress["waiting_reason"]:
                deferred.set()

        run = asyncio.create_task(
            run_analysis(analysis.pk, provider=provider_for(fake), on_progress=watch)
        )
        await asyncio.wait_for(deferred.wait(), timeout=30)

        asked = time.monotonic()
        await sync_to_async(analysis_cancel)(analysis_id=analysis.pk, actor="test")
        status = await run
        stopped_after = time.monotonic() - asked
        requests_at_stop = len(review_requests(fake))
        await asyncio.sleep(1.5)

        assert status == AnalysisStatus.CANCELLED
        assert stopped_after < 2.0
        assert len(review_requests(fake)) == requests_at_stop
        units = await units_of(analysis)
        assert {u["status"] for u in units} == {UnitStatus.SKIPPED}

    async def test_the_deadline__fails_the_units_put_off_with_their_history(self, fake, tmp_path):
        await breaker_and_budget(failure_threshold=1000, minimum_calls=10_000)
        fake.configure(fault_rates={"overloaded": 1.0})
        analysis = await new_analysis(
            write_project(tmp_path, functions=4), concurrency=5, max_duration=4
        )
        status = await run_analysis(analysis.pk, provider=provider_for(fake))
        analysis = await reloaded(analysis)
        units = await units_of(analysis)

        # Each unit fails once no retry is left before the deadline (or when it passes).
        assert status in (AnalysisStatus.FAILED, AnalysisStatus.TIMED_OUT)
        assert {u["status"] for u in units} == {UnitStatus.FAILED}
        for unit in units:
            reason = unit["failure_reason"]
            assert "deadline" in reason, reason
            assert "put off" in reason and "529" in reason, reason
        # The retry budget paced the units put off: far fewer requests than attempts allowed.
        requests = len(review_requests(fake))
        assert requests <= 5 * 4 + 3 * (4 / RETRY_BUDGET_WINDOW + 1) + 5
        assert await sync_to_async(LLMCall.objects.filter(analysis=analysis).count)() == requests
