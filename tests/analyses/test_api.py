"""The JSON API of analyses and cards, through the real ASGI stack (AsyncClient) and database:
each route for the owner, another user (404), nobody (401) and staff; pagination, filters and
what every bad input gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import AsyncClient
from django_tasks_db.models import DBTaskResult

from analyses.models import Analysis, AnalysisStatus, Card, CardStatus
from reliability.models import RateLimitBudget
from tests.api_support import ANONYMOUS, GIT_SOURCE, Caller, analysis_with_cards, caller

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class World:
    owner: Caller
    other: Caller
    staff: Caller
    completed: Analysis
    queued: Analysis
    failed: Analysis
    card: Card

    def who(self, role: str) -> Caller:
        return ANONYMOUS if role == "anonymous" else getattr(self, role)


@pytest.fixture
def world() -> World:
    owner, other = caller("alice"), caller("bob")
    completed = analysis_with_cards(owner=owner.user)
    return World(
        owner=owner,
        other=other,
        staff=caller("sam", staff=True),
        completed=completed,
        queued=analysis_with_cards(owner=owner.user, cards=(), status=AnalysisStatus.QUEUED),
        failed=analysis_with_cards(owner=owner.user, cards=(), status=AnalysisStatus.FAILED),
        card=completed.cards.order_by("pk").first(),
    )


@dataclass(frozen=True)
class Route:
    method: str
    url: str  # formatted with the world's objects
    body: dict[str, Any] | None
    success: int

    def for_world(self, world: World) -> str:
        return self.url.format(
            completed=world.completed.pk,
            queued=world.queued.pk,
            failed=world.failed.pk,
            card=world.card.pk,
        )


# Every route of another user's object: 404 for them, the same success for owner and staff.
OBJECT_ROUTES = {
    "get analysis": Route("GET", "/api/analyses/{completed}", None, 200),
    "cancel": Route("POST", "/api/analyses/{queued}/cancel", None, 202),
    "resume": Route("POST", "/api/analyses/{failed}/resume", None, 202),
    "events": Route("GET", "/api/analyses/{completed}/events", None, 200),
    "cards": Route("GET", "/api/analyses/{completed}/cards", None, 200),
    "get card": Route("GET", "/api/cards/{card}", None, 200),
    "set card status": Route("PATCH", "/api/cards/{card}", {"status": "acknowledged"}, 200),
}
COLLECTION_ROUTES = {
    "list": Route("GET", "/api/analyses", None, 200),
    "submit": Route("POST", "/api/analyses", {"source": GIT_SOURCE, "provider": "static"}, 202),
}


class TestEveryRouteForEveryCaller:
    @pytest.mark.parametrize("role", ["owner", "staff", "other", "anonymous"])
    @pytest.mark.parametrize("route", OBJECT_ROUTES.values(), ids=list(OBJECT_ROUTES))
    async def test_object_route__owner_and_staff_succeed__another_user_404__anonymous_401(
        self, world, route, role
    ):
        response = await world.who(role).call(route.method, route.for_world(world), route.body)
        expected = {"owner": route.success, "staff": route.success, "other": 404}
        assert response.status_code == expected.get(role, 401), response.content
        assert "detail" in response.json() if response.status_code >= 400 else True

    async def test_another_user_s_write__changes_nothing(self, world):
        for route in OBJECT_ROUTES.values():
            response = await world.other.call(route.method, route.for_world(world), route.body)
            assert response.json() == {"detail": "not found"}
        assert (await Analysis.objects.aget(pk=world.queued.pk)).status == AnalysisStatus.QUEUED
        assert (await Analysis.objects.aget(pk=world.failed.pk)).status == AnalysisStatus.FAILED
        assert (await Card.objects.aget(pk=world.card.pk)).status == CardStatus.NEW

    @pytest.mark.parametrize("route", COLLECTION_ROUTES.values(), ids=list(COLLECTION_ROUTES))
    async def test_collection_route__anonymous_gets_401_with_a_bearer_challenge(self, route):
        response = await ANONYMOUS.call(route.method, route.url, route.body)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="eidolon"'
        assert "authentication required" in response.json()["detail"]

    async def test_list__each_user_sees_their_own__staff_see_everyone_s(self, world):
        bob_s = await Analysis.objects.acreate(
            source=GIT_SOURCE, source_kind="git", provider="static", created_by=world.other.user
        )
        owner_ids = {
            item["id"] for item in (await world.owner.call("GET", "/api/analyses")).json()["items"]
        }
        other_ids = {
            item["id"] for item in (await world.other.call("GET", "/api/analyses")).json()["items"]
        }
        staff_page = (await world.staff.call("GET", "/api/analyses")).json()
        assert owner_ids == {world.completed.pk, world.queued.pk, world.failed.pk}
        assert other_ids == {bob_s.pk}
        assert {item["id"] for item in staff_page["items"]} == owner_ids | other_ids
        assert staff_page["count"] == 4


class TestSubmit:
    async def test_git_url__202_with_the_analysis__its_location__and_a_task(self, world):
        response = await world.owner.call(
            "POST", "/api/analyses", {"source": GIT_SOURCE, "ref": "main", "provider": "static"}
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "queued" and body["source"] == GIT_SOURCE
        assert response["Location"] == f"/api/analyses/{body['id']}"
        assert body["url"] == f"/analyses/{body['id']}/"
        assert body["events_url"] == f"/api/analyses/{body['id']}/events"
        analysis = await Analysis.objects.aget(pk=body["id"])
        assert analysis.created_by_id == world.owner.user.pk
        assert analysis.ref == "main" and not analysis.allow_any_path
        assert await DBTaskResult.objects.filter(args_kwargs__args=[analysis.pk]).aexists()
        located = await world.owner.call("GET", response["Location"])
        assert located.json()["id"] == body["id"]

    async def test_local_directory_inside_the_source_roots__202(self, world, settings, tmp_path):
        settings.EIDOLON_SOURCE_ROOTS = [str(tmp_path)]
        (tmp_path / "project").mkdir()
        response = await world.owner.call(
            "POST", "/api/analyses", {"source": str(tmp_path / "project"), "provider": "static"}
        )
        assert response.status_code == 202
        assert response.json()["source_kind"] == "local"

    @pytest.mark.parametrize(
        ("body", "says"),
        [
            # A directory outside the roots (none are configured here): 400, and it says so.
            ({"source": "/etc", "provider": "static"}, "cannot be analysed here"),
            # file:// and remote helpers are refused as git URLs: 400.
            ({"source": "file:///etc/passwd", "provider": "static"}, "file://"),
            ({"source": "ext::sh -c id", "provider": "static"}, ""),
            # Credentials in a URL are refused, and not echoed: 400.
            ({"source": "https://u:secret@git.example.com/r.git", "provider": "static"}, ""),
            # A ref with a local path: 400.
            ({"source": "./here", "ref": "main", "provider": "static"}, "git URL"),
            # Claude without an API key configured: 400.
            ({"source": GIT_SOURCE, "provider": "anthropic"}, "ANTHROPIC_API_KEY"),
        ],
    )
    async def test_a_source_or_provider_that_cannot_be_used__400(self, world, settings, body, says):
        settings.ANTHROPIC_API_KEY = ""
        response = await world.owner.call("POST", "/api/analyses", body)
        assert response.status_code == 400, response.content
        assert says in response.json()["detail"]
        assert "secret" not in response.json()["detail"]
        assert await Analysis.objects.acount() == 3  # the world's, no new one

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "source"),  # missing: 422
            ({"source": ""}, "source"),  # empty: 422
            ({"source": "x" * 2049}, "source"),  # longer than the column: 422
            ({"source": "https://h/r.git\x00"}, "source"),  # NUL (PostgreSQL refuses it): 422
            ({"source": "https://h/\u0007r.git"}, "source"),  # a control character: 422
            ({"source": GIT_SOURCE, "ref": "main\n"}, "ref"),  # a newline in the ref: 422
            ({"source": GIT_SOURCE, "ref": "r" * 256}, "ref"),  # too long: 422
            ({"source": GIT_SOURCE, "provider": "gpt"}, "provider"),  # not an enum value: 422
            ({"source": 42}, "source"),  # not a string: 422
            ([GIT_SOURCE], "source"),  # not an object: 422
        ],
    )
    async def test_invalid_fields__422_naming_the_field(self, world, body, field):
        response = await world.owner.call("POST", "/api/analyses", body)
        assert response.status_code == 422, response.content
        assert field in response.json()["detail"][0]["loc"]

    @pytest.mark.parametrize(
        ("raw", "status"),
        [
            (b"{not json", 400),  # not JSON: 400 "Cannot parse request body"
            (b"\xc3\x28", 400),  # not UTF-8: 400
            (b"", 422),  # no body at all: 422 (source missing)
            (b"null", 422),  # JSON, but not an object: 422
            (b'{"source": "\\ud800"}', 422),  # a lone surrogate (no database stores it): 422
            (b'{"source": "x", "source": 1e999}', 422),  # an infinite number: 422
        ],
    )
    async def test_a_body_that_is_not_a_json_object__400_or_422(self, world, raw, status):
        response = await AsyncClient().post(
            "/api/analyses", data=raw, content_type="application/json", headers=world.owner.headers
        )
        assert response.status_code == status, response.content
        assert "detail" in response.json()

    async def test_the_user_s_submission_budget_spent__429_with_retry_after(self, world):
        await RateLimitBudget.objects.acreate(
            name=f"submissions:{world.owner.user.pk}", requests_per_window=1, window_seconds=3600
        )
        body = {"source": GIT_SOURCE, "provider": "static"}
        first = await world.owner.call("POST", "/api/analyses", body)
        second = await world.owner.call("POST", "/api/analyses", body)
        assert first.status_code == 202
        assert second.status_code == 429
        # One per hour, less the budget engine's 2 % headroom: the next slot in about 3673 s.
        assert 3600 <= int(second["Retry-After"]) <= 3675
        assert "too many analyses submitted" in second.json()["detail"]
        assert await Analysis.objects.filter(created_by=world.owner.user).acount() == 4
        # Another user's budget is their own.
        assert (await world.other.call("POST", "/api/analyses", body)).status_code == 202


class TestCancelAndResume:
    async def test_cancel_a_queued_analysis__it_is_cancelled_at_once(self, world):
        response = await world.owner.call("POST", f"/api/analyses/{world.queued.pk}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "cancelled"
        assert "cancelled by alice" in response.json()["status_reason"]

    async def test_cancel_a_finished_analysis__409(self, world):
        response = await world.owner.call("POST", f"/api/analyses/{world.completed.pk}/cancel")
        assert response.status_code == 409
        assert "already finished" in response.json()["detail"]

    async def test_resume_a_failed_analysis__queued_again_with_a_task(self, world):
        response = await world.owner.call("POST", f"/api/analyses/{world.failed.pk}/resume")
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        assert await DBTaskResult.objects.filter(args_kwargs__args=[world.failed.pk]).aexists()

    async def test_resume_a_completed_analysis__409(self, world):
        response = await world.owner.call("POST", f"/api/analyses/{world.completed.pk}/resume")
        assert response.status_code == 409
        assert "nothing to resume" in response.json()["detail"]


class TestPagination:
    async def test_analyses__pages_of_limit_newest_first_without_overlap(self, world):
        for _ in range(4):
            await Analysis.objects.acreate(
                source=GIT_SOURCE, source_kind="git", provider="static", created_by=world.owner.user
            )
        pages = [
            (await world.owner.call("GET", f"/api/analyses?limit=3&offset={offset}")).json()
            for offset in (0, 3, 6)
        ]
        ids = [item["id"] for page in pages for item in page["items"]]
        assert [len(page["items"]) for page in pages] == [3, 3, 1]
        assert {page["count"] for page in pages} == {7}
        assert pages[1]["limit"] == 3 and pages[1]["offset"] == 3
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7

    async def test_analyses__filtered_by_status(self, world):
        page = (await world.owner.call("GET", "/api/analyses?status=failed")).json()
        assert [item["id"] for item in page["items"]] == [world.failed.pk]
        assert page["count"] == 1

    async def test_cards__in_file_and_line_order_across_pages(self, world):
        url = f"/api/analyses/{world.completed.pk}/cards"
        first = (await world.owner.call("GET", f"{url}?limit=2")).json()
        rest = (await world.owner.call("GET", f"{url}?limit=2&offset=2")).json()
        paths = [card["path"] for card in first["items"] + rest["items"]]
        assert first["count"] == 5
        assert paths == ["app/models.py", "app/models.py", "app/views.py", "app/views.py"]


class TestCardFilters:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                "severity=high",
                [("app/models.py", "high", "bug"), ("app/views.py", "high", "security")],
            ),
            (
                "kind=security",
                [("app/views.py", "medium", "security"), ("app/views.py", "high", "security")],
            ),
            ("file=lib/util.py", [("lib/util.py", "low", "docs")]),
            (
                "severity=high&kind=security&file=app/views.py",
                [("app/views.py", "high", "security")],
            ),
            ("severity=medium&file=lib/util.py", []),
            ("status=new&kind=docs", [("lib/util.py", "low", "docs")]),
        ],
    )
    async def test_filters__narrow_the_cards(self, world, query, expected):
        url = f"/api/analyses/{world.completed.pk}/cards?{query}"
        page = (await world.owner.call("GET", url)).json()
        assert [(c["path"], c["severity"], c["kind"]) for c in page["items"]] == expected
        assert page["count"] == len(expected)

    async def test_status_filter__after_a_patch(self, world):
        await world.owner.call("PATCH", f"/api/cards/{world.card.pk}", {"status": "dismissed"})
        page = (
            await world.owner.call(
                "GET", f"/api/analyses/{world.completed.pk}/cards?status=dismissed"
            )
        ).json()
        assert [card["id"] for card in page["items"]] == [world.card.pk]


class TestCards:
    async def test_get__the_card_as_every_client_sees_it__text_as_data(self, world):
        body = (await world.owner.call("GET", f"/api/cards/{world.card.pk}")).json()
        assert body["analysis_id"] == world.completed.pk
        assert body["explanation"].startswith("<script>")  # JSON data; the pages escape it
        assert body["excerpt"].startswith("def function_0")

    @pytest.mark.parametrize("status", CardStatus.values)
    async def test_patch__sets_each_status(self, world, status):
        response = await world.owner.call(
            "PATCH", f"/api/cards/{world.card.pk}", {"status": status}
        )
        assert response.status_code == 200
        assert response.json()["status"] == status
        assert (await Card.objects.aget(pk=world.card.pk)).status == status

    @pytest.mark.parametrize(
        "body",
        [
            {"status": "wontfix"},  # not one of new/acknowledged/dismissed/fixed: 422
            {"status": None},  # null: 422
            {"state": "fixed"},  # the wrong field (status missing): 422
            {},  # nothing: 422
        ],
    )
    async def test_patch__a_bad_status__422_naming_the_field(self, world, body):
        response = await world.owner.call("PATCH", f"/api/cards/{world.card.pk}", body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][-1] == "status"
        assert (await Card.objects.aget(pk=world.card.pk)).status == CardStatus.NEW


class TestEvents:
    async def test_after__the_events_after_that_sequence_number_in_order(self, world):
        url = f"/api/analyses/{world.completed.pk}/events"
        everything = (await world.owner.call("GET", url)).json()
        later = (await world.owner.call("GET", f"{url}?after=1")).json()
        one = (await world.owner.call("GET", f"{url}?after=1&limit=1")).json()
        assert [event["seq"] for event in everything["events"]] == [1, 2, 3]
        assert [event["seq"] for event in later["events"]] == [2, 3]
        assert [event["seq"] for event in one["events"]] == [2]
        assert everything["last_seq"] == 3 and everything["finished"] is True
        assert everything["events"][0]["type"] == "analysis.progress"
        assert set(everything["events"][0]) == {"seq", "type", "data", "at"}

    async def test_after_the_last__nothing_yet(self, world):
        url = f"/api/analyses/{world.completed.pk}/events?after=3"
        assert (await world.owner.call("GET", url)).json()["events"] == []


class TestBadInputNeverAServerError:
    @pytest.mark.parametrize(
        ("url", "status"),
        [
            ("/api/analyses/0", 422),  # ids start at 1: 422
            ("/api/analyses/-1", 422),  # negative: 422
            ("/api/analyses/abc", 422),  # not an integer: 422
            ("/api/analyses/1.5", 422),  # not an integer: 422
            (f"/api/analyses/{2**63}", 422),  # beyond a signed 64-bit id: 422
            (f"/api/analyses/{2**63 - 1}", 404),  # the largest id, nobody's: 404
            (f"/api/cards/{10**30}", 422),  # beyond 64 bits: 422
            ("/api/analyses?limit=0", 422),  # pages hold 1..200 items: 422
            ("/api/analyses?limit=201", 422),
            ("/api/analyses?offset=-1", 422),  # negative offset: 422
            ("/api/analyses?offset=1000001", 422),  # beyond the last page anyone needs: 422
            ("/api/analyses?status=done", 422),  # not a status: 422
            ("/api/analyses?status=%00", 422),  # NUL: 422
            ("/api/analyses/{completed}/events?after=-1", 422),  # negative sequence: 422
            (f"/api/analyses/{{completed}}/events?after={2**63}", 422),  # beyond 64 bits: 422
            ("/api/analyses/{completed}/events?limit=1001", 422),  # at most 1000 a page: 422
            ("/api/analyses/{completed}/cards?severity=critical", 422),  # not a severity: 422
            ("/api/analyses/{completed}/cards?kind=typo", 422),  # not a kind: 422
            ("/api/analyses/{completed}/cards?status=open", 422),  # not a card status: 422
            ("/api/analyses/{completed}/cards?file=a%00b", 422),  # NUL in the file: 422
            ("/api/analyses/{completed}/cards?file=a%0Ab", 422),  # a newline: 422
            (f"/api/analyses/{{completed}}/cards?file={'a' * 1025}", 422),  # too long: 422
            ("/api/analyses/{completed}/cards?file=%C3%A9t%C3%A9.py", 200),  # UTF-8: fine
            ("/api/analyses/{completed}/cards?file=%FF", 200),  # not UTF-8: replaced, fine
        ],
    )
    async def test_bad_query_or_path__4xx_json(self, world, url, status):
        response = await world.owner.call("GET", url.format(completed=world.completed.pk))
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/json; charset=utf-8"
