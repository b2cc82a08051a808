"""The pages run under their Content-Security-Policy without a violation, and the listener that
every browser test carries (tests/browser/conftest.py) does report one when it happens."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from tests.analyses.page_support import PASSWORD, make_analysis, make_card, make_user
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

INLINE_SCRIPT = """() => {
    const script = document.createElement("script");
    script.textContent = "window.__inline = true";
    document.body.appendChild(script);
}"""


class TestContentSecurityPolicy:
    def test_an_inline_script__blocked_and_reported(self, web, page):
        page.goto(f"{web}/")
        page.evaluate(INLINE_SCRIPT)
        page.wait_for_timeout(300)
        assert page.evaluate("() => window.__inline === undefined")
        assert any("script-src" in text for text in page.csp_violations), page.csp_violations
        page.csp_violations.clear()  # seen: the fixture's check is for the pages' own code

    def test_every_page_works_without_a_violation(self, web, page):
        operator = make_user("operator", staff=True)
        operator.user_permissions.add(Permission.objects.get(codename="operate_controls"))
        analysis = make_analysis(operator)
        card = make_card(analysis)
        log_in(page, web, "operator", PASSWORD)
        for url in (
            "/",
            "/analyses/",
            "/analyses/new/",
            f"/analyses/{analysis.pk}/",
            "/accounts/settings/",
            "/operations/",
        ):
            page.goto(f"{web}{url}")
            page.wait_for_load_state("load")
        expect(page.locator("h1").first).to_be_visible()
        page.goto(f"{web}/analyses/{analysis.pk}/")
        expect(page.locator(f"#card-{card.pk}")).to_be_visible()
        # The page's own script ran: it opened the live socket and says how it stands.
        expect(page.locator("[data-role=connection]")).not_to_have_text("", timeout=10_000)
        assert page.csp_violations == []
