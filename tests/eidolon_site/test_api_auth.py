"""Who the API lets in: personal tokens (Bearer) and logged-in sessions, whose writes need the
CSRF token; ``manage.py create_token``; tokens in the admin; and the OpenAPI document."""

from __future__ import annotations

import io
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient
from openapi_spec_validator import validate

from analyses.models import Analysis
from eidolon_site.accounts import token_digest, token_revoke
from eidolon_site.models import ApiToken
from tests.api_support import GIT_SOURCE, Caller, analysis_with_cards, caller
from tests.processes import run_manage, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

SUBMISSION = {"source": GIT_SOURCE, "provider": "static"}


@pytest.fixture
def alice() -> Caller:
    return caller("alice")


class TestBearerTokens:
    async def test_a_token__is_its_owner__and_notes_its_last_use(self, alice):
        analysis = await sync_to_async(analysis_with_cards)(owner=alice.user)
        response = await alice.call("GET", f"/api/analyses/{analysis.pk}")
        assert response.status_code == 200
        token = await ApiToken.objects.aget(user=alice.user)
        assert token.last_used_at is not None

    @pytest.mark.parametrize(
        "authorization",
        [
            "Bearer eid_not-a-token",  # unknown: 401
            "Bearer ",  # empty: 401
            "Basic YWxpY2U6cHc=",  # another scheme: 401
            "Bearer " + "x" * 5000,  # absurdly long: 401
            "eid_abc",  # no scheme: 401
        ],
    )
    async def test_a_bad_authorization_header__401(self, alice, authorization):
        response = await AsyncClient().get(
            "/api/analyses", headers={"Authorization": authorization}
        )
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="eidolon"'

    async def test_a_revoked_token__401_from_the_next_request(self, alice):
        assert (await alice.call("GET", "/api/analyses")).status_code == 200
        token = await ApiToken.objects.aget(user=alice.user)
        await sync_to_async(token_revoke)(token=token, actor="alice")
        assert (await alice.call("GET", "/api/analyses")).status_code == 401

    async def test_an_inactive_user_s_token__401(self, alice):
        await User.objects.filter(pk=alice.user.pk).aupdate(is_active=False)
        assert (await alice.call("GET", "/api/analyses")).status_code == 401

    async def test_a_bearer_write_needs_no_csrf_token(self, alice):
        client = AsyncClient(enforce_csrf_checks=True)
        response = await client.post(
            "/api/analyses",
            data=SUBMISSION,
            content_type="application/json",
            headers=alice.headers,
        )
        assert response.status_code == 202


