"""The price table and the cost of one call (reliability.pricing), and a budget's spend
(reliability.ratelimit.charge_spend)."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from reliability.models import ModelPrice, RateLimitBudget
from reliability.pricing import Price, call_cost, model_call_cost, price_for, price_table
from reliability.ratelimit import DAY_SECONDS, Ask, charge_spend, reserve, utc_day_start
from reliability.status import budget_status
from tests.clocks import FakeClock

pytestmark = pytest.mark.django_db


def price(model: str, input_: str = "3", output: str = "15", write="3.75", read="0.30") -> Price:
    return Price(
        model=model,
        input_per_mtok=Decimal(input_),
        output_per_mtok=Decimal(output),
        cache_write_per_mtok=Decimal(write),
        cache_read_per_mtok=Decimal(read),
    )


class TestPriceFor:
    def test_a_prefix_prices_the_dated_model(self):
        table = [price("claude-sonnet-4-5")]
        assert price_for("claude-sonnet-4-5-20250929", prices=table).model == "claude-sonnet-4-5"

    def test_the_longest_prefix_wins__whatever_the_order(self):
        table = [price("claude-sonnet"), price("claude-sonnet-4-5"), price("claude-sonnet-4")]
        assert price_for("claude-sonnet-4-5-20250929", prices=table).model == "claude-sonnet-4-5"
        assert price_for("claude-sonnet-4-20250514", prices=table).model == "claude-sonnet-4"
        assert price_for("claude-sonnet-9", prices=table).model == "claude-sonnet"

    def test_no_prefix__unpriced_and_its_cost_is_none(self):
        table = [price("claude-opus")]
        assert price_for("gpt-4o", prices=table) is None
        assert price_for("claude", prices=table) is None  # a longer row does not price a prefix
        assert model_call_cost("gpt-4o", prices=table, input_tokens=10, output_tokens=5) is None

    def test_defaults_of_the_migration_price_current_claude_models(self):
        assert price_for("claude-opus-4-1-20250805").input_per_mtok == Decimal("15")
        assert price_for("claude-haiku-4-5-20251001").output_per_mtok == Decimal("5")
        assert price_for("claude-sonnet-5-5").model == "claude-sonnet"  # the family's price


class TestCallCost:
    def test_each_kind_of_token_at_its_own_price_per_million(self):
        cost = call_cost(
            price("m", input_="3", output="15", write="3.75", read="0.30"),
            input_tokens=1_000,
            output_tokens=200,
            cache_read_input_tokens=10_000,
            cache_creation_input_tokens=2_000,
        )
        # 0.003 + 0.003 + 0.003 + 0.0075
        assert cost == Decimal("0.01650000")

    def test_rounded_to_the_stored_precision(self):
        cost = call_cost(price("m", input_="0.0001"), input_tokens=7, output_tokens=0)
        assert cost == Decimal("0.00000000") and cost.as_tuple().exponent == -8
        cost = call_cost(price("m", input_="3"), input_tokens=1, output_tokens=0)
        assert cost == Decimal("0.00000300")

    def test_a_failed_call_without_tokens_costs_nothing_but_is_priced(self):
        assert call_cost(price("m"), input_tokens=0, output_tokens=0) == Decimal(0)


class TestPriceTable:
    def test_an_edit_applies_at_once(self):
        ModelPrice.objects.update_or_create(
            model="test-model",
            defaults={
                "input_per_mtok": 1,
                "output_per_mtok": 2,
                "cache_write_per_mtok": 0,
                "cache_read_per_mtok": 0,
            },
        )
        tokens = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
        assert model_call_cost("test-model-1", **tokens) == Decimal(3)
        ModelPrice.objects.filter(model="test-model").update(output_per_mtok=10)
        assert model_call_cost("test-model-1", **tokens) == Decimal(11)
        assert "test-model" in {p.model for p in price_table()}

    def test_a_negative_price_is_refused(self):
        row = ModelPrice(
            model="m",
            input_per_mtok=-1,
            output_per_mtok=1,
            cache_write_per_mtok=1,
            cache_read_per_mtok=1,
        )
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            row.full_clean()


class TestChargeSpend:
    def test_adds_to_the_day_and_the_total_atomically(self):
        clock = FakeClock(start=1_800_000_000.0)
        reserve("anthropic", Ask(10, 5), clock=clock)
        assert charge_spend("anthropic", cost_usd=Decimal("0.0125"), clock=clock)
        assert charge_spend("anthropic", cost_usd=Decimal("0.00000001"), clock=clock)
        budget = RateLimitBudget.objects.get(name="anthropic")
        assert budget.day_cost_usd == budget.total_cost_usd == Decimal("0.01250001")
        assert budget.day_requests == 1  # the same day: its requests stay counted

    def test_a_new_utc_day_starts_from_zero__as_a_reservation_does(self):
        clock = FakeClock(start=utc_day_start(1_800_000_000.0) + DAY_SECONDS - 10)
        reserve("anthropic", Ask(10, 5), clock=clock)
        charge_spend("anthropic", cost_usd=Decimal("1.5"), clock=clock)
        clock.advance(20)  # past midnight UTC
        charge_spend("anthropic", cost_usd=Decimal("0.25"), clock=clock)
        budget = RateLimitBudget.objects.get(name="anthropic")
        assert budget.day_cost_usd == Decimal("0.25")
        assert budget.total_cost_usd == Decimal("1.75")
        assert (budget.day_requests, budget.day_tokens) == (0, 0)
        assert budget.day_started_at == utc_day_start(clock.now())

    def test_a_reservation_on_a_new_day_clears_yesterdays_spend(self):
        clock = FakeClock(start=utc_day_start(1_800_000_000.0) + DAY_SECONDS - 10)
        reserve("anthropic", Ask(10, 5), clock=clock)
        charge_spend("anthropic", cost_usd=Decimal("1.5"), clock=clock)
        clock.advance(20)
        reserve("anthropic", Ask(10, 5), clock=clock)
        budget = RateLimitBudget.objects.get(name="anthropic")
        assert budget.day_cost_usd == Decimal(0) and budget.total_cost_usd == Decimal("1.5")
        assert budget_status(budget, now=clock.now())["today"]["cost_usd"] == 0.0

    def test_no_such_budget__false(self):
        assert not charge_spend("nobody", cost_usd=Decimal(1))


class TestReliabilityShow:
    def test_json__each_budgets_spend_today_and_the_price_table(self):
        reserve("anthropic", Ask(10, 5))
        charge_spend("anthropic", cost_usd=Decimal("0.0123"))
        out = StringIO()
        call_command("reliability", "show", "--json", stdout=out)
        snapshot = json.loads(out.getvalue())
        (budget,) = snapshot["budgets"]
        assert budget["today"]["cost_usd"] == 0.0123
        prices = {row["model"]: row for row in snapshot["prices"]}
        assert prices["claude-opus-4-1"]["output_per_mtok"] == 75.0

    def test_text__spend_today_and_prices(self):
        reserve("anthropic", Ask(10, 5))
        charge_spend("anthropic", cost_usd=Decimal("0.0123"))
        out = StringIO()
        call_command("reliability", "show", stdout=out)
        text = out.getvalue()
        assert "$0.0123 spent today" in text
        assert "Prices" in text and "claude-haiku-4-5" in text
