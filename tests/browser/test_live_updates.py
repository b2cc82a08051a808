"""analysis.js in a real browser, against a scripted WebSocket server (Playwright's
route_web_socket plays the server; the page and its fragments come from a live daphne).

The protocol is the consumer's: a snapshot, then events by seq, keep-alives, 1000 after
analysis.finished, 44xx refusals. These tests drive the awkward cases on purpose: duplicates,
a gap, drops, refusals, hostile text."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from analyses.models import AnalysisStatus, Card, CardStatus
from analyses.progress import card_payload as _card_payload
from tests.analyses.page_support import (
    IMAGE,
    PASSWORD,
    SCRIPT,
    add_event,
    make_analysis,
    make_card,
    make_user,
)
from tests.browser.conftest import log_in

pytestmark = pytest.mark.django_db(transaction=True)

SOCKET_URL = re.compile(r"/ws/analyses/\d+/")


class ScriptedServer:
    """Answers the page's WebSocket in the test's place and records every connection."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.connections: list[WebSocketRoute] = []
        page.route_web_socket(SOCKET_URL, lambda route: self.connections.append(route))

    def connection(self, number: int, *, timeout: float = 15.0) -> WebSocketRoute:
        """The ``number``-th connection (1-based), once the page has opened it."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < number:
            assert time.monotonic() < deadline, f"connection {number} never came"
            self.page.wait_for_timeout(50)
        return self.connections[number - 1]

    def stays_at(self, count: int, *, seconds: float) -> bool:
        self.page.wait_for_timeout(seconds * 1000)
        return len(self.connections) == count


def after_of(route: WebSocketRoute) -> int:
    return int(parse_qs(urlsplit(route.url).query)["after"][0])


def send(route: WebSocketRoute, seq: int | None, kind: str, data: dict | None = None) -> None:
    message = {"type": kind, "data": data or {}, "at": "2026-01-05T14:02:00+00:00"}
    if seq is not None:
        message["seq"] = seq
    route.send(json.dumps(message))


def snapshot(route: WebSocketRoute, *, last_seq: int, status: str = "running", **fields) -> None:
    data = {
        "status": status,
        "status_reason": "",
        "finished": status not in ("queued", "running"),
        "last_seq": last_seq,
        "total": 40,
        "done": 10,
        "analyzed": 10,
        "cached": 0,
        "failed": 0,
        "cards": 1,
        "requests": 10,
        "percentage": 25.0,
        "waiting_reason": "",
        **fields,
    }
    send(route, None, "analysis.snapshot", data)


def progress(done: int, *, waiting: str = "") -> dict:
    return {
        "total": 40,
        "done": done,
        "analyzed": done,
        "cached": 0,
        "failed": 0,
        "cards": 3,
        "requests": done,
        "percentage": 100.0 * done / 40,
        "current_unit": f"shop/cart.py::f{done}",
        "waiting_reason": waiting,
    }


def card_created(card: Card) -> dict:
    """A card.created event's data, as the orchestrator writes it."""
    return _card_payload(card)


def stats(page: Page) -> dict[str, str]:
    return page.eval_on_selector(
        "#analysis",
        "root => ({last: root.dataset.lastSeq, applied: root.dataset.applied, "
        "duplicates: root.dataset.duplicates, gaps: root.dataset.gaps, "
        "connections: root.dataset.connections})",
    )


def logged_seqs(page: Page) -> list[int]:
    return [
        int(s)
        for s in page.eval_on_selector_all(".activity-log li", "l => l.map(i => i.dataset.seq)")
    ]


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def running(alice):
    """A running analysis the page opens at seq 2, with one card already shown."""
    analysis = make_analysis(alice, functions_analyzed=10, functions_cached=0, functions_failed=0)
    add_event(
        analysis, "analysis.started", {"functions_total": 40, "files": 2, "provider": "static"}
    )
    add_event(analysis, "unit.finished", {"qualname": "f1", "path": "shop/cart.py", "cards": 1})
    make_card(analysis, path="shop/cart.py", line_start=12, title="Shown when the page loads")
    return analysis


def open_page(page: Page, web: str, analysis) -> ScriptedServer:
    server = ScriptedServer(page)
    log_in(page, web, "alice", PASSWORD)
    page.goto(f"{web}/analyses/{analysis.pk}/")
    return server