class TestSessions:
    @pytest.fixture
    def browser(self, alice) -> AsyncClient:
        """Alice logged in, with a browser's CSRF cookie; CSRF checks enforced."""
        client = AsyncClient(enforce_csrf_checks=True)
        client.force_login(alice.user)
        return client

    async def csrf_token(self, browser: AsyncClient) -> str:
        page = await browser.get("/admin/login/")
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]

    async def test_a_session_reads__without_a_csrf_token(self, browser, alice):
        analysis = await sync_to_async(analysis_with_cards)(owner=alice.user)
        response = await browser.get(f"/api/analyses/{analysis.pk}/cards")
        assert response.status_code == 200
        assert response.json()["count"] == 5

    async def test_a_session_write_without_the_csrf_token__403(self, browser):
        response = await browser.post(
            "/api/analyses", data=SUBMISSION, content_type="application/json"
        )
        assert response.status_code == 403
        assert "CSRF" in response.json()["detail"]
        assert not await Analysis.objects.aexists()

    async def test_a_session_write_with_a_wrong_csrf_token__403(self, browser):
        await self.csrf_token(browser)
        response = await browser.post(
            "/api/analyses",
            data=SUBMISSION,
            content_type="application/json",
            headers={"X-CSRFToken": "x" * 64},
        )
        assert response.status_code == 403

    async def test_a_session_write_with_the_csrf_token__accepted(self, browser, alice):
        token = await self.csrf_token(browser)
        analysis = await sync_to_async(analysis_with_cards)(owner=alice.user)
        card = await analysis.cards.afirst()
        submitted = await browser.post(
            "/api/analyses",
            data=SUBMISSION,
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
        patched = await browser.patch(
            f"/api/cards/{card.pk}",
            data={"status": "fixed"},
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
        assert submitted.status_code == 202
        assert patched.status_code == 200 and patched.json()["status"] == "fixed"

    async def test_logged_out__401(self, browser):
        await browser.alogout()
        assert (await browser.get("/api/analyses")).status_code == 401


class TestCreateTokenCommand:
    def test_prints_a_working_token_alone_on_its_last_line(self, alice):
        out = io.StringIO()
        call_command("create_token", "alice", "--name", "ci", stdout=out)
        raw = out.getvalue().strip().splitlines()[-1]
        token = ApiToken.objects.get(name="ci")
        assert token.user == alice.user and token.digest == token_digest(raw)
        assert raw.startswith(token.prefix) and " " not in raw

    def test_an_unknown_user__a_clear_error(self):
        with pytest.raises(CommandError, match="no user named 'nobody'"):
            call_command("create_token", "nobody")

    def test_in_a_real_process__exit_status_and_the_token_on_the_last_line(self, alice):
        env = subprocess_environment(EIDOLON_LOG_LEVEL="WARNING")
        created = run_manage("create_token", "alice", "--name", "laptop", env=env)
        unknown = run_manage("create_token", "nobody", env=env)
        assert created.returncode == 0, created.stderr
        raw = created.stdout.strip().splitlines()[-1]
        assert ApiToken.objects.get(name="laptop").digest == token_digest(raw)
        assert unknown.returncode == 1
        assert "no user named 'nobody'" in unknown.stderr
        assert unknown.stdout == ""


class TestTokenAdmin:
    @pytest.fixture
    def admin_client(self, client):
        client.force_login(User.objects.create_superuser("root", password=None))
        return client

    def test_adding_a_token__shows_it_once__stores_its_digest(self, admin_client, alice):
        response = admin_client.post(
            "/admin/eidolon_site/apitoken/add/",
            {"user": alice.user.pk, "name": "deploy"},
            follow=True,
        )
        page = response.content.decode()
        raw = re.search(r"is (eid_[A-Za-z0-9_\-]+)", page)[1]
        token = ApiToken.objects.get(name="deploy")
        assert token.digest == token_digest(raw)
        later = admin_client.get(f"/admin/eidolon_site/apitoken/{token.pk}/change/")
        listing = admin_client.get("/admin/eidolon_site/apitoken/").content.decode()
        assert raw not in later.content.decode() and raw not in listing
        assert token.digest not in later.content.decode() and token.digest not in listing
        assert token.prefix in listing

    def test_revoke_action__the_token_stops_working(self, admin_client, alice):
        token = ApiToken.objects.get(user=alice.user)
        admin_client.post(
            "/admin/eidolon_site/apitoken/",
            {"action": "revoke", "_selected_action": [token.pk]},
            follow=True,
        )
        token.refresh_from_db()
        assert token.revoked_at is not None


class TestOpenAPI:
    def test_the_document_is_valid_openapi_and_lists_exactly_the_issue_s_routes(self, client):
        response = client.get("/api/openapi.json")
        document = response.json()
        validate(document)
        routes = {
            (method.upper(), path) for path, item in document["paths"].items() for method in item
        }
        assert routes == {
            ("POST", "/api/analyses"),
            ("GET", "/api/analyses"),
            ("GET", "/api/analyses/{analysis_id}"),
            ("POST", "/api/analyses/{analysis_id}/cancel"),
            ("POST", "/api/analyses/{analysis_id}/resume"),
            ("GET", "/api/analyses/{analysis_id}/events"),
            ("GET", "/api/analyses/{analysis_id}/cards"),
            ("GET", "/api/analyses/{analysis_id}/export"),
            ("GET", "/api/cards/{card_id}"),
            ("PATCH", "/api/cards/{card_id}"),
            ("GET", "/api/reliability"),
            ("POST", "/api/reliability/breakers/{name}/{action}"),
        }
        assert document["info"]["title"] == "Eidolon"

    def test_every_operation_documents_401_and_its_error_bodies(self, client):
        document = client.get("/api/openapi.json").json()
        for path, item in document["paths"].items():
            for method, operation in item.items():
                responses = operation["responses"]
                assert "401" in responses, (method, path)
                assert {"BearerTokenAuth": []} in operation["security"]
                for status, response in responses.items():
                    if int(status) >= 400:
                        assert response["content"]["application/json"]["schema"]["$ref"]
        submit = document["paths"]["/api/analyses"]["post"]["responses"]
        assert "Retry-After" in submit["429"]["headers"]

    def test_the_docs_page_renders_without_a_cdn(self, client):
        page = client.get("/api/docs")
        assert page.status_code == 200
        assert "/static/ninja/" in page.content.decode()
