"""Analyses with Claude's provider, through the real SDK, against the fault-injecting fake."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.models import (
    Analysis,
    AnalysisEvent,
    AnalysisStatus,
    Card,
    CodeUnit,
    LLMCall,
    UnitStatus,
)
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_cancel, analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.retry import RetryBudget
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake():
    with FakeAnthropic(config=FakeConfig(seed=11), responder=review_responder).running() as server:
        yield server


@pytest.fixture
def reliability_rows():
    """Generous rows, with a breaker that opens only on a sustained outage and recovers fast."""
    return sync_to_async(
        partial(
            generous_anthropic_limits,
            failure_rate_threshold=90,
            minimum_calls=20,
            recovery_timeout=2,
        )
    )


async def new_analysis(root: Path, **options) -> Analysis:
    return await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True, **options
    )


def review_requests(fake: FakeAnthropic) -> list:
    return [r for r in fake.requests if r.path == "/v1/messages"]


class TestUnderFaults:
    async def test_529s_429s_and_hangs__every_function_reviewed_and_paid_once(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        fake.configure(
            fault_rates={"overloaded": 0.20, "rate_limit": 0.10, "hang": 0.05},
            retry_after_s=1.0,
            hang_seconds=30.0,
        )
        root = write_project(tmp_path, functions=40)
        analysis = await new_analysis(root, concurrency=10)
        await as_anthropic(analysis)
        # The product's retry budget (~20 % of calls), its 60 s window scaled down.
        retry_budget = RetryBudget(ratio=0.2, window=3.0, min_retries=3)
        provider = provider_for(fake, timeout=1.5, retry_budget=retry_budget)
        status = await run_analysis(analysis.pk, provider=provider)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)

        # Units whose attempts the retry budget did not retry are put off, not failed: they
        # are reviewed later, at the pace the retry budget allows.
        assert status == AnalysisStatus.COMPLETED, analysis.status_reason
        units = await sync_to_async(list)(
            CodeUnit.objects.filter(analysis=analysis, reviewable=True).values_list(
                "status", flat=True
            )
        )
        assert len(units) == analysis.functions_total == 44
        assert set(units) == {UnitStatus.ANALYZED}
        requests = review_requests(fake)
        # Each function paid for one good reply; every other request met a fault (how many
        # depends on the seed's draws, 89 here where 68 is the average: nothing is wasted).
        assert sum(1 for r in requests if r.fault == "ok") == analysis.functions_total
        assert analysis.llm_requests == len(requests)  # every request is in the cost view
        statuses = await sync_to_async(set)(LLMCall.objects.values_list("status", flat=True))
        assert {"ok", "http_529"} <= statuses


class TestCancelAndCache:
    async def test_cancel_mid_run__cancelled_within_2_s_and_no_request_after(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        fake.configure(latency_s=0.4)
        analysis = await new_analysis(write_project(tmp_path, functions=60), concurrency=4)
        await as_anthropic(analysis)
        run = asyncio.create_task(run_analysis(analysis.pk, provider=provider_for(fake)))
        await asyncio.to_thread(fake.wait_for_requests, 8, timeout=30)

        asked = time.monotonic()
        await sync_to_async(analysis_cancel)(analysis_id=analysis.pk, actor="test")
        status = await run
        stopped_after = time.monotonic() - asked
        requests_at_stop = len(review_requests(fake))
        await asyncio.sleep(1.0)

        assert status == AnalysisStatus.CANCELLED
        assert stopped_after < 2.0
        assert len(review_requests(fake)) == requests_at_stop
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        assert 0 < analysis.functions_analyzed < analysis.functions_total  # partial results kept
        skipped = await sync_to_async(
            CodeUnit.objects.filter(
                analysis=analysis, reviewable=True, status=UnitStatus.SKIPPED
            ).count
        )()
        assert skipped == analysis.functions_total - analysis.functions_analyzed

    async def test_a_second_run_over_an_unchanged_tree_makes_no_request(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        root = write_project(tmp_path, functions=25)
        first = await new_analysis(root)
        await as_anthropic(first)
        assert await run_analysis(first.pk, provider=provider_for(fake)) == "completed"
        requests_first = len(review_requests(fake))
        assert requests_first >= 27

        second = await new_analysis(root)
        await as_anthropic(second)
        assert await run_analysis(second.pk, provider=provider_for(fake)) == "completed"
        second = await sync_to_async(Analysis.objects.get)(pk=second.pk)
        first = await sync_to_async(Analysis.objects.get)(pk=first.pk)
        assert len(review_requests(fake)) == requests_first
        assert second.llm_requests == 0
        assert second.functions_cached == second.functions_total == 28  # 25 + 3 helpers
        assert second.cards_count == first.cards_count


async def progress_waits(analysis: Analysis) -> list[str]:
    return await sync_to_async(list)(
        AnalysisEvent.objects.filter(analysis=analysis, type="analysis.progress")
        .order_by("seq")
        .values_list("payload__waiting_reason", flat=True)
    )


class TestWaitingAndFallback:
    async def test_an_open_breaker__the_analysis_says_so_waits_and_goes_on(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        await sync_to_async(CircuitBreaker.objects.filter(name="anthropic").update)(
            state="open", state_changed_at=time.time(), recovery_timeout=1.5
        )
        analysis = await new_analysis(write_project(tmp_path, functions=5))
        await as_anthropic(analysis)
        status = await run_analysis(analysis.pk, provider=provider_for(fake))
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)

        assert status == AnalysisStatus.COMPLETED
        waits = await progress_waits(analysis)
        assert any(wait.startswith("AI circuit open until 20") for wait in waits), waits
        assert waits[-1] == "" and analysis.waiting_reason == ""
        assert analysis.functions_analyzed == 6

    async def test_a_full_budget__the_analysis_says_so(self, fake, reliability_rows, tmp_path):
        await reliability_rows()
        await sync_to_async(RateLimitBudget.objects.filter(name="anthropic").update)(
            requests_per_window=3, window_seconds=1.5
        )
        analysis = await new_analysis(write_project(tmp_path, functions=6), concurrency=6)
        await as_anthropic(analysis)
        await run_analysis(analysis.pk, provider=provider_for(fake))
        waits = await progress_waits(await sync_to_async(Analysis.objects.get)(pk=analysis.pk))
        assert any(wait.startswith("waiting for the rate budget until 20") for wait in waits)

    async def test_static_fallback_while_the_breaker_is_open(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        await sync_to_async(CircuitBreaker.objects.filter(name="anthropic").update)(
            state="forced_open"
        )
        analysis = await new_analysis(write_project(tmp_path, functions=5), fallback_to_static=True)
        await as_anthropic(analysis)
        assert await run_analysis(analysis.pk, provider=provider_for(fake)) == "completed"
        sources = await sync_to_async(set)(
            Card.objects.filter(analysis=analysis).values_list("source", flat=True)
        )
        assert sources == {"static"}
        assert review_requests(fake) == []

    async def test_the_deadline_times_it_out__keeping_what_was_done(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        fake.configure(latency_s=0.6)
        analysis = await new_analysis(
            write_project(tmp_path, functions=30), concurrency=2, max_duration=2.0
        )
        await as_anthropic(analysis)
        began = time.monotonic()
        status = await run_analysis(analysis.pk, provider=provider_for(fake))
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        assert status == AnalysisStatus.TIMED_OUT
        assert time.monotonic() - began < 4.0
        assert 0 < analysis.functions_analyzed < analysis.functions_total
        pending = await sync_to_async(
            CodeUnit.objects.filter(analysis=analysis, status=UnitStatus.PENDING).count
        )()
        assert pending == 0
        assert "deadline" in analysis.status_reason
