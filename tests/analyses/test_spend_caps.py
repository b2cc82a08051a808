"""Spend caps in money: an analysis stops before the call that would take it past its cap,
says why, and keeps the reviews it finished; through the real SDK against the fake API."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit, LLMCall, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import ModelPrice, RateLimitBudget
from reliability.output_estimate import forget_estimates
from tests.anthropic_support import as_anthropic, generous_anthropic_limits, provider_for

pytestmark = pytest.mark.django_db(transaction=True)

CAP = Decimal("0.05")
REASON = re.compile(
    r"not reviewed: rate budget 'anthropic': spend cap of \$0\.05 per analysis reached: "
    r"\$(?P<spent>[0-9.]+) spent \(the next call is estimated at \$(?P<next>[0-9.]+)\)"
)


def write_functions(root: Path, *, functions: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "module.py").write_text(
        "".join(
            f"\n\ndef capped_{index}(value, limit={index}):\n"
            f"    if value > limit:\n"
            f"        return value - limit\n"
            f"    return value + {index}\n"
            for index in range(functions)
        )
    )
    return root


def priced_and_capped() -> None:
    generous_anthropic_limits(failure_threshold=1000)
    RateLimitBudget.objects.filter(name="anthropic").update(usd_per_analysis=CAP)
    # Input-heavy prices: each review costs about a cent, so a few fit under $0.05.
    ModelPrice.objects.update_or_create(
        model="claude-sonnet",
        defaults={
            "input_per_mtok": 20,
            "output_per_mtok": 5,
            "cache_write_per_mtok": 25,
            "cache_read_per_mtok": 2,
        },
    )


def outcome(analysis_id: int) -> tuple[Analysis, list[CodeUnit], int, list[LLMCall]]:
    return (
        Analysis.objects.get(pk=analysis_id),
        list(CodeUnit.objects.filter(analysis_id=analysis_id)),
        Card.objects.filter(analysis_id=analysis_id).count(),
        list(LLMCall.objects.filter(analysis_id=analysis_id)),
    )


class TestSpendCapPerAnalysis:
    async def test_cap__stops_before_the_call_that_would_pass_it__keeps_the_reviews(self, tmp_path):
        forget_estimates()  # the first calls reserve the fixed estimate, as after a restart
        await sync_to_async(priced_and_capped)()
        analysis = await sync_to_async(analysis_create)(
            source=str(write_functions(tmp_path, functions=12)),
            provider="static",
            allow_any_path=True,
            concurrency=1,
        )
        await as_anthropic(analysis)
        fake = FakeAnthropic(config=FakeConfig(seed=2), responder=review_responder)
        with fake.running():
            status = await run_analysis(analysis.pk, provider=provider_for(fake))
            requests_at_the_fake = len(fake.requests)

        analysis, units, cards, calls = await sync_to_async(outcome)(analysis.pk)
        assert status == AnalysisStatus.COMPLETED_WITH_ERRORS
        reviewed = [unit for unit in units if unit.status == UnitStatus.ANALYZED]
        stopped = [unit for unit in units if unit.status == UnitStatus.FAILED]
        assert len(reviewed) >= 2 and len(stopped) >= 1
        assert len(reviewed) + len(stopped) == 12
        # No call was sent past the cap: every request the fake saw is a priced, recorded call.
        assert requests_at_the_fake == len(calls) == len(reviewed)
        assert analysis.cost_usd == sum(call.cost_usd for call in calls) <= CAP
        for unit in stopped:
            match = REASON.fullmatch(unit.failure_reason)
            assert match, unit.failure_reason
            spent, next_call = Decimal(match["spent"]), Decimal(match["next"])
            assert spent == analysis.cost_usd.quantize(Decimal("0.001"))
            assert spent + next_call > CAP  # the call it held back would have passed the cap
        assert cards > 0  # the finished reviews are kept


@pytest.mark.django_db
class TestSpendCapPerDay:
    def test_daily_cap__a_call_that_would_pass_it_is_refused_until_tomorrow(self):
        from reliability.exceptions import BudgetExhaustedError
        from reliability.ratelimit import Ask, charge_spend, reserve

        RateLimitBudget.objects.create(name="anthropic", usd_per_day=Decimal("1.00"))
        reserve("anthropic", Ask(100, 100, estimated_cost_usd=Decimal("0.40")))
        charge_spend("anthropic", cost_usd=Decimal("0.70"))

        reserve("anthropic", Ask(100, 100, estimated_cost_usd=Decimal("0.30")))  # exactly $1
        with pytest.raises(BudgetExhaustedError) as refused:
            reserve("anthropic", Ask(100, 100, estimated_cost_usd=Decimal("0.31")))

        assert refused.value.reason == "daily spend cap of $1.00 reached: $0.70 spent today"
        assert refused.value.available_at is not None
        reserve("anthropic", Ask(100, 100))  # an unpriced call: its cost is unknown, not held back
