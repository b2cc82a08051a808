"""Reviews on a chain of models: each with its own breaker and budget (``anthropic:<model>``), the
primary while it admits, the fallback while not, and a result cache that knows who wrote what.

Real parts throughout: the SDK against the fake over loopback, breakers and budgets in the
database, opened by recorded failures or paused as a 429 would pause them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit, LLMCall
from analyses.orchestrator import cache_models, run_analysis
from analyses.parsing import Unit, parse_tree
from analyses.providers.anthropic import AnthropicProvider, model_target
from analyses.providers.base import ReviewRequest
from analyses.providers.chain import ModelChainProvider
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from reliability.breaker import admit, record
from reliability.exceptions import BudgetExhaustedError, CircuitOpenError
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.guard import Guard
from reliability.models import BreakerState, BreakerTransition, CircuitBreaker, RateLimitBudget
from reliability.outcomes import BreakerVerdict
from reliability.ratelimit import pause
from reliability.retry import RetryBudget, RetryPolicy
from tests.anthropic_support import write_project

pytestmark = pytest.mark.django_db(transaction=True)

PRIMARY, FALLBACK = "claude-sonnet-5-5", "claude-haiku-4-5"


@pytest.fixture
def fake():
    with FakeAnthropic(config=FakeConfig(seed=5), responder=review_responder).running() as server:
        yield server


def model_rows(*, recovery_timeout: float = 60.0, failure_threshold: int = 3) -> None:
    """A breaker and a roomy budget for each model of the chain."""
    now = time.time()
    for model in (PRIMARY, FALLBACK):
        CircuitBreaker.objects.create(
            name=model_target(model),
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            state_changed_at=now,
            window_started_at=now,
        )
        RateLimitBudget.objects.create(
            name=model_target(model),
            requests_per_window=100_000,
            input_tokens_per_window=10**8,
            output_tokens_per_window=10**8,
            requests_per_day=10**6,
        )


def open_breaker(model: str) -> None:
    """Open the model's breaker as its failures would (threshold 1 for the occasion)."""
    name = model_target(model)
    CircuitBreaker.objects.filter(name=name).update(failure_threshold=1)
    record(admit(name), BreakerVerdict.FAILURE, duration=0.1, reason="http_529")
    assert CircuitBreaker.objects.get(name=name).state == BreakerState.OPEN


def chain_for(fake: FakeAnthropic, *, max_attempts: int = 3, slot_wait: float = 2.0):
    def provider(model: str) -> AnthropicProvider:
        target = model_target(model)
        guard = Guard(
            target=target,
            budget=target,
            timeout=5.0,
            retry_policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.05, max_delay=0.2),
            retry_budget=RetryBudget(),
        )
        return AnthropicProvider(
            api_key="test-key",
            base_url=fake.base_url,
            model=model,
            max_tokens=1024,
            timeout=5.0,
            guard=guard,
        )

    return ModelChainProvider([provider(PRIMARY), provider(FALLBACK)], slot_wait=slot_wait)


async def analysed(
    root: Path, fake: FakeAnthropic, *, provider: ModelChainProvider | None = None, **options
) -> Analysis:
    analysis = await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True, **options
    )
    await sync_to_async(Analysis.objects.filter(pk=analysis.pk).update)(
        provider="anthropic", model=PRIMARY, model_chain=[PRIMARY, FALLBACK]
    )
    status = await run_analysis(analysis.pk, provider=provider or chain_for(fake))
    analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
    assert status == AnalysisStatus.COMPLETED, analysis.status_reason
    return analysis


def reviewed_by(analysis: Analysis) -> dict[str, int]:
    """Functions per model that reviewed them (or wrote their cached review)."""
    counts: dict[str, int] = {}
    for model in CodeUnit.objects.filter(analysis=analysis, reviewable=True).values_list(
        "model", flat=True
    ):
        counts[model] = counts.get(model, 0) + 1
    return counts


def requests_by_model(fake: FakeAnthropic) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in fake.requests:
        if request.path == "/v1/messages":
            counts[request.model] = counts.get(request.model, 0) + 1
    return counts


