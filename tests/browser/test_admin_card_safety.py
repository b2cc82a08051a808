"""Acceptance: card text a model wrote (or an attacker steered it to write) holding ``<script>``,
``<img onerror>`` and Markdown links is shown in the admin as text or safe Markdown, never run.
The admin is exempt from the site's Content-Security-Policy, so escaping is the whole defence."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from analyses.models import Card
from tests.analyses.page_support import PASSWORD, make_analysis, make_card
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TITLE = "<script>window.__pwned = 'title'</script> in `run()`"
EXPLANATION = (
    "<img src=x onerror=\"window.__pwned = 'explanation'\"> see **the docs** at "
    "[Python](https://docs.python.org/3/) but not [this](javascript:window.__pwned='link')"
)
FIX = "<svg onload=\"window.__pwned = 'fix'\"></svg> `<script>alert(1)</script>`"


def hostile_card() -> Card:
    analysis = make_analysis(None, provider="anthropic")
    return make_card(
        analysis,
        kind="security",
        title=TITLE,
        explanation=EXPLANATION,
        fix=FIX,
        path="x.py",
        line_start=2,
        line_end=2,
        excerpt="def run():\n    return '<script>window.__pwned = \"excerpt\"</script>'\n",
        excerpt_start=1,
    )


class TestHostileCardText:
    def test_shown_as_text_or_safe_markdown__never_executed(self, web, page):
        User.objects.create_superuser("root", password=PASSWORD)
        card = hostile_card()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        log_in(page, web, "root", PASSWORD)

        for url in (f"/admin/analyses/card/{card.pk}/change/", "/admin/analyses/card/"):
            page.goto(f"{web}{url}")
            page.wait_for_load_state("load")
            expect(page.locator(".card-title").first).to_contain_text("<script>window.__pwned")
            assert page.evaluate("() => typeof window.__pwned") == "undefined", url
            assert page.locator("img[onerror], [onload], [onerror]").count() == 0, url
            planted = "() => [...document.scripts].filter(s => s.text.includes('__pwned')).length"
            assert page.evaluate(planted) == 0, url
            expect(page.locator(".card-title code").first).to_have_text("run()")

        explanation = page.locator(".field-explanation_html .card-markdown")
        page.goto(f"{web}/admin/analyses/card/{card.pk}/change/")
        expect(explanation).to_contain_text('<img src=x onerror="window.__pwned')
        expect(explanation.locator("strong")).to_have_text("the docs")
        link = explanation.locator("a")
        expect(link).to_have_count(1)  # the javascript: one stays text
        expect(link).to_have_attribute("href", "https://docs.python.org/3/")
        expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
        expect(explanation).to_contain_text("[this](javascript:window.__pwned='link')")
        expect(page.locator(".field-fix_html code")).to_have_text("<script>alert(1)</script>")
        link.click(modifiers=["Control"])  # opens a tab elsewhere; nothing runs here
        assert page.evaluate("() => typeof window.__pwned") == "undefined"
        assert dialogs == []
