"""Replies read tolerantly: through the real SDK against the fake, a reply whose findings cite
lines outside the function or repeat one another costs no corrective request; its cards are kept
and marked. Only a reply the schema rejects earns the one correction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db.models import Sum
from django.template.loader import render_to_string

from analyses.findings import CLAMPED_NOTE, PINNED_NOTE
from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit, LLMCall
from analyses.orchestrator import run_analysis
from analyses.review_responder import make_review_responder, review_responder
from analyses.selectors import card_detail
from analyses.services import analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig, prompt_text
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)
from tests.eidolon_site.metrics_support import Scrape

pytestmark = pytest.mark.django_db(transaction=True)

FUNCTIONS = 6  # and the module's helper: 7 functions


def analyse(root, fake: FakeAnthropic) -> Analysis:
    analysis = analysis_create(source=str(root), provider="static", allow_any_path=True)
    async_to_sync(as_anthropic)(analysis)
    async_to_sync(run_analysis)(analysis.pk, provider=provider_for(fake))
    return Analysis.objects.get(pk=analysis.pk)


def adjusted_counts(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    scrape = Scrape(response.content.decode())
    return {
        kind: scrape.value("eidolon_ai_findings_adjusted_total", kind=kind)
        for kind in ("clamped", "merged")
    }


def reviews(fake: FakeAnthropic) -> list:
    return [request for request in fake.requests if request.path == "/v1/messages"]


@pytest.fixture
def untidy_fake():
    responder = make_review_responder(untidy_rate=1.0, seed=4)
    with FakeAnthropic(config=FakeConfig(seed=4), responder=responder).running() as fake:
        yield fake


class TestUntidyReplies:
    def test_lines_outside_and_repeats__no_correction_cards_kept_marked_and_counted(
        self, client, untidy_fake, tmp_path
    ):
        generous_anthropic_limits()
        root = write_project(tmp_path, functions=FUNCTIONS)
        before = adjusted_counts(client)

        analysis = analyse(root, untidy_fake)

        functions = analysis.functions_total
        assert functions == FUNCTIONS + 1
        assert analysis.status == AnalysisStatus.COMPLETED
        assert analysis.functions_analyzed == functions
        # One request per function: not one corrective request.
        assert len(reviews(untidy_fake)) == functions
        calls = LLMCall.objects.filter(analysis=analysis)
        assert set(calls.values_list("purpose", flat=True)) == {"review"}
        assert set(calls.values_list("status", flat=True)) == {"ok"}
        # Each reply: a finding far outside (pinned), the same again (merged), one past the end.
        totals = calls.aggregate(clamped=Sum("findings_clamped"), merged=Sum("findings_merged"))
        assert totals == {"clamped": 3 * functions, "merged": functions}
        after = adjusted_counts(client)
        assert after["clamped"] - before["clamped"] == 3 * functions
        assert after["merged"] - before["merged"] == functions

        cards = list(Card.objects.filter(analysis=analysis).select_related("unit"))
        assert len(cards) == 2 * functions == analysis.cards_count
        for card in cards:
            unit = card.unit
            assert unit.lineno <= card.line_start <= card.line_end <= unit.end_lineno
        pinned = [card for card in cards if card.adjustment.startswith(PINNED_NOTE)]
        clamped = [card for card in cards if card.adjustment == CLAMPED_NOTE]
        assert len(pinned) == len(clamped) == functions
        assert all(card.line_start == card.unit.lineno for card in pinned)
        assert all("Merged with 1 repeat" in card.adjustment for card in pinned)
        assert all(card.line_end == card.unit.end_lineno for card in clamped)

    def test_marks__shown_on_the_card_in_the_api_and_in_the_admin(
        self, admin_client, untidy_fake, tmp_path
    ):
        generous_anthropic_limits()
        analysis = analyse(write_project(tmp_path, functions=1), untidy_fake)
        card = Card.objects.filter(analysis=analysis, adjustment__startswith=PINNED_NOTE).first()

        assert card_detail(card)["adjustment"] == card.adjustment
        html = render_to_string("analyses/_card.html", {"card": card})
        assert 'data-role="adjustment"' in html and "shown at its first line" in html
        api = admin_client.get(f"/api/analyses/{analysis.pk}/cards")
        assert api.status_code == 200, api.content
        assert {item["adjustment"] for item in api.json()["items"]} == {
            card.adjustment for card in Card.objects.filter(analysis=analysis)
        }
        page = admin_client.get(f"/admin/analyses/card/{card.pk}/change/")
        assert page.status_code == 200 and "shown at its first line" in page.content.decode()

    def test_second_run__cards_from_the_cache_keep_their_marks(self, untidy_fake, tmp_path):
        generous_anthropic_limits()
        root = write_project(tmp_path, functions=3)
        first = analyse(root, untidy_fake)
        requests = len(reviews(untidy_fake))

        second = analyse(root, untidy_fake)

        assert len(reviews(untidy_fake)) == requests  # every function from the cache
        assert second.functions_cached == second.functions_total

        def marks(analysis: Analysis) -> list[tuple[str, int, int, str]]:
            return sorted(
                Card.objects.filter(analysis=analysis).values_list(
                    "unit__qualname", "line_start", "line_end", "adjustment"
                )
            )

        assert marks(second) == marks(first)
        assert all(adjustment for *_, adjustment in marks(second))


def invalid_then_untidy(body: Mapping[str, Any]) -> Any:
    """A reply the schema rejects for each review; the corrective request gets an untidy one."""
    if "could not be used" not in prompt_text(body):
        return {"findings": [{"kind": "bug", "severity": "high", "title": "no other field"}]}
    return make_review_responder(untidy_rate=1.0)(body)


class TestSchemaInvalidReplies:
    def test_invalid_reply__exactly_one_correction_per_function(self, tmp_path):
        generous_anthropic_limits()
        responder = invalid_then_untidy
        with FakeAnthropic(config=FakeConfig(seed=2), responder=responder).running() as fake:
            analysis = analyse(write_project(tmp_path, functions=FUNCTIONS), fake)
            requests = len(reviews(fake))

        functions = analysis.functions_total
        assert analysis.status == AnalysisStatus.COMPLETED
        assert requests == 2 * functions
        for unit in CodeUnit.objects.filter(analysis=analysis, reviewable=True):
            calls = list(unit.llm_calls.order_by("id").values_list("purpose", "status"))
            assert calls == [("review", "invalid_reply"), ("correction", "ok")], unit.qualname
        assert Card.objects.filter(analysis=analysis).count() == 2 * functions

    def test_invalid_twice__the_function_fails_after_one_correction(self, tmp_path):
        generous_anthropic_limits()
        responder = make_review_responder(invalid_rate=1.0, seed=9)
        with FakeAnthropic(config=FakeConfig(seed=9), responder=responder).running() as fake:
            analysis = analyse(write_project(tmp_path, functions=2), fake)
            requests = len(reviews(fake))

        assert analysis.functions_failed == analysis.functions_total
        assert requests == 2 * analysis.functions_total
        assert LLMCall.objects.filter(purpose="correction").count() == analysis.functions_total


def test_tidy_replies__nothing_marked(tmp_path):
    generous_anthropic_limits()
    with FakeAnthropic(config=FakeConfig(seed=1), responder=review_responder).running() as fake:
        analysis = analyse(write_project(tmp_path, functions=FUNCTIONS), fake)

    assert Card.objects.filter(analysis=analysis).exists()
    assert not Card.objects.filter(analysis=analysis).exclude(adjustment="").exists()
    assert LLMCall.objects.aggregate(adjusted=Sum("findings_clamped") + Sum("findings_merged")) == {
        "adjusted": 0
    }
