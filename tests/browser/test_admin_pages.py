"""Acceptance: an operator opens the admin after a real AI analysis (against the fake API, with
overloaded replies) and a few breaker actions, at 1400x900, and sees what each page is for without
scrolling: states, severities, costs, times to the second. Screenshots are saved (to
``$EIDOLON_SCREENSHOTS`` when set: ``docs/screenshots`` refreshes the README's ``admin-*.png``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Locator, Page, expect

from analyses.models import Analysis, Card, LLMCall
from analyses.providers.anthropic import model_target
from analyses.review_responder import review_responder
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import CircuitBreaker, ControlChange, HealthComponentState, ModelPrice
from tests.analyses.page_support import PASSWORD
from tests.anthropic_support import generous_anthropic_limits, write_project
from tests.browser.conftest import log_in, server_environment
from tests.processes import run_manage, start_daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

VIEWPORT = {"width": 1400, "height": 900}
TIME_WITH_SECONDS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
OTHER_LISTS = (
    "/admin/analyses/codeunit/",
    "/admin/analyses/resultcache/",
    "/admin/reliability/breakertransition/",
    "/admin/reliability/controlchange/",
    "/admin/reliability/healthtransition/",
    "/admin/reliability/healthsample/",
    "/admin/reliability/workerheartbeat/",
)
PRIMARY = model_target(settings.EIDOLON_AI_MODELS[0])  # the primary model's breaker
MONEY = re.compile(r"^\$\d+\.\d{4}$")
SPENT = re.compile(r"^\$(?!0\.0000$)\d+\.\d{4}$")  # more than nothing


def operator() -> User:
    """Staff who may view and operate everything of reliability and analyses."""
    user = User.objects.create_user("operator", password=PASSWORD, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["reliability", "analyses"])
    )
    return user


# The parts of ``element`` hidden by a scrolling or clipping box around it (the changelist's
# results scroll sideways when too wide): none when it is wholly shown.
CLIPPED_BY = """element => {
    const box = element.getBoundingClientRect();
    const clipped = [];
    for (let parent = element.parentElement; parent; parent = parent.parentElement) {
        const style = getComputedStyle(parent);
        if (style.overflowX === "visible" && style.overflowY === "visible") continue;
        const outer = parent.getBoundingClientRect();
        if (box.left < outer.left - 1 || box.right > outer.right + 1
            || box.top < outer.top - 1 || box.bottom > outer.bottom + 1) {
            clipped.push(parent.id || parent.className || parent.tagName);
        }
    }
    return clipped;
}"""


def assert_visible_without_scrolling(locator: Locator) -> None:
    """Wholly inside the 1400x900 window as first shown, and not cut off by a scrolling box."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= VIEWPORT["width"], box
    assert box["y"] + box["height"] <= VIEWPORT["height"], box
    assert locator.evaluate(CLIPPED_BY) == [], box


def column_cell(page: Page, header: str, row: int = 0) -> Locator:
    """The ``row``-th cell of the changelist column titled ``header``."""
    headers = page.locator("#result_list thead th").all_inner_texts()
    titles = [text.strip().split("\n")[-1].strip().lower() for text in headers]
    assert header in titles, titles
    index = titles.index(header)
    return page.locator("#result_list tbody tr").nth(row).locator("td, th").nth(index)


def shown_field(page: Page, name: str) -> Locator:
    """A change page's read-only field ``name`` (alone on its line or beside others)."""
    beside_others = page.locator(f".fieldBox.field-{name} .readonly")
    alone = page.locator(f".form-row.field-{name}:not(:has(.fieldBox)) .readonly")
    return beside_others.or_(alone)


