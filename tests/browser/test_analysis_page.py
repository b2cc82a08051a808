"""Acceptance: a user logs in, submits an analysis and watches it live, end to end.

Debian's chromium (Playwright) against a live daphne and a real ``manage.py worker`` sharing the
test database; Claude is the fake Anthropic API with latency, so the run takes a few seconds.
Mid-run the page's socket is dropped and refused for a moment; it reconnects by itself and every
event is shown exactly once. One function's review is written to attack the page; it shows as
text. Screenshots of the finished analysis and of the operator dashboard are saved (to
``$EIDOLON_SCREENSHOTS`` when set: ``docs/screenshots`` refreshes the README's).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, WebSocketRoute, expect

from analyses.models import Analysis, AnalysisEvent, AnalysisStatus, Card
from analyses.review_responder import HEADER_PATTERN, review_responder
from reliability.fake_anthropic import FakeAnthropic, FakeConfig, prompt_text
from tests.analyses.page_support import IMAGE, PASSWORD, SCRIPT, make_user
from tests.anthropic_support import generous_anthropic_limits, write_project
from tests.browser.conftest import (
    VIEWPORT,
    log_in,
    server_environment,
    watch_content_security_policy,
)
from tests.processes import run_manage, start_daphne, start_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FUNCTIONS = 40
ATTACKED_FUNCTION = "function_3"
SOCKET_URL = re.compile(r"/ws/analyses/\d+/")


def _websocket_routes() -> list:
    from eidolon_site.routing import websocket_urlpatterns

    return websocket_urlpatterns


if not _websocket_routes():
    pytest.skip(
        "waiting for the WebSocket consumer (/ws/analyses/<id>/), built on its own branch",
        allow_module_level=True,
    )


def hostile_reviews(body):
    """The review responder, except that one function's review tries to attack the page."""
    header = HEADER_PATTERN.search(prompt_text(body))
    if header is None or header["name"].rpartition(".")[2] != ATTACKED_FUNCTION:
        return review_responder(body)
    line = int(header["start"])
    finding = {
        "kind": "security",
        "severity": "high",
        "title": SCRIPT,
        "explanation": f"{IMAGE} and {SCRIPT}",
        "line_start": line,
        "line_end": line,
        "fix": IMAGE,
        "confidence": 0.9,
    }
    return {"findings": [finding]}


class DroppableSockets:
    """Passes the page's sockets through to the server, until told to drop them and refuse new
    ones for a while (as a flaky network would)."""

    def __init__(self, page: Page) -> None:
        self.connections: list[WebSocketRoute] = []
        self.servers: list[WebSocketRoute] = []
        self.refusing = False
        page.route_web_socket(SOCKET_URL, self._route)

    def _route(self, route: WebSocketRoute) -> None:
        self.connections.append(route)
        if self.refusing:
            route.close(code=1011, reason="network down")
            return
        self.servers.append(route.connect_to_server())

    def drop(self) -> None:
        self.refusing = True
        self.servers[-1].close()
        self.connections[-1].close(code=1011, reason="network down")

    def restore(self) -> None:
        self.refusing = False


def root_number(page: Page, name: str) -> int:
    return int(page.eval_on_selector("#analysis", f"root => root.dataset.{name} || '0'"))


def screenshot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("EIDOLON_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def services():
    """The fake API, a live daphne and a worker, configured alike; yields the base URL, the
    directory to analyse and the servers' environment."""
    generous_anthropic_limits(legacy=False)
    fake_api = FakeAnthropic(config=FakeConfig(latency_s=0.25), responder=hostile_reviews)
    with (
        tempfile.TemporaryDirectory(prefix="eidolon-sources-") as sources,
        fake_api.running() as fake,
    ):
        project = Path(sources) / "shop"
        project.mkdir()
        write_project(project, functions=FUNCTIONS)
        env = server_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_SOURCE_ROOTS=sources,
            EIDOLON_ANALYSIS_CONCURRENCY="2",
            EIDOLON_WORKER_HEARTBEAT_SECONDS="1",
        )
        web, base = start_daphne(env)
        worker = start_worker(env, "browser-worker")
        try:
            yield base, project, env
        finally:
            worker.stop()
            web.stop()


