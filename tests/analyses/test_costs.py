"""What analyses cost in money: each LLM call priced when it is recorded, an analysis's cost the
sum of its calls', its budget's day charged; through the real SDK against the fake API, and as
``manage.py analyze --json`` and the JSON API report it."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from analyses.models import Analysis, AnalysisStatus, LLMCall
from analyses.orchestrator import run_analysis
from analyses.providers.base import LLMCallRecord
from analyses.review_responder import review_responder
from analyses.selectors import analysis_cost
from analyses.services import analysis_create
from analyses.store import write_outcomes
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import ModelPrice, RateLimitBudget
from reliability.pricing import call_cost, price_for
from tests.anthropic_support import (
    MODEL,
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
)
from tests.api_support import caller
from tests.processes import run_manage, subprocess_environment

SONNET = {"input_per_mtok": 3, "output_per_mtok": 15, "cache_write_per_mtok": 3.75}


def set_price(prefix: str = "claude-sonnet", **prices: float) -> ModelPrice:
    """The price of ``prefix`` (Sonnet's unless told), as an operator would save it."""
    row, _ = ModelPrice.objects.get_or_create(
        model=prefix,
        defaults={**SONNET, "cache_read_per_mtok": Decimal("0.30")},
    )
    for field, value in prices.items():
        setattr(row, field, value)
    row.full_clean()
    row.save()
    return row


def write_functions(root: Path, *, functions: int, salt: int) -> Path:
    """``functions`` functions whose code differs by ``salt`` (so no review is a cache hit)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "module.py").write_text(
        "".join(
            f"\n\ndef f_{salt}_{index}(value, limit={index}):\n"
            f"    if value > limit * {salt}:\n"
            f"        return value - limit\n"
            f"    return value + {index}\n"
            for index in range(functions)
        )
    )
    return root


def calls_of(analysis_id: int) -> list[LLMCall]:
    return list(LLMCall.objects.filter(analysis_id=analysis_id).order_by("id"))


def dollars(call: LLMCall, *, output_per_mtok: int) -> Decimal:
    """The call's cost at $3 per million input tokens (the fake reports no cache tokens)."""
    return Decimal(call.input_tokens * 3 + call.output_tokens * output_per_mtok) / 10**6


def summed_in_the_database(analysis_id: int) -> Decimal:
    return LLMCall.objects.filter(analysis_id=analysis_id).aggregate(s=Sum("cost_usd"))["s"]


# --- the store, without the network: many calls, exact sums ---------------------------------------


def record(*, input_tokens: int, output_tokens: int, model: str = MODEL, **extra) -> LLMCallRecord:
    return LLMCallRecord(
        provider="anthropic",
        model=model,
        attempt=1,
        purpose="review",
        status="ok",
        http_status=200,
        latency_ms=10,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        budget="anthropic",
        **extra,
    )


@pytest.mark.django_db
class TestStore:
    def test_many_batches__the_analysis_and_the_budget_cost_exactly_the_sum_of_the_calls(self):
        set_price(input_per_mtok=Decimal("3.3333"), output_per_mtok=Decimal("15.0007"))
        RateLimitBudget.objects.create(name="anthropic")
        analysis = Analysis.objects.create(source="/tmp/x", provider="anthropic", model=MODEL)
        rng = random.Random(7)
        for _batch in range(20):
            calls = [
                (
                    None,
                    record(
                        input_tokens=rng.randint(0, 9_999),
                        output_tokens=rng.randint(0, 2_999),
                        cache_read_input_tokens=rng.randint(0, 500),
                        cache_creation_input_tokens=rng.randint(0, 500),
                    ),
                )
                for _ in range(25)
            ]
            write_outcomes(analysis.pk, outcomes=[], calls=calls)

        analysis.refresh_from_db()
        calls = calls_of(analysis.pk)
        assert len(calls) == analysis.llm_requests == 500
        assert analysis.cost_usd == sum(call.cost_usd for call in calls)
        assert analysis.cost_usd == summed_in_the_database(analysis.pk) > Decimal("10")
        budget = RateLimitBudget.objects.get(name="anthropic")
        assert budget.day_cost_usd == budget.total_cost_usd == analysis.cost_usd
        price = price_for(MODEL)
        for call in calls[:50]:
            assert call.cost_usd == call_cost(
                price,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cache_read_input_tokens=call.cache_read_input_tokens,
                cache_creation_input_tokens=call.cache_creation_input_tokens,
            )
        assert any(call.cache_read_input_tokens for call in calls)  # kept, and priced

    def test_an_unpriced_model__no_cost_no_charge_and_the_analysis_cost_is_unknown(self):
        RateLimitBudget.objects.create(name="anthropic")
        analysis = Analysis.objects.create(source="/tmp/x", provider="anthropic", model="gpt-x")
        failed = record(input_tokens=0, output_tokens=0, model="gpt-x", error="Overloaded")
        calls = [(None, record(input_tokens=100, output_tokens=10, model="gpt-x")), (None, failed)]
        write_outcomes(analysis.pk, outcomes=[], calls=calls)

        analysis.refresh_from_db()
        assert [call.cost_usd for call in calls_of(analysis.pk)] == [None, None]
        assert calls_of(analysis.pk)[1].error == "Overloaded"
        assert analysis.cost_usd == 0 and analysis_cost(analysis) is None
        assert RateLimitBudget.objects.get(name="anthropic").total_cost_usd == 0


# --- real analyses through the SDK, against the fake ----------------------------------------------


@pytest.fixture
def fake():
    with FakeAnthropic(config=FakeConfig(seed=5), responder=review_responder).running() as server:
        yield server


class PromptCachingFake(FakeAnthropic):
    """Reports a prompt cache as the real API does when a request marks a cached prefix: some
    input tokens written to the cache or read from it, besides ``input_tokens``.
    ``FakeAnthropic`` itself never caches."""

    CACHE_READ, CACHE_WRITE = 1_000, 200

    async def _reply(self, path: str, body: Any) -> tuple[dict[str, Any], tuple[int, int]]:
        payload, usage = await super()._reply(path, body)
        if "usage" in payload:
            payload["usage"]["cache_read_input_tokens"] = self.CACHE_READ
            payload["usage"]["cache_creation_input_tokens"] = self.CACHE_WRITE
        return payload, usage


class IndiscreetFake(FakeAnthropic):
    """Answers errors with a long message holding the caller's key and another secret, to show
    that what an LLM call keeps of an error is short and redacted."""

    def _error(self, kind: str, *, request_id: str, message: str | None = None, **rest):
        message = f"bad key test-key, try sk-ant-api03-{'x' * 24} instead. " + "Details. " * 60
        return super()._error(kind, request_id=request_id, message=message, **rest)


@pytest.fixture
def reliability_rows():
    return sync_to_async(partial(generous_anthropic_limits, failure_threshold=1000))


async def analyse(fake: FakeAnthropic, root: Path, *, call_timeout: float = 5.0) -> Analysis:
    analysis = await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True, concurrency=3
    )
    await as_anthropic(analysis)
    status = await run_analysis(analysis.pk, provider=provider_for(fake, timeout=call_timeout))
    assert status in (AnalysisStatus.COMPLETED, AnalysisStatus.COMPLETED_WITH_ERRORS)
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


