"""The analyses pages over their real URLs: who sees what, the form, the live page's content,
cancel/resume, card statuses, CSRF and the escaping of model-written text."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.test import Client
from django_tasks_db.models import DBTaskResult

from analyses.models import Analysis, AnalysisStatus, Card, CardStatus
from analyses.pages import LIST_PAGE_SIZE
from reliability.models import RateLimitBudget
from tests.analyses.page_support import (
    IMAGE,
    SCRIPT,
    add_event,
    make_analysis,
    make_card,
    make_user,
)

pytestmark = pytest.mark.django_db

# A <script> element that runs code written into the page (not a file, not JSON data).
INLINE_SCRIPT = re.compile(r'<script(?![^>]*\b(?:src=|type="application/json"))')


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def bob():
    return make_user("bob")


@pytest.fixture
def staff():
    return make_user("operator", staff=True)


@pytest.fixture
def analysis(alice):
    return make_analysis(alice)


@pytest.fixture
def card(analysis):
    return make_card(analysis)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def body(response) -> str:
    return response.content.decode()


def page_urls(analysis, card) -> list[str]:
    base = f"/analyses/{analysis.pk}"
    return [f"{base}/", f"{base}/summary/", f"{base}/cards/{card.pk}/"]


def action_urls(analysis, card) -> list[tuple[str, dict]]:
    base = f"/analyses/{analysis.pk}"
    return [
        (f"{base}/cancel/", {}),
        (f"{base}/resume/", {}),
        (f"{base}/cards/{card.pk}/status/", {"status": "fixed"}),
    ]


class TestWhoSeesWhat:
    def test_anonymous__every_page_and_action_sends_them_to_the_login_page(self, analysis, card):
        client = Client()
        for url in ["/analyses/", "/analyses/new/", *page_urls(analysis, card)]:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"] == f"/accounts/login/?next={url}", url
        for url, data in action_urls(analysis, card):
            response = client.post(url, data)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/accounts/login/"), url
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.RUNNING and not analysis.cancel_requested

    def test_owner__sees_every_page_of_their_analysis(self, alice, analysis, card):
        client = client_for(alice)
        for url in page_urls(analysis, card):
            assert client.get(url).status_code == 200, url
        assert f'href="/analyses/{analysis.pk}/"' in body(client.get("/analyses/"))

    def test_another_user__gets_404_for_every_page_and_action(self, bob, analysis, card):
        client = client_for(bob)
        for url in page_urls(analysis, card):
            assert client.get(url).status_code == 404, url
        for url, data in action_urls(analysis, card):
            assert client.post(url, data).status_code == 404, url
        analysis.refresh_from_db()
        card.refresh_from_db()
        assert not analysis.cancel_requested and card.status == CardStatus.NEW
        assert f"/analyses/{analysis.pk}/" not in body(client.get("/analyses/"))

    def test_another_users_card_under_ones_own_analysis__is_404(self, bob, card):
        own = make_analysis(bob)
        client = client_for(bob)
        assert client.get(f"/analyses/{own.pk}/cards/{card.pk}/").status_code == 404

    def test_staff__see_everyones_analyses_with_their_owner(self, staff, analysis, card):
        client = client_for(staff)
        for url in page_urls(analysis, card):
            assert client.get(url).status_code == 200, url
        listing = body(client.get("/analyses/"))
        assert f'href="/analyses/{analysis.pk}/"' in listing
        assert "<td>alice</td>" in listing


class TestAnalysisList:
    def test_status_filter__shows_only_that_status_with_counts(self, alice):
        running = make_analysis(alice, source="/srv/code/running")
        failed = make_analysis(alice, source="/srv/code/broken", status=AnalysisStatus.FAILED)
        page = body(client_for(alice).get("/analyses/?status=failed"))
        assert "/srv/code/broken" in page and "/srv/code/running" not in page
        assert re.search(r'class="tab tab-failed active">failed <span class="count">1<', page)
        assert re.search(r'all <span class="count">2<', page)
        assert f"/analyses/{failed.pk}/" in page and f"/analyses/{running.pk}/" not in page

    def test_status_filter__an_unknown_status_says_so_and_lists_all(self, alice, analysis):
        response = client_for(alice).get("/analyses/?status=exploded")
        page = body(response)
        assert response.status_code == 200
        assert "Select a valid choice. exploded is not one of the available choices." in page
        assert f"/analyses/{analysis.pk}/" in page

    def test_pages__newest_first_and_the_filter_survives_paging(self, alice):
        for number in range(LIST_PAGE_SIZE + 2):
            make_analysis(alice, source=f"/srv/code/p{number:02}", status=AnalysisStatus.FAILED)
        client = client_for(alice)
        first = body(client.get("/analyses/?status=failed"))
        second = body(client.get("/analyses/?status=failed&page=2"))
        assert "/srv/code/p26" in first and "/srv/code/p00" not in first
        assert "/srv/code/p00" in second and "/srv/code/p26" not in second
        assert 'href="?status=failed&amp;page=2"' in first
        assert "page 2 of 2" in second

    def test_colour_coded_status_and_score(self, alice):
        make_analysis(alice, status=AnalysisStatus.COMPLETED, health_score=42)
        page = body(client_for(alice).get("/analyses/"))
        assert 'class="pill status status-completed"' in page
        assert '<span class="score-chip score-poor">42</span>' in page

    def test_empty__invites_to_start_one(self, alice):
        page = body(client_for(alice).get("/analyses/"))
        assert "No analyses yet" in page and 'href="/analyses/new/"' in page


def field_errors(page: str, field: str) -> str:
    match = re.search(rf'<ul class="field-errors" id="id_{field}-errors">(.*?)</ul>', page, re.S)
    return unescape(match.group(1)) if match else ""


@pytest.fixture
def source_root(tmp_path, settings):
    root = tmp_path / "sources"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "cart.py").write_text("def total(cart):\n    return sum(cart)\n")
    (root / "notes.txt").write_text("not a directory")
    settings.EIDOLON_SOURCE_ROOTS = [str(root)]
    return root


class TestNewAnalysisForm:
    def test_get__offers_the_fields_and_says_where_directories_may_be(self, alice, source_root):
        page = body(client_for(alice).get("/analyses/new/"))
        assert 'name="source"' in page and 'name="ref"' in page and 'name="diff_base"' in page
        assert 'value="static"' in page and 'value="anthropic"' in page
        assert f"A directory under {source_root}" in page
        assert "needs ANTHROPIC_API_KEY" in page

    def test_valid_directory__queues_the_users_analysis_and_shows_it(self, alice, source_root):
        response = client_for(alice).post(
            "/analyses/new/", {"source": str(source_root / "shop"), "provider": "static"}
        )
        analysis = Analysis.objects.get()
        assert response.status_code == 302
        assert response["Location"] == f"/analyses/{analysis.pk}/"
        assert analysis.created_by == alice and analysis.provider == "static"
        assert analysis.status == AnalysisStatus.QUEUED
        assert DBTaskResult.objects.filter(args_kwargs__args=[analysis.pk]).exists()
        assert RateLimitBudget.objects.get(name=f"submissions:{alice.pk}").day_requests == 1

    @pytest.mark.parametrize(
        ("data", "field", "message"),
        [
            ({"source": ""}, "source", "This field is required."),
            ({"source": "{root}/missing"}, "source", "does not exist"),
            ({"source": "/etc"}, "source", "is outside the directories that may be analysed"),
            ({"source": "{root}/notes.txt"}, "source", "is not a directory"),
            ({"source": "-rf"}, "source", "looks like a command-line option"),
            ({"source": "file:///etc/passwd"}, "source", "file://"),
            ({"source": "https://user:pw@example.com/r.git"}, "source", "credentials"),
            ({"source": "{root}/shop", "ref": "main"}, "ref", "only be given with a git URL"),
            (
                {"source": "https://example.com/r.git", "ref": "a..b"},
                "ref",
                "is not a valid branch, tag or full commit SHA",
            ),
            ({"source": "{root}/shop", "diff_base": "HEAD~1"}, "diff_base", "a git work tree"),
            ({"source": "{root}/shop", "diff_base": "--upload-pack=x"}, "diff_base", "'-'"),
            ({"source": "{root}/shop", "provider": "anthropic"}, "provider", "ANTHROPIC_API_KEY"),
            ({"source": "{root}/shop", "provider": "gpt"}, "provider", "Select a valid choice"),
        ],
    )
    def test_bad_input__is_refused_with_the_reason_beside_its_field(
        self, alice, source_root, data, field, message
    ):
        data = {"provider": "static", **data}
        data["source"] = data["source"].replace("{root}", str(source_root))
        response = client_for(alice).post("/analyses/new/", data)
        assert response.status_code == 400
        assert message in field_errors(body(response), field)
        assert not Analysis.objects.exists()
        assert not RateLimitBudget.objects.exists()  # a typo costs no submission

    def test_rate_limited__429_with_retry_after_and_the_reason(self, alice, source_root):
        RateLimitBudget.objects.create(
            name=f"submissions:{alice.pk}", requests_per_window=30, requests_per_day=1
        )
        client = client_for(alice)
        data = {"source": str(source_root / "shop"), "provider": "static"}
        assert client.post("/analyses/new/", data).status_code == 302
        response = client.post("/analyses/new/", data)
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
        assert "too many analyses submitted: try again in" in body(response)
        assert Analysis.objects.count() == 1


class TestAnalysisPage:
    def test_shows_progress_counters_waiting_reason_and_state(self, alice):
        analysis = make_analysis(
            alice, waiting_reason="AI circuit open until 2026-01-05T14:02:00+00:00"
        )
        page = body(client_for(alice).get(f"/analyses/{analysis.pk}/"))
        assert 'value="40.0"' in page  # 16 of 40 done
        for key, value in [("total", 40), ("done", 16), ("cached", 5), ("requests", 12)]:
            assert f'data-field="{key}">{value}<' in page, key
        assert "AI circuit open until 2026-01-05T14:02:00+00:00" in page
        assert 'class="pill status status-running"' in page
        assert f'data-socket-path="/ws/analyses/{analysis.pk}/"' in page
        assert 'data-finished="false"' in page
        assert re.search(r'data-role="cancel"\s*>', page)  # cancel shown
        assert re.search(r'data-role="resume"\s*hidden', page)  # resume hidden
        assert '<script type="module" src="/static/analyses/analysis.' in page

    def test_cards_grouped_by_file_with_highlighted_numbered_excerpt(self, alice, analysis):
        make_card(analysis, path="shop/tax.py", line_start=30, severity="low", kind="smell")
        make_card(analysis, path="shop/cart.py", line_start=12)
        make_card(analysis, path="shop/cart.py", line_start=4, severity="medium", kind="risk")
        page = body(client_for(alice).get(f"/analyses/{analysis.pk}/"))
        groups = re.findall(r'<section class="file-group" data-path="([^"]+)">', page)
        assert groups == ["shop/cart.py", "shop/tax.py"]
        cart = page[page.index('data-path="shop/cart.py"') : page.index('data-path="shop/tax.py"')]
        assert cart.index('data-line="4"') < cart.index('data-line="12"')
        assert '<span class="normal">11</span>' in page  # excerpt numbered from its first line
        assert '<span class="hll">    <span class="n">taxed</span>' in page  # the cited lines
        assert '<span class="k">def</span>' in page  # highlighted
        assert 'value="high" checked' in page and 'value="smell" checked' in page  # filters

    def test_summary__score_severities_and_worst_modules(self, alice):
        analysis = make_analysis(
            alice,
            status=AnalysisStatus.COMPLETED,
            health_score=73,
            summary={
                "score": 73,
                "modules": 2,
                "units": 9,
                "findings": 3,
                "by_severity": {"high": 1, "medium": 2, "low": 0},
                "by_kind": {"bug": 1, "risk": 2, "smell": 0},
                "top_issues": [
                    {
                        "path": "shop/cart.py",
                        "severity": "high",
                        "title": "Overcharge",
                        "line_start": 3,
                    },
                ],
                "worst_modules": [{"path": "shop/cart.py", "score": 41, "units": 4, "findings": 3}],
            },
        )
        client = client_for(alice)
        for url in (f"/analyses/{analysis.pk}/", f"/analyses/{analysis.pk}/summary/"):
            page = body(client.get(url))
            assert 'data-band="fair"' in page and 'data-role="score">73<' in page
            assert '<span class="score-chip score-poor">41</span>' in page
            assert "Overcharge" in page and "shop/cart.py:3" in page
        page = body(client.get(f"/analyses/{analysis.pk}/"))
        assert 'data-finished="true"' in page
        assert re.search(r'data-role="cancel"\s*hidden', page)
        assert re.search(r'data-role="resume"\s*hidden', page)  # completed: nothing to resume

    def test_activity__the_latest_events_up_to_the_pages_seq_without_progress_ticks(
        self, alice, analysis
    ):
        add_event(analysis, "analysis.started", {"functions_total": 40, "files": 3})
        add_event(analysis, "analysis.progress", {"done": 1})
        add_event(analysis, "unit.failed", {"qualname": "total", "path": "a.py", "reason": "x"})
        page = body(client_for(alice).get(f"/analyses/{analysis.pk}/"))
        assert 'data-last-seq="3"' in page
        data = re.search(r'<script id="activity-data" type="application/json">(.*?)</script>', page)
        assert '"seq": 3' in data.group(1) and '"seq": 1' in data.group(1)
        assert '"seq": 2' not in data.group(1)
        assert data.group(1).index('"seq": 3') < data.group(1).index('"seq": 1')


class TestAnalysisActions:
    def test_cancel__a_queued_analysis_stops_at_once(self, alice):
        analysis = make_analysis(alice, status=AnalysisStatus.QUEUED)
        response = client_for(alice).post(f"/analyses/{analysis.pk}/cancel/", follow=True)
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.CANCELLED
        assert "Cancel requested" in body(response)

    def test_cancel__a_finished_analysis_says_why_not(self, alice):
        analysis = make_analysis(alice, status=AnalysisStatus.COMPLETED)
        response = client_for(alice).post(f"/analyses/{analysis.pk}/cancel/", follow=True)
        assert f"analysis #{analysis.pk} has already finished (completed)" in body(response)

    def test_resume__a_failed_analysis_is_queued_again(self, alice):
        analysis = make_analysis(alice, status=AnalysisStatus.FAILED)
        page = body(client_for(alice).get(f"/analyses/{analysis.pk}/"))
        assert re.search(r'data-role="resume"\s*>', page)
        response = client_for(alice).post(f"/analyses/{analysis.pk}/resume/", follow=True)
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.QUEUED
        assert analysis.status_reason == "resumed by alice"
        assert DBTaskResult.objects.filter(args_kwargs__args=[analysis.pk]).exists()
        assert "Resumed" in body(response)

    def test_get__is_not_allowed(self, alice, analysis):
        assert client_for(alice).get(f"/analyses/{analysis.pk}/cancel/").status_code == 405


class TestCardStatus:
    def test_post__saves_it_and_returns_to_the_card(self, alice, analysis, card):
        url = f"/analyses/{analysis.pk}/cards/{card.pk}/status/"
        response = client_for(alice).post(url, {"status": "acknowledged"})
        card.refresh_from_db()
        assert card.status == CardStatus.ACKNOWLEDGED
        assert response["Location"] == f"/analyses/{analysis.pk}/#card-{card.pk}"

    def test_post_from_the_page_script__answers_with_the_card_fragment(self, alice, analysis, card):
        response = client_for(alice).post(
            f"/analyses/{analysis.pk}/cards/{card.pk}/status/",
            {"status": "dismissed"},
            headers={"X-Eidolon-Fragment": "1"},
        )
        fragment = body(response)
        assert response.status_code == 200
        assert fragment.lstrip().startswith('<article class="finding severity-high"')
        assert 'data-card-status="dismissed"' in fragment
        assert 'value="dismissed" class="status-dismissed active" aria-pressed="true"' in fragment

    def test_unknown_status__400_and_unchanged(self, alice, analysis, card):
        response = client_for(alice).post(
            f"/analyses/{analysis.pk}/cards/{card.pk}/status/", {"status": "deleted"}
        )
        card.refresh_from_db()
        assert response.status_code == 400 and card.status == CardStatus.NEW
        assert "new, acknowledged, dismissed, fixed" in body(response)


class TestCsrf:
    def test_posts_without_a_token__are_refused(self, alice, analysis, card, source_root):
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        posts = [
            *action_urls(analysis, card),
            ("/analyses/new/", {"source": str(source_root / "shop"), "provider": "static"}),
        ]
        for url, data in posts:
            assert client.post(url, data).status_code == 403, url
        analysis.refresh_from_db()
        card.refresh_from_db()
        assert not analysis.cancel_requested and card.status == CardStatus.NEW
        assert Analysis.objects.count() == 1

    def test_posts_with_the_pages_token__are_accepted(self, alice, analysis, card):
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        page = body(client.get(f"/analyses/{analysis.pk}/"))
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        response = client.post(
            f"/analyses/{analysis.pk}/cards/{card.pk}/status/",
            {"status": "fixed", "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302
        assert Card.objects.get(pk=card.pk).status == CardStatus.FIXED


class TestModelTextIsEscaped:
    @pytest.fixture
    def hostile(self, analysis):
        card = make_card(
            analysis,
            title=SCRIPT,
            explanation=f"Look: {IMAGE}",
            fix=f"{SCRIPT}{IMAGE}",
            excerpt="def f():\n    return '<script>alert(\"code\")</script>'\n",
        )
        add_event(analysis, "card.created", {"id": card.pk, "title": f"</script>{SCRIPT}"})
        Analysis.objects.filter(pk=analysis.pk).update(
            summary={
                "score": 10,
                "top_issues": [{"path": "a.py", "severity": "high", "title": SCRIPT}],
                "worst_modules": [{"path": IMAGE, "score": 10, "findings": 1}],
            }
        )
        return card

    def assert_inert(self, page: str) -> None:
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "onerror=alert" not in page or "&lt;img src=x onerror=alert" in page

    def test_page__prints_it_as_text(self, alice, analysis, hostile):
        page = body(client_for(alice).get(f"/analyses/{analysis.pk}/"))
        self.assert_inert(page)
        assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=alert(&#x27;explanation&#x27;)&gt;" in page
        assert "\\u003C/script\\u003E\\u003Cscript\\u003E" in page  # in the activity JSON
        assert "&lt;script&gt;alert(" in page.split('class="code"', 1)[1]  # the excerpt

    def test_fragments__print_it_as_text(self, alice, analysis, hostile):
        client = client_for(alice)
        card_fragment = body(client.get(f"/analyses/{analysis.pk}/cards/{hostile.pk}/"))
        summary = body(client.get(f"/analyses/{analysis.pk}/summary/"))
        for fragment in (card_fragment, summary):
            self.assert_inert(fragment)
        assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in card_fragment
        assert "&lt;img src=x onerror=alert(&#x27;explanation&#x27;)&gt;" in summary


class TestContentSecurityPolicy:
    def test_pages__run_only_our_own_scripts(self, alice, analysis, card):
        client = client_for(alice)
        for url in ["/", "/analyses/", "/analyses/new/", *page_urls(analysis, card)]:
            response = client.get(url)
            policy = response["Content-Security-Policy"]
            assert "script-src 'self';" in policy and "style-src 'self';" in policy, url
            assert "connect-src 'self' ws://testserver wss://testserver;" in policy
            assert "frame-ancestors 'none'" in policy
            assert INLINE_SCRIPT.findall(body(response)) == [], url
            assert ' style="' not in body(response), url

    def test_exempt_paths_and_json__get_no_policy(self, client):
        assert "Content-Security-Policy" not in client.get("/admin/login/")
        assert "Content-Security-Policy" not in client.get("/health")
