"""Suppressions: ``# eidolon: ignore[...]`` comments, and dismissed cards that stay dismissed."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from analyses.models import Analysis, AnalysisEvent, AnalysisStatus, Card, CardStatus, CodeUnit
from analyses.orchestrator import run_analysis
from analyses.parsing import parse_module
from analyses.review_responder import HEADER_PATTERN, review_responder
from analyses.services import analysis_create, card_set_status
from analyses.suppressions import EVERY_KIND, SKIP_REASON, suppressed_kinds
from reliability.fake_anthropic import FakeAnthropic, FakeConfig, prompt_text
from tests.anthropic_support import as_anthropic, generous_anthropic_limits, provider_for

pytestmark = pytest.mark.django_db(transaction=True)

# Each function has no docstring (a "docs" card) and a mutable default (a "bug" card).
CODE = '''"""Suppressed and not."""


def kept(items=[]):
    return items


def decorate(function):
    """A decorator."""
    return function


@decorate  # eidolon: ignore[docs]
def without_docs_cards(items=[]):
    return items


def without_either(items=[]):  # eidolon: ignore[docs, BUG]
    return items


def not_reviewed(items=[]):  # eidolon: ignore
    return items


def comment_in_the_body(items=[]):
    # eidolon: ignore
    return items
'''


async def analyse(root: Path, *, owner=None, provider=None) -> Analysis:
    analysis = await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True, created_by=owner
    )
    if provider is not None:
        await as_anthropic(analysis)
    assert await run_analysis(analysis.pk, provider=provider) == AnalysisStatus.COMPLETED
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


async def card_kinds(analysis: Analysis) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    rows = Card.objects.filter(analysis=analysis).values_list("unit__qualname", "kind")
    for qualname, kind in await sync_to_async(list)(rows):
        kinds.setdefault(qualname, []).append(kind)
    return {qualname: sorted(found) for qualname, found in kinds.items()}


class TestInlineSuppressions:
    async def test_static_rules__bare_and_kind_forms_produce_no_card(self, tmp_path):
        (tmp_path / "code.py").write_text(CODE)
        analysis = await analyse(tmp_path)

        assert await card_kinds(analysis) == {
            "kept": ["bug", "docs"],
            "without_docs_cards": ["bug"],
            "comment_in_the_body": ["bug", "docs"],  # only the def and decorator lines count
        }
        skipped = await sync_to_async(CodeUnit.objects.get)(
            analysis=analysis, qualname="not_reviewed"
        )
        assert (skipped.status, skipped.reviewable, skipped.failure_reason) == (
            "skipped",
            False,
            SKIP_REASON,
        )
        assert analysis.functions_total == 5  # the skipped one is not counted
        assert analysis.functions_analyzed == 5
        assert analysis.summary["suppressed"] == {"functions": 1, "cards": 3}
        finished = await sync_to_async(
            AnalysisEvent.objects.filter(
                analysis=analysis, type="unit.finished", payload__qualname="without_either"
            ).get
        )()
        assert finished.payload["suppressed"] == 2

    async def test_ai_review__a_bare_ignore_costs_no_request_and_kinds_are_dropped(self, tmp_path):
        await sync_to_async(generous_anthropic_limits)()
        every_kind = "bug,risk,security,performance,smell,docs,test"
        (tmp_path / "code.py").write_text(
            "def skipped(x):  # eidolon: ignore\n    return x\n\n\n"
            f"def no_cards(x):  # eidolon: ignore[{every_kind}]\n    return x + 1\n\n\n"
            "def reviewed(x):\n    return x + 2\n"
        )
        with FakeAnthropic(config=FakeConfig(seed=4), responder=review_responder).running() as fake:
            analysis = await analyse(tmp_path, provider=provider_for(fake))
            asked = [
                HEADER_PATTERN.search(prompt_text(r.body))["name"]
                for r in fake.requests
                if r.path == "/v1/messages"
            ]
        assert sorted(asked) == ["code.no_cards", "code.reviewed"]
        assert "no_cards" not in await card_kinds(analysis)
        assert analysis.functions_total == analysis.functions_analyzed == 2

    def test_the_comment_forms(self):
        source = (
            "@a  # eidolon: ignore[smell]\n"
            "@b(\n    1,  # eidolon: ignore[risk]\n)\n"
            "def f(x):  # Eidolon: IGNORE[Docs]\n"
            "    y = 1  # eidolon: ignore\n"
            "    return '# eidolon: ignore'\n"
        )
        unit = next(u for u in parse_module(source, path="m.py")[0] if u.is_function)
        assert suppressed_kinds(unit) == {"smell", "risk", "docs"}
        bare = parse_module("def g():  # eidolon: ignore[]\n    pass\n", path="m.py")[0][1]
        assert suppressed_kinds(bare) == {EVERY_KIND}


class TestDismissedCards:
    async def test_a_dismissed_card_stays_dismissed__the_others_come_back_new(self, tmp_path):
        functions = (
            "def first(items=[]):\n    return items\n\n\ndef second(items=[]):\n    return items\n"
        )
        (tmp_path / "code.py").write_text(f'"""Two functions, two cards each."""\n\n\n{functions}')
        owner = await sync_to_async(User.objects.create_user)("dev")
        before = await analyse(tmp_path, owner=owner)
        cards = await sync_to_async(list)(Card.objects.filter(analysis=before).order_by("pk"))
        assert len(cards) == 4
        dismissed = await sync_to_async(card_set_status)(
            card=cards[0], status=CardStatus.DISMISSED, actor="dev"
        )
        await sync_to_async(card_set_status)(
            card=cards[1], status=CardStatus.ACKNOWLEDGED, actor="dev"
        )

        # Code added above the functions moves them: their cards' fingerprints do not change.
        (tmp_path / "code.py").write_text(f'"""Two functions."""\n\nLIMIT = 3\n\n\n{functions}')
        after = await analyse(tmp_path, owner=owner)
        again = await sync_to_async(list)(Card.objects.filter(analysis=after).order_by("pk"))
        assert len(again) == 4
        by_fingerprint = {card.fingerprint: card for card in again}
        kept = by_fingerprint[dismissed.fingerprint]
        assert kept.status == CardStatus.DISMISSED
        assert kept.status_changed_at == dismissed.status_changed_at
        assert kept.line_start == dismissed.line_start + 2
        others = [card for card in again if card.pk != kept.pk]
        assert {card.status for card in others} == {CardStatus.NEW}  # acknowledged: not kept

        # Another owner's analysis of the same source starts afresh.
        stranger = await sync_to_async(User.objects.create_user)("other")
        theirs = await analyse(tmp_path, owner=stranger)
        statuses = await sync_to_async(set)(
            Card.objects.filter(analysis=theirs).values_list("status", flat=True)
        )
        assert statuses == {CardStatus.NEW}