class TestRouting:
    async def test_primary_open__every_review_goes_to_the_fallback(self, fake, tmp_path):
        await sync_to_async(model_rows)()
        await sync_to_async(open_breaker)(PRIMARY)

        analysis = await analysed(write_project(tmp_path, functions=8), fake, concurrency=3)

        functions = analysis.functions_total
        assert requests_by_model(fake) == {FALLBACK: functions}
        assert await sync_to_async(reviewed_by)(analysis) == {FALLBACK: functions}
        card_models = await sync_to_async(set)(
            Card.objects.filter(analysis=analysis).values_list("model", flat=True)
        )
        assert card_models == {FALLBACK}
        call_models = await sync_to_async(set)(
            LLMCall.objects.filter(analysis=analysis).values_list("model", flat=True)
        )
        assert call_models == {FALLBACK}

    async def test_primary_recovers__new_units_go_back_to_it(self, fake, tmp_path):
        await sync_to_async(model_rows)(recovery_timeout=1.0)
        await sync_to_async(open_breaker)(PRIMARY)
        fake.configure(latency_s=0.2)

        analysis = await analysed(write_project(tmp_path, functions=16), fake, concurrency=1)

        requests = [r for r in fake.requests if r.path == "/v1/messages"]
        first_primary = next(i for i, r in enumerate(requests) if r.model == PRIMARY)
        # Before the recovery every review went to the fallback; from the first probe on,
        # every one to the primary (its probe succeeded and closed it).
        assert {r.model for r in requests[:first_primary]} == {FALLBACK}
        assert {r.model for r in requests[first_primary:]} == {PRIMARY}
        assert 1 <= first_primary < analysis.functions_total - 1
        by_model = await sync_to_async(reviewed_by)(analysis)
        assert by_model == {FALLBACK: first_primary, PRIMARY: len(requests) - first_primary}
        states = await sync_to_async(list)(
            BreakerTransition.objects.filter(breaker__name=model_target(PRIMARY))
            .order_by("id")
            .values_list("to_state", flat=True)
        )
        assert states == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]

    async def test_primary_out_of_budget__the_fallback_serves_without_waiting(self, fake, tmp_path):
        await sync_to_async(model_rows)()
        # As a 429 with retry-after 30 s pauses it: no slot for 30 s, far beyond the slot wait.
        await sync_to_async(pause)(
            model_target(PRIMARY), until=time.time() + 30, reason="http_429: retry-after 30 s"
        )
        started = time.monotonic()

        analysis = await analysed(write_project(tmp_path, functions=6), fake, concurrency=2)

        assert time.monotonic() - started < 30  # nobody waited for the primary's slot
        assert requests_by_model(fake) == {FALLBACK: analysis.functions_total}

    async def test_primary_fails_transiently__the_same_review_moves_to_the_fallback(
        self, fake, tmp_path
    ):
        await sync_to_async(model_rows)(failure_threshold=50)
        # Both attempts its guard allows on the primary are overloaded: it gives up.
        fake.script("overloaded", "overloaded")
        root = write_project(tmp_path, functions=1)

        analysis = await analysed(
            root, fake, provider=chain_for(fake, max_attempts=2), concurrency=1
        )

        models = [r.model for r in fake.requests if r.path == "/v1/messages"]
        # The first function: two attempts on the primary, then the fallback; the second (the
        # script spent) on the primary again, whose breaker never opened.
        assert models == [PRIMARY, PRIMARY, FALLBACK, PRIMARY]
        # Nothing was put off or failed: the fallback answered for the unit the primary could not.
        assert analysis.functions_failed == 0
        calls = await sync_to_async(list)(
            LLMCall.objects.filter(analysis=analysis).values_list("model", "status")
        )
        assert (PRIMARY, "http_529") in calls