class TestExactlyOnce:
    def test_duplicates_gaps_and_drops__every_event_is_applied_once_in_order(
        self, page, web, running
    ):
        second = make_card(running, path="shop/cart.py", line_start=4, severity="medium")
        hostile = make_card(
            running, path="shop/a_first.py", line_start=2, title=SCRIPT, explanation=IMAGE
        )
        server = open_page(page, web, running)

        first = server.connection(1)
        assert after_of(first) == 2
        snapshot(first, last_seq=2)
        expect(page.locator("[data-role=connection]")).to_have_text("live")
        send(first, 3, "analysis.progress", progress(20, waiting="AI circuit open until 14:02"))
        send(first, 4, "card.created", card_created(second))
        send(first, 4, "card.created", card_created(second))  # a duplicate
        send(first, 3, "analysis.progress", progress(20))  # an old one
        failed = {"qualname": "f9", "path": "shop/tax.py", "reason": f"model said {IMAGE}"}
        send(first, 5, "unit.failed", failed)
        send(first, None, "keepalive")
        expect(page.locator("#analysis")).to_have_attribute("data-last-seq", "5")
        first.close(code=1011, reason="the server went away")  # a drop: reconnect with backoff

        reconnected = server.connection(2)
        assert after_of(reconnected) == 5
        snapshot(reconnected, last_seq=6, **progress(30))
        send(reconnected, 5, "unit.failed", failed)  # replayed: already applied
        send(reconnected, 6, "card.created", card_created(hostile))
        finished = {"status": "completed", "reason": "", "health_score": 88}
        send(reconnected, 8, "analysis.finished", finished)  # 7 is missing: a gap

        healed = server.connection(3)
        assert after_of(healed) == 6
        # The snapshot is newer than the replayed progress event 7: the counters keep it.
        snapshot(healed, last_seq=8, status="completed", **progress(40))
        send(healed, 7, "analysis.progress", progress(39))
        send(healed, 8, "analysis.finished", finished)
        healed.close(code=1000)

        expect(page.locator("[data-role=connection]")).to_have_text("finished")
        assert server.stays_at(3, seconds=1.5)  # no reconnection after a normal close
        assert stats(page) == {
            "last": "8",
            "applied": "6",  # 3, 4, 5, 6, 7, 8
            "duplicates": "3",
            "gaps": "1",
            "connections": "3",
        }
        assert logged_seqs(page) == [8, 6, 5, 4, 2, 1]  # newest first, progress not logged
        for card in (second, hostile):
            expect(page.locator(f"#card-{card.pk}")).to_have_count(1)
        expect(page.locator("article.finding")).to_have_count(3)
        expect(page.locator("[data-role=status]")).to_have_text("completed")
        expect(page.locator("[data-field=percentage]")).to_have_text("100.0")
        expect(page.locator("[data-field=done]")).to_have_text("40")
        expect(page.locator("[data-field=waiting_reason]")).to_be_hidden()
        expect(page.locator("[data-role=cancel]")).to_be_hidden()
        expect(page.locator("[data-role=resume]")).to_be_hidden()

    def test_waiting_reason_and_counters__follow_the_newest_state(self, page, web, running):
        server = open_page(page, web, running)
        route = server.connection(1)
        snapshot(route, last_seq=2)
        send(route, 3, "analysis.progress", progress(24, waiting="AI circuit open until 14:02"))
        expect(page.locator("[data-field=waiting_reason]")).to_have_text(
            "AI circuit open until 14:02"
        )
        expect(page.locator("[data-field=done]")).to_have_text("24")
        expect(page.locator("[data-field=percentage]")).to_have_text("60.0")
        expect(page.locator("[data-role=progress]")).to_have_attribute("value", "60")
        expect(page.locator("[data-field=current_unit]")).to_have_text(
            "reviewing shop/cart.py::f24"
        )


class TestHostileText:
    def test_event_and_card_text__shown_as_text_never_run(self, page, web, running):
        hostile = make_card(running, title=SCRIPT, explanation=IMAGE, fix=SCRIPT, line_start=30)
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        server = open_page(page, web, running)
        route = server.connection(1)
        snapshot(route, last_seq=2)
        send(route, 3, "card.created", card_created(hostile))
        send(route, 4, "unit.failed", {"qualname": SCRIPT, "path": IMAGE, "reason": SCRIPT})
        card = page.locator(f"#card-{hostile.pk}")
        expect(card.locator(".finding-title")).to_have_text(SCRIPT)
        expect(card.locator(".explanation")).to_have_text(IMAGE)
        expect(page.locator(".activity-log li").first).to_contain_text(f"Failed: {SCRIPT}")
        assert (
            page.locator("article.finding :is(script, img), .activity-log :is(script, img)").count()
            == 0
        )
        assert dialogs == []


class TestRefusals:
    @pytest.mark.parametrize(
        ("code", "says"),
        [
            (4401, "signed out: reload the page to log in again"),
            (4403, "you may not watch this analysis"),
            (4404, "this analysis no longer exists"),
        ],
    )
    def test_refused__says_why_and_does_not_retry(self, page, web, running, code, says):
        server = open_page(page, web, running)
        server.connection(1).close(code=code, reason="refused")
        expect(page.locator("[data-role=connection]")).to_have_text(says)
        assert server.stays_at(1, seconds=1.5)

    def test_finished_page__opens_no_socket(self, page, web, alice):
        finished = make_analysis(alice, status=AnalysisStatus.COMPLETED)
        server = open_page(page, web, finished)
        expect(page.locator("[data-role=connection]")).to_have_text("finished")
        assert server.stays_at(0, seconds=1.0)


class TestCardsOnThePage:
    def test_status_buttons__save_without_leaving_the_page(self, page, web, running):
        card = Card.objects.get(analysis=running)
        open_page(page, web, running)
        url = page.url
        page.click(f"#card-{card.pk} button[value=fixed]")
        expect(page.locator(f"#card-{card.pk} button[value=fixed]")).to_have_attribute(
            "aria-pressed", "true"
        )
        assert page.url == url
        card.refresh_from_db()
        assert card.status == CardStatus.FIXED

    def test_filters__hide_what_is_unchecked(self, page, web, running):
        low = make_card(running, severity="low", kind="docs", path="shop/z.py")
        open_page(page, web, running)
        expect(page.locator("[data-count-severity=low]")).to_have_text("1")
        page.locator(".filters label", has_text="low").click()
        expect(page.locator(f"#card-{low.pk}")).to_be_hidden()
        expect(page.locator('section.file-group[data-path="shop/z.py"]')).to_be_hidden()
        page.locator(".filters label", has_text="low").click()
        expect(page.locator(f"#card-{low.pk}")).to_be_visible()
