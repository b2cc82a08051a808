"""The async-native middleware stack under ASGI: the same behaviour as Django's classes (sessions
saved, messages kept, CSRF enforced, static files served, the request log naming the user),
without a thread hand-off per hook; and Django's deploy checks still see it."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import SyncToAsync, iscoroutinefunction, sync_to_async
from django.contrib.auth.models import User
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient

from eidolon_site.checks import protective_middleware
from tests.api_support import analysis_with_cards, caller

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-password-for-tests"


@pytest.fixture
def thread_hops(monkeypatch) -> list[str]:
    """The functions run through ``sync_to_async`` while the fixture is active."""
    hops: list[str] = []
    original = SyncToAsync.__call__

    async def recording(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", recording)
    return hops


class TestNoThreadPerHook:
    def test_every_view_and_template_hook_is_a_coroutine_under_asgi(self):
        handler = ASGIHandler()
        hooks = handler._view_middleware + handler._template_response_middleware
        assert hooks
        for hook in hooks:
            assert iscoroutinefunction(hook) and not isinstance(hook, SyncToAsync), hook

    async def test_an_api_request__only_django_s_own_hand_offs(self, thread_hops):
        owner = await sync_to_async(caller)("alice")
        analysis = await sync_to_async(analysis_with_cards)(owner=owner.user)
        thread_hops.clear()
        response = await owner.call("GET", f"/api/analyses/{analysis.pk}")
        assert response.status_code == 200
        # The request_started/finished signals and closing the response; the token and the
        # analysis are read in the database thread (reliability.dbthread), not through here.
        assert sorted(thread_hops) == ["HttpResponseBase.close", "Signal.asend.<locals>.sync_send"]


class TestBehaviourKept:
    async def test_a_session_login__saved_and_used_by_the_next_request(self):
        await sync_to_async(User.objects.create_superuser)("root", password=PASSWORD)
        client = AsyncClient()
        login = await client.post(
            "/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD}
        )
        assert login.status_code == 302
        assert (await client.get("/admin/")).status_code == 200
        assert (await client.get("/api/analyses")).status_code == 200  # the session, in the API

    async def test_a_message__kept_for_the_next_page(self):
        await sync_to_async(User.objects.create_superuser)("root", password=PASSWORD)
        alice = await sync_to_async(User.objects.create_user)("alice")
        client = AsyncClient()
        await client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
        added = await client.post(
            "/admin/eidolon_site/apitoken/add/", {"user": alice.pk, "name": "laptop"}
        )
        assert added.status_code == 302
        listing = await client.get(added["Location"])
        assert "it is not stored and will not be shown again" in listing.content.decode()
        again = await client.get(added["Location"])
        assert "will not be shown again" not in again.content.decode()

    async def test_a_form_post_without_the_csrf_token__403(self):
        response = await AsyncClient(enforce_csrf_checks=True).post(
            "/admin/login/", {"username": "x", "password": "y"}
        )
        assert response.status_code == 403

    async def test_static_files__served(self):
        page = (await AsyncClient().get("/admin/login/")).content.decode()
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page)[1]
        response = await AsyncClient().get(stylesheet)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/css")

    async def test_development_mode__pages_and_static_files_served(self, settings):
        # Debug mode looks static files up on disk at each request (WhiteNoise's autorefresh);
        # a page, which is no static file, must still reach its view.
        settings.WHITENOISE_AUTOREFRESH = True
        page = await AsyncClient().get("/admin/login/")
        assert page.status_code == 200
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page.content.decode())[1]
        assert (await AsyncClient().get(stylesheet)).status_code == 200

    async def test_the_request_log_names_the_token_s_owner(self, caplog):
        owner = await sync_to_async(caller)("alice")
        await owner.call("GET", "/api/analyses")
        finished = [
            record.msg
            for record in caplog.records
            if isinstance(record.msg, dict) and record.msg.get("event") == "request_finished"
        ]
        assert finished[-1]["user_id"] == owner.user.pk


@pytest.fixture
def production_https(settings):
    """What EIDOLON_HTTPS=true sets (tests run without it)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SESSION_COOKIE_SECURE = True


@pytest.mark.usefixtures("production_https")
class TestDeployChecks:
    def test_the_stack_as_configured__no_warning(self):
        assert protective_middleware(None) == []

    def test_a_setting_the_protective_middleware_enforces__still_checked(self, settings):
        settings.X_FRAME_OPTIONS = "SAMEORIGIN"
        assert [message.id for message in protective_middleware(None)] == ["security.W019"]

    def test_a_protective_middleware_missing__reported(self, settings):
        settings.MIDDLEWARE = [
            path for path in settings.MIDDLEWARE if not path.endswith(".XFrameOptions")
        ]
        assert [message.id for message in protective_middleware(None)] == ["eidolon.W002"]

    def test_what_the_security_middleware_enforces__still_checked(self, settings):
        settings.SECURE_CONTENT_TYPE_NOSNIFF = False
        settings.SECURE_HSTS_SECONDS = 0
        assert {message.id for message in protective_middleware(None)} == {
            "security.W004",
            "security.W006",
        }

    def test_what_the_csrf_middleware_enforces__still_checked(self, settings):
        settings.CSRF_COOKIE_SECURE = False
        assert [message.id for message in protective_middleware(None)] == ["security.W016"]