def submit(page: Page, base: str, source: Path) -> int:
    page.goto(f"{base}/analyses/new/")
    page.fill("#id_source", str(source))
    page.check("input[name=provider][value=anthropic]")
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    analysis_id = int(re.search(r"/analyses/(\d+)/$", page.url).group(1))
    expect(page.locator(".message-success")).to_have_text(f"Analysis #{analysis_id} is queued.")
    return analysis_id


def assert_every_event_shown_once(page: Page, analysis: Analysis) -> None:
    logged = [
        int(seq)
        for seq in page.eval_on_selector_all(".activity-log li", "l => l.map(i => i.dataset.seq)")
    ]
    stored = list(
        AnalysisEvent.objects.filter(analysis=analysis)
        .exclude(type="analysis.progress")
        .order_by("-seq")
        .values_list("seq", flat=True)
    )
    assert logged == stored  # newest first, none missing, none twice
    assert root_number(page, "lastSeq") == analysis.event_seq
    assert root_number(page, "gaps") == 0
    cards = list(Card.objects.filter(analysis=analysis).values_list("pk", flat=True))
    assert len(cards) == analysis.cards_count > 0
    for card in cards:
        expect(page.locator(f"#card-{card}")).to_have_count(1)
    expect(page.locator("article.finding")).to_have_count(len(cards))


class TestWatchingAnAnalysis:
    def test_submit_watch_drop_reconnect_and_finish__every_event_once(
        self, browser, services, tmp_path
    ):
        base, source, env = services
        make_user("alice")
        operator = make_user("operator", staff=True)  # who may use the dashboard's buttons too
        operator.user_permissions.add(Permission.objects.get(codename="operate_controls"))
        shots = screenshot_dir(tmp_path)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(30_000)
        csp_violations = watch_content_security_policy(page)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        sockets = DroppableSockets(page)

        log_in(page, base, "alice", PASSWORD)
        analysis_id = submit(page, base, source)
        expect(page.locator("[data-role=connection]")).to_have_text("live")
        page.wait_for_function(
            "() => Number(document.getElementById('analysis').dataset.applied || 0) >= 10"
        )
        sockets.drop()
        expect(page.locator("[data-role=connection]")).to_contain_text("reconnecting")
        page.wait_for_timeout(1500)  # refused meanwhile
        sockets.restore()
        expect(page.locator("[data-role=connection]")).to_have_text("live", timeout=20_000)

        expect(page.locator("[data-role=status]")).to_have_text("completed", timeout=60_000)
        expect(page.locator("[data-field=percentage]")).to_have_text("100.0")
        expect(page.locator("[data-role=progress]")).to_have_attribute("value", "100")
        expect(page.locator("[data-role=connection]")).to_have_text("finished")
        expect(page.locator("[data-role=score]")).to_be_visible()

        analysis = Analysis.objects.get(pk=analysis_id)
        assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert len(sockets.connections) >= 3  # the first, at least one refused, the last
        assert_every_event_shown_once(page, analysis)

        attacked = Card.objects.get(analysis=analysis, title=SCRIPT)
        card = page.locator(f"#card-{attacked.pk}")
        expect(card.locator(".finding-title")).to_have_text(SCRIPT)
        expect(card.locator(".explanation")).to_have_text(f"{IMAGE} and {SCRIPT}")
        assert page.locator("article.finding :is(script, img)").count() == 0
        assert dialogs == []

        page.reload()  # as anyone opening it later sees it
        page.screenshot(path=str(shots / "analysis.png"))
        context.close()

        monitor = run_manage("health_monitor", "--once", env=env)
        assert monitor.returncode == 0, monitor.stderr
        staff = browser.new_context(viewport=VIEWPORT)
        dashboard = staff.new_page()
        dashboard_violations = watch_content_security_policy(dashboard)
        log_in(dashboard, base, "operator", PASSWORD)
        dashboard.goto(f"{base}/operations/")
        # One breaker per model ("anthropic:<model>"), and which model reviews now.
        expect(dashboard.locator('[data-breaker^="anthropic:"]').first).to_be_visible()
        expect(dashboard.locator("[data-role=serving]")).to_be_visible()
        expect(dashboard.locator("table.health")).to_contain_text("database")
        dashboard.screenshot(path=str(shots / "operations.png"), full_page=True)
        staff.close()
        # Every page worked under its Content-Security-Policy.
        assert csp_violations == dashboard_violations == []