def screenshot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("EIDOLON_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def after_an_analysis():
    """A finished AI analysis against the fake (one reply in five overloaded), a health check
    recorded, and a live daphne; yields the base URL and the analysis."""
    # A fault rate this high opens the breaker now and then (failures are retried, not failed):
    # a short recovery keeps the analysis to seconds.
    generous_anthropic_limits(recovery_timeout=1, legacy=False)
    # Transactional tests before this one flush the table; a fallback may review too.
    for model, prices in (
        ("claude-sonnet", ("3", "15", "3.75", "0.30")),
        ("claude-haiku-4-5", ("1", "5", "1.25", "0.10")),
    ):
        ModelPrice.objects.update_or_create(
            model=model,
            defaults=dict(
                zip(
                    (
                        "input_per_mtok",
                        "output_per_mtok",
                        "cache_write_per_mtok",
                        "cache_read_per_mtok",
                    ),
                    prices,
                    strict=True,
                )
            ),
        )
    fake_api = FakeAnthropic(
        config=FakeConfig(fault_rates={"overloaded": 0.2}, seed=11), responder=review_responder
    )
    with (
        tempfile.TemporaryDirectory(prefix="eidolon-sources-") as sources,
        fake_api.running() as fake,
    ):
        project = Path(sources) / "shop"
        project.mkdir()
        write_project(project, functions=12)
        env = server_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_SOURCE_ROOTS=sources,
        )
        analysed = run_manage(
            "analyze", str(project), "--provider", "anthropic", "--json", env=env, timeout=120
        )
        assert analysed.returncode == 0, analysed.stderr[-2000:]
        monitor = run_manage("health_monitor", "--once", env=env)
        assert monitor.returncode == 0, monitor.stderr[-2000:]
        web, base = start_daphne(env)
        try:
            yield base, Analysis.objects.get()
        finally:
            web.stop()


def operate_breaker(page: Page, base: str, breaker: CircuitBreaker) -> None:
    """Force open (confirmed, with a reason), enable, and tune a threshold, as an operator."""
    page.goto(f"{base}/admin/reliability/circuitbreaker/{breaker.pk}/change/")
    page.click("button[data-action=force_open]")
    expect(page.locator("h1")).to_contain_text("Force open")
    page.fill("#id_reason", "provider incident: stop calling for now")
    with page.expect_navigation():
        page.click("input[type=submit].drastic")
    expect(page.locator(".messagelist")).to_contain_text("forced open")
    page.click("button[data-action=enable]")
    expect(page.locator(".messagelist")).to_contain_text("enabled")
    page.fill("#id_failure_threshold", "9")
    with page.expect_navigation():
        page.click("input[name=_save]")


