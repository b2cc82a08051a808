"""Where users see which model reviewed: on each card ("by claude-haiku-4-5", cached cards too),
in the API's card and analysis shapes, and per model on the analysis page (units, requests,
cost), after real runs on the model chain against the fake."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from analyses.models import Analysis, Card
from analyses.selectors import analysis_model_usage
from reliability.models import ModelPrice
from tests.analyses.page_support import make_analysis, make_card, make_user
from tests.analyses.test_model_chain import (
    FALLBACK,
    PRIMARY,
    analysed,
    chain_for,
    fake,  # noqa: F401 (the fixture)
    model_rows,
    open_breaker,
)
from tests.anthropic_support import write_project
from tests.api_support import caller

pytestmark = pytest.mark.django_db(transaction=True)


async def mixed_analysis(fake, root) -> Analysis:  # noqa: F811
    """Two units: the first overloads the primary twice (its guard gives up) and moves to
    the fallback; the second is the primary's."""
    await sync_to_async(model_rows)(failure_threshold=50)
    await sync_to_async(priced)()
    fake.script("overloaded", "overloaded")
    return await analysed(root, fake, provider=chain_for(fake, max_attempts=2), concurrency=1)


def priced() -> None:
    """Both models priced (another test may have emptied the price table)."""
    for prefix, input_price, output_price in (("claude-sonnet", 3, 15), ("claude-haiku", 1, 5)):
        ModelPrice.objects.update_or_create(
            model=prefix,
            defaults={
                "input_per_mtok": input_price,
                "output_per_mtok": output_price,
                "cache_write_per_mtok": input_price * 1.25,
                "cache_read_per_mtok": input_price / 10,
            },
        )


def staff_page(url: str) -> str:
    client = Client()
    user = User.objects.filter(username="staff").first() or make_user("staff", staff=True)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


class TestModelUsage:
    async def test_per_model__units_requests_failed_ones_and_cost(self, fake, tmp_path):  # noqa: F811
        analysis = await mixed_analysis(fake, write_project(tmp_path, functions=1))

        usage = await sync_to_async(analysis_model_usage)(analysis)

        rows = [
            (u["model"], u["role"], u["units"], u["requests"], u["failed_requests"]) for u in usage
        ]
        assert rows == [(PRIMARY, "primary", 1, 3, 2), (FALLBACK, "fallback 1", 1, 1, 0)]
        costs = [u["cost_usd"] for u in usage]
        assert all(cost > 0 for cost in costs)
        assert sum(costs) == pytest.approx(float(analysis.cost_usd))
        assert sum(u["input_tokens"] for u in usage) == analysis.input_tokens

    async def test_two_grouped_queries__none_once_finished(
        self,
        fake,  # noqa: F811
        tmp_path,
        django_assert_num_queries,
    ):
        analysis = await mixed_analysis(fake, write_project(tmp_path, functions=1))
        kept = analysis.model_usage

        def usage() -> None:
            with django_assert_num_queries(0):
                assert analysis_model_usage(analysis) == kept  # kept when it finished
            analysis.model_usage = None  # as an analysis finished before it was kept
            with django_assert_num_queries(2):
                assert analysis_model_usage(analysis) == kept

        await sync_to_async(usage)()
        assert [row["model"] for row in kept] == [PRIMARY, FALLBACK]

    async def test_api__the_analysis_has_its_models_and_each_card_its_model(self, fake, tmp_path):  # noqa: F811
        analysis = await mixed_analysis(fake, write_project(tmp_path, functions=1))
        staff = await sync_to_async(caller)("ops", staff=True)

        detail = (await staff.call("GET", f"/api/analyses/{analysis.pk}")).json()
        assert [(m["model"], m["units"], m["requests"]) for m in detail["models"]] == [
            (PRIMARY, 1, 3),
            (FALLBACK, 1, 1),
        ]
        listed = (await staff.call("GET", "/api/analyses")).json()["items"]
        assert listed[0]["models"] is None  # the list does not add them up

        cards = (await staff.call("GET", f"/api/analyses/{analysis.pk}/cards")).json()["items"]
        stored = await sync_to_async(dict)(
            Card.objects.filter(analysis=analysis).values_list("pk", "model")
        )
        assert {card["id"]: card["model"] for card in cards} == stored
        assert set(stored.values()) == {PRIMARY, FALLBACK}


class TestCards:
    async def test_page__each_card_says_which_model_wrote_it__cached_ones_too(
        self,
        fake,  # noqa: F811
        tmp_path,
    ):
        await sync_to_async(model_rows)(recovery_timeout=600)
        await sync_to_async(open_breaker)(PRIMARY)
        root = write_project(tmp_path, functions=3)
        first = await analysed(root, fake, concurrency=1)
        fake.reset()
        cached = await analysed(root, fake, concurrency=1)
        assert fake.requests == [] and cached.functions_cached == cached.functions_total

        for analysis in (first, cached):
            cards = await sync_to_async(Card.objects.filter(analysis=analysis).count)()
            assert cards > 0
            page = await sync_to_async(staff_page)(f"/analyses/{analysis.pk}/")
            by = f'data-model="{FALLBACK}">by {FALLBACK}</span>'
            assert page.count(by) == cards
            assert f'<tr data-model="{FALLBACK}" data-role-in-chain="fallback 1">' in page
            assert f'data-model="{PRIMARY}"' not in page
        page = await sync_to_async(staff_page)(f"/analyses/{cached.pk}/")
        assert f"({cached.functions_total} cached)" in page

    def test_fragment__a_card_by_the_rules_does_not_say_by(self):
        owner = make_user("alice")
        analysis = make_analysis(owner)
        rules = make_card(analysis, model="rules")
        haiku = make_card(analysis, model=FALLBACK, source="anthropic")
        client = Client()
        client.force_login(owner)
        text = client.get(f"/analyses/{analysis.pk}/cards/{rules.pk}/").content.decode()
        assert 'data-role="model"' not in text
        text = client.get(f"/analyses/{analysis.pk}/cards/{haiku.pk}/").content.decode()
        assert f"by {FALLBACK}</span>" in text