@pytest.mark.django_db(transaction=True)
class TestRealAnalysis:
    async def test_under_faults__cost_is_the_sum_of_the_calls__failed_calls_say_why(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        await sync_to_async(set_price)()
        fake.configure(hang_seconds=5.0)
        fake.script("overloaded", "hang", "server_error")
        analysis = await analyse(
            fake, write_functions(tmp_path, functions=8, salt=1), call_timeout=1.0
        )

        calls = await sync_to_async(calls_of)(analysis.pk)
        assert analysis.cost_usd == sum(c.cost_usd for c in calls) > 0
        assert analysis.cost_usd == await sync_to_async(summed_in_the_database)(analysis.pk)
        price = await sync_to_async(price_for)(MODEL)
        for call in calls:
            tokens = {"input_tokens": call.input_tokens, "output_tokens": call.output_tokens}
            assert call.cost_usd == call_cost(price, **tokens)
        errors = {call.status: call.error for call in calls if call.status != "ok"}
        assert errors["http_529"] == "Overloaded"
        assert errors["timeout"] == "timed out after 1 s"
        assert errors["http_500"]  # the API's own words
        assert all(not call.error for call in calls if call.status == "ok")
        budget = await sync_to_async(RateLimitBudget.objects.get)(name="anthropic")
        assert budget.day_cost_usd == budget.total_cost_usd == analysis.cost_usd

        staff = await sync_to_async(caller)("operator", staff=True)
        detail = json.loads((await staff.call("GET", f"/api/analyses/{analysis.pk}")).content)
        assert Decimal(str(detail["cost_usd"])) == analysis.cost_usd

    async def test_cache_tokens__recorded_from_the_reply_s_usage_and_priced(
        self, reliability_rows, tmp_path
    ):
        await reliability_rows()
        await sync_to_async(set_price)()
        caching = PromptCachingFake(config=FakeConfig(seed=3), responder=review_responder)
        with caching.running():
            analysis = await analyse(caching, write_functions(tmp_path, functions=2, salt=7))

        calls = await sync_to_async(calls_of)(analysis.pk)
        assert calls and all(
            (c.cache_read_input_tokens, c.cache_creation_input_tokens) == (1_000, 200)
            for c in calls
        )
        price = await sync_to_async(price_for)(MODEL)
        cache_part = (1_000 * price.cache_read_per_mtok + 200 * price.cache_write_per_mtok) / 10**6
        for call in calls:
            assert call.cost_usd == dollars(call, output_per_mtok=15) + cache_part
        assert analysis.cost_usd == sum(c.cost_usd for c in calls)

    async def test_an_error_text_holding_secrets__short_and_redacted(
        self, reliability_rows, tmp_path
    ):
        await reliability_rows()
        indiscreet = IndiscreetFake(config=FakeConfig(seed=3), responder=review_responder)
        indiscreet.script("bad_request")
        with indiscreet.running():
            analysis = await analyse(indiscreet, write_functions(tmp_path, functions=2, salt=8))

        (failed,) = [c for c in await sync_to_async(calls_of)(analysis.pk) if c.status != "ok"]
        assert failed.status == "http_400" and "[REDACTED]" in failed.error
        assert "test-key" not in failed.error and "sk-ant-api03" not in failed.error
        assert len(failed.error) <= 200

    async def test_a_price_change__past_calls_keep_their_cost__new_calls_pay_the_new_price(
        self, fake, reliability_rows, tmp_path
    ):
        await reliability_rows()
        await sync_to_async(set_price)()
        before = await analyse(fake, write_functions(tmp_path / "a", functions=4, salt=2))
        costs_before = {c.pk: c.cost_usd for c in await sync_to_async(calls_of)(before.pk)}

        await sync_to_async(set_price)(output_per_mtok=Decimal("150"))  # ten times dearer
        after = await analyse(fake, write_functions(tmp_path / "b", functions=4, salt=3))

        past = await sync_to_async(calls_of)(before.pk)
        assert {c.pk: c.cost_usd for c in past} == costs_before
        assert (await sync_to_async(Analysis.objects.get)(pk=before.pk)).cost_usd == sum(
            costs_before.values()
        )
        assert past and all(c.cost_usd == dollars(c, output_per_mtok=15) for c in past)
        new = await sync_to_async(calls_of)(after.pk)
        assert new and all(c.cost_usd == dollars(c, output_per_mtok=150) for c in new)
        assert after.cost_usd == sum(c.cost_usd for c in new)


@pytest.mark.django_db(transaction=True)
class TestAnalyzeCommand:
    def test_json_and_summary__the_cost_the_database_holds(self, fake, tmp_path):
        generous_anthropic_limits()
        set_price("claude")  # whatever model the command's settings name
        environment = subprocess_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_LOG_LEVEL="WARNING",
        )
        root = write_functions(tmp_path / "a", functions=3, salt=4)
        result = run_manage(
            "analyze", str(root), "--provider", "anthropic", "--json", env=environment
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["llm_requests"] >= 3
        assert Decimal(str(report["cost_usd"])) == summed_in_the_database(report["id"]) > 0

        root = write_functions(tmp_path / "b", functions=3, salt=5)
        result = run_manage("analyze", str(root), "--provider", "anthropic", env=environment)
        assert result.returncode == 0, result.stderr
        analysis = Analysis.objects.latest("id")
        assert f"cost ${analysis.cost_usd:.4f}" in result.stdout

    def test_json__null_when_the_model_has_no_price(self, fake, tmp_path):
        generous_anthropic_limits()
        ModelPrice.objects.all().delete()
        environment = subprocess_environment(
            ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url
        )
        root = write_functions(tmp_path, functions=2, salt=6)
        result = run_manage(
            "analyze", str(root), "--provider", "anthropic", "--json", env=environment
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["llm_requests"] >= 2 and report["cost_usd"] is None