class TestAdminPagesAtAGlance:
    def test_each_page_shows_what_it_is_for_without_scrolling(
        self, browser, after_an_analysis, tmp_path
    ):
        base, analysis = after_an_analysis
        assert LLMCall.objects.exclude(status="ok").exists()  # the faults happened
        operator()
        shots = screenshot_dir(tmp_path)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(15_000)
        log_in(page, base, "operator", PASSWORD)
        breaker = CircuitBreaker.objects.get(name=PRIMARY)
        operate_breaker(page, base, breaker)
        assert ControlChange.objects.filter(name=PRIMARY, action="edit").exists()

        def visit(path: str, shot: str) -> None:
            page.goto(f"{base}{path}")
            page.screenshot(path=str(shots / f"admin-{shot}.png"))

        visit("/admin/", "index")
        assert_visible_without_scrolling(page.locator("#content h1"))
        strip = page.locator(".status-strip")
        for part in (".strip-health .state", ".strip-breakers .state", ".strip-budget .figure"):
            assert_visible_without_scrolling(strip.locator(part).first)
        expect(strip.locator(".strip-breakers")).to_contain_text(f"{PRIMARY} closed")
        expect(strip.locator(".strip-budget").first).to_contain_text("requests")
        expect(strip.locator(".strip-analyses")).to_contain_text("0 running")
        spend = strip.locator(".strip-spend .figure")
        expect(spend).to_have_text(SPENT)
        assert_visible_without_scrolling(spend)

        visit("/admin/analyses/analysis/", "analyses")
        assert_visible_without_scrolling(column_cell(page, "status").locator(".badge"))
        expect(column_cell(page, "cost")).to_have_text(SPENT)
        assert_visible_without_scrolling(column_cell(page, "cost"))
        expect(column_cell(page, "created")).to_contain_text(TIME_WITH_SECONDS)
        assert_visible_without_scrolling(column_cell(page, "created"))

        visit(f"/admin/analyses/analysis/{analysis.pk}/change/", "analysis")
        assert_visible_without_scrolling(shown_field(page, "status_badge").locator(".badge"))
        assert_visible_without_scrolling(shown_field(page, "cards_link").locator("a"))
        expect(shown_field(page, "cost")).to_have_text(f"${analysis.cost_usd:.4f}")
        assert analysis.cost_usd == sum(call.cost_usd for call in analysis.llm_calls.all())
        assert page.locator("input[name=_save], .deletelink").count() == 0

        visit(f"/admin/analyses/card/?analysis__id__exact={analysis.pk}", "cards")
        badges = page.locator("#result_list .field-severity_badge .badge").all_inner_texts()
        assert badges and badges == sorted(badges, key=["high", "medium", "low"].index)
        assert_visible_without_scrolling(column_cell(page, "severity").locator(".badge"))
        assert_visible_without_scrolling(column_cell(page, "analysis"))
        assert_visible_without_scrolling(column_cell(page, "where"))
        expect(page.locator("#result_list .card-title code").first).to_be_visible()  # Markdown

        card = Card.objects.filter(analysis=analysis).exclude(excerpt="").first()
        visit(f"/admin/analyses/card/{card.pk}/change/", "card")
        assert_visible_without_scrolling(shown_field(page, "severity_badge").locator(".badge"))
        cited = shown_field(page, "excerpt_html").locator(".code .hll").first
        assert_visible_without_scrolling(cited)

        visit("/admin/analyses/llmcall/", "llm-calls")
        expect(column_cell(page, "cost")).to_have_text(MONEY)
        assert_visible_without_scrolling(column_cell(page, "cost"))
        assert_visible_without_scrolling(column_cell(page, "analysis"))
        expect(column_cell(page, "when")).to_contain_text(TIME_WITH_SECONDS)
        assert_visible_without_scrolling(column_cell(page, "when"))

        visit("/admin/reliability/circuitbreaker/", "breakers")
        names = [n.strip() for n in page.locator("#result_list tbody tr th").all_inner_texts()]
        operated = names.index(breaker.name)  # one row per model, and git's
        assert_visible_without_scrolling(column_cell(page, "state", operated).locator(".badge"))
        expect(column_cell(page, "last transition", operated)).to_contain_text(TIME_WITH_SECONDS)
        assert_visible_without_scrolling(column_cell(page, "last transition", operated))

        visit(f"/admin/reliability/circuitbreaker/{breaker.pk}/change/", "breaker")
        assert_visible_without_scrolling(shown_field(page, "state_badge").locator(".badge"))
        assert_visible_without_scrolling(page.locator("button[data-action=force_open]"))
        history = page.locator(".control-history tbody tr")
        assert_visible_without_scrolling(history.first)
        expect(history.first).to_contain_text("failure_threshold: 50 → 9")
        expect(history.first).to_contain_text(TIME_WITH_SECONDS)
        expect(page.locator(".control-history")).to_contain_text("provider incident")
        assert page.locator(".deletelink, input[name=_continue]").count() == 0

        visit("/admin/reliability/ratelimitbudget/", "budgets")
        assert_visible_without_scrolling(column_cell(page, "state").locator(".badge"))
        expect(column_cell(page, "spend today")).to_have_text(SPENT)
        assert_visible_without_scrolling(column_cell(page, "spend today"))

        visit("/admin/reliability/healthcomponentstate/", "health")
        assert_visible_without_scrolling(column_cell(page, "status").locator("strong"))
        expect(column_cell(page, "last 24 h")).to_contain_text("up ")
        assert_visible_without_scrolling(column_cell(page, "last 24 h, hourly").locator("svg"))

        component = HealthComponentState.objects.get(name="database")
        visit(f"/admin/reliability/healthcomponentstate/{component.pk}/change/", "health-component")
        assert_visible_without_scrolling(shown_field(page, "status_display").locator("strong"))
        expect(shown_field(page, "critical_display")).to_have_text(
            re.compile(r"^(critical|non-critical)$")
        )
        assert_visible_without_scrolling(shown_field(page, "timeline_24h_wide").locator("svg"))
        expect(page.locator(".field-uptime_summary")).to_contain_text("unknown")
        context.close()