class TestEveryModelRefuses:
    async def test_both_open_with_static_fallback__the_rules_review(self, fake, tmp_path):
        await sync_to_async(model_rows)()
        for model in (PRIMARY, FALLBACK):
            await sync_to_async(open_breaker)(model)

        analysis = await analysed(
            write_project(tmp_path, functions=4), fake, fallback_to_static=True
        )

        assert requests_by_model(fake) == {}
        assert await sync_to_async(reviewed_by)(analysis) == {"rules": analysis.functions_total}

    async def test_both_open__the_review_waits_for_the_first_to_recover(self, fake, tmp_path):
        await sync_to_async(model_rows)(recovery_timeout=1.5)
        for model in (PRIMARY, FALLBACK):
            await sync_to_async(open_breaker)(model)
        provider = chain_for(fake)
        waits = []
        unit = one_function(tmp_path)

        result = await provider.review(
            ReviewRequest(
                unit=unit,
                deadline=time.time() + 30,
                wait_for_breaker=True,
                wait_for_budget=True,
                on_wait=waits.append,
            )
        )
        await provider.aclose()

        assert result.model == PRIMARY  # both recovered together: the primary probes first
        assert waits and waits[0].reason == "breaker"
        assert f"AI ({PRIMARY}, {FALLBACK}) circuit open until" in waits[0].describe()

    async def test_both_open_and_may_not_wait__refused_with_the_primary_named(self, fake, tmp_path):
        await sync_to_async(model_rows)()
        for model in (PRIMARY, FALLBACK):
            await sync_to_async(open_breaker)(model)
        unit = one_function(tmp_path)
        provider = chain_for(fake)

        with pytest.raises(CircuitOpenError) as refused:
            await provider.review(ReviewRequest(unit=unit, deadline=time.time() + 30))
        await provider.aclose()

        assert refused.value.breaker == model_target(PRIMARY)
        assert f"every model refuses: also '{model_target(FALLBACK)}'" in str(refused.value)
        assert fake.requests == []

    async def test_primary_open_and_the_fallback_out_for_the_day__waits_for_the_primary(
        self, fake, tmp_path
    ):
        await sync_to_async(model_rows)(recovery_timeout=1.0)
        await sync_to_async(open_breaker)(PRIMARY)
        await sync_to_async(RateLimitBudget.objects.filter(name=model_target(FALLBACK)).update)(
            requests_per_day=1, day_requests=1, day_started_at=time.time()
        )
        provider = chain_for(fake)
        waits = []

        result = await provider.review(
            ReviewRequest(
                unit=one_function(tmp_path),
                deadline=time.time() + 30,
                wait_for_breaker=True,
                wait_for_budget=True,
                on_wait=waits.append,
            )
        )
        await provider.aclose()

        assert result.model == PRIMARY
        assert [w.reason for w in waits][:1] == ["breaker"]
        assert requests_by_model(fake) == {PRIMARY: 1}

    async def test_every_budget_short_past_the_deadline__refused_at_once(self, fake, tmp_path):
        await sync_to_async(model_rows)()
        for model in (PRIMARY, FALLBACK):
            await sync_to_async(pause)(
                model_target(model), until=time.time() + 60, reason="http_429: retry-after 60 s"
            )
        provider = chain_for(fake)

        with pytest.raises(BudgetExhaustedError):
            await asyncio.wait_for(
                provider.review(
                    ReviewRequest(
                        unit=one_function(tmp_path),
                        deadline=time.time() + 10,
                        wait_for_breaker=True,
                        wait_for_budget=True,
                    )
                ),
                timeout=20,
            )
        await provider.aclose()

        assert fake.requests == []


def one_function(root: Path) -> Unit:
    return next(u for u in parse_tree(write_project(root, functions=1)).units if u.is_function)


class TestCacheAndUpgrade:
    async def test_fallback_reviews__served_from_the_cache_unless_upgraded(self, fake, tmp_path):
        """Acceptance 4: a review the fallback wrote is served from the cache as the fallback's
        (never as the primary's) when the analysis does not upgrade; with the option on, the
        primary reviews those functions again, and later runs prefer its results."""
        await sync_to_async(model_rows)(recovery_timeout=600)
        await sync_to_async(open_breaker)(PRIMARY)
        root = write_project(tmp_path, functions=6)
        first = await analysed(root, fake, concurrency=2)
        functions = first.functions_total
        assert await sync_to_async(reviewed_by)(first) == {FALLBACK: functions}
        await sync_to_async(CircuitBreaker.objects.filter(name=model_target(PRIMARY)).update)(
            state=BreakerState.CLOSED
        )

        fake.reset()
        kept = await analysed(root, fake, concurrency=2)
        assert fake.requests == []
        assert kept.functions_cached == functions
        assert await sync_to_async(reviewed_by)(kept) == {FALLBACK: functions}
        kept_cards = await sync_to_async(set)(
            Card.objects.filter(analysis=kept).values_list("model", flat=True)
        )
        assert kept_cards == {FALLBACK}

        fake.reset()
        upgraded = await analysed(root, fake, concurrency=2, upgrade_fallback_reviews=True)
        assert requests_by_model(fake) == {PRIMARY: functions}
        assert upgraded.functions_analyzed == functions and upgraded.functions_cached == 0
        assert await sync_to_async(reviewed_by)(upgraded) == {PRIMARY: functions}

        fake.reset()
        after = await analysed(root, fake, concurrency=2)
        assert fake.requests == []
        assert await sync_to_async(reviewed_by)(after) == {PRIMARY: functions}

    def test_cache_models__the_chain_or_only_the_primary(self, fake):
        chain = chain_for(fake)

        assert cache_models(chain, upgrade_fallback_reviews=False) == [PRIMARY, FALLBACK]
        assert cache_models(chain, upgrade_fallback_reviews=True) == [PRIMARY]
