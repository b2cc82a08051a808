"""Logging in and out, and the settings page's personal API tokens, over the real URLs."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from eidolon_site.accounts import token_create, token_digest, user_for_token
from eidolon_site.models import ApiToken
from tests.analyses.page_support import PASSWORD, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return make_user("alice")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


class TestLogin:
    def test_pages_send_anonymous_users_to_the_login_page(self, client):
        response = client.get("/accounts/settings/")
        assert response["Location"] == "/accounts/login/?next=/accounts/settings/"
        page = client.get(response["Location"]).content.decode()
        assert 'name="username"' in page and 'name="password"' in page
        assert 'name="next" value="/accounts/settings/"' in page

    def test_right_password__goes_to_the_page_asked_for(self, client, alice):
        response = client.post(
            "/accounts/login/",
            {"username": "alice", "password": PASSWORD, "next": "/accounts/settings/"},
        )
        assert response.status_code == 302 and response["Location"] == "/accounts/settings/"
        assert client.get("/accounts/settings/").status_code == 200

    def test_right_password_and_no_next__goes_to_the_analyses(self, client, alice):
        response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
        assert response["Location"] == "/analyses/"

    def test_next_to_another_site__is_ignored(self, client, alice):
        response = client.post(
            "/accounts/login/",
            {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"},
        )
        assert response["Location"] == "/analyses/"

    def test_wrong_password__says_so_and_logs_nobody_in(self, client, alice):
        response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
        assert client.get("/analyses/").status_code == 302

    def test_signed_in__the_login_page_moves_on(self, alice):
        assert signed_in(alice).get("/accounts/login/")["Location"] == "/analyses/"


class TestLogout:
    def test_post__logs_out_and_shows_the_login_page(self, alice):
        client = signed_in(alice)
        response = client.post("/accounts/logout/")
        assert response["Location"] == "/accounts/login/"
        assert client.get("/analyses/").status_code == 302

    def test_get__is_refused(self, alice):
        client = signed_in(alice)
        assert client.get("/accounts/logout/").status_code == 405
        assert client.get("/analyses/").status_code == 200

    def test_without_csrf_token__is_refused(self, alice):
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        assert client.post("/accounts/logout/").status_code == 403
        assert client.get("/analyses/").status_code == 200


class TestTokens:
    def test_settings__lists_ones_own_tokens_only_with_prefix_and_dates(self, alice):
        bob = make_user("bob")
        own, _ = token_create(user=alice, name="laptop")
        token_create(user=bob, name="bobs-ci")
        response = signed_in(alice).get("/accounts/settings/")
        page = response.content.decode()
        assert "laptop" in page and f"{own.prefix}…" in page and "never" in page
        assert "bobs-ci" not in page
        assert "no-store" in response["Cache-Control"]

    def test_create__shows_the_token_once_and_stores_its_digest(self, alice):
        client = signed_in(alice)
        response = client.post("/accounts/settings/tokens/", {"name": "ci"})
        page = response.content.decode()
        raw = re.search(r'<pre class="token-value" id="new-token">(eid_[^<]+)</pre>', page).group(1)
        token = ApiToken.objects.get(user=alice)
        assert token.name == "ci" and token.digest == token_digest(raw)
        assert user_for_token(raw) == alice
        assert "no-store" in response["Cache-Control"]
        assert raw not in client.get("/accounts/settings/").content.decode()

    def test_create__a_blank_name_is_refused_beside_the_field(self, alice):
        response = signed_in(alice).post("/accounts/settings/tokens/", {"name": "  "})
        assert response.status_code == 400
        assert 'id="id_name-errors"><li>This field is required.' in response.content.decode()
        assert not ApiToken.objects.exists()

    def test_revoke__stops_the_token_and_says_so(self, alice):
        token, raw = token_create(user=alice, name="old")
        url = f"/accounts/settings/tokens/{token.pk}/revoke/"
        response = signed_in(alice).post(url, follow=True)
        token.refresh_from_db()
        assert token.revoked_at is not None and user_for_token(raw) is None
        page = response.content.decode()
        assert "Token old (" in page and "is revoked" in page and "revoked 20" in page

    def test_revoke__another_users_token_is_404_and_keeps_working(self, alice):
        bob = make_user("bob")
        token, raw = token_create(user=bob, name="bobs")
        response = signed_in(alice).post(f"/accounts/settings/tokens/{token.pk}/revoke/")
        assert response.status_code == 404
        assert user_for_token(raw) == bob

    def test_token_posts_without_csrf__are_refused(self, alice):
        token, raw = token_create(user=alice, name="keep")
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        assert client.post("/accounts/settings/tokens/", {"name": "x"}).status_code == 403
        assert client.post(f"/accounts/settings/tokens/{token.pk}/revoke/").status_code == 403
        assert ApiToken.objects.count() == 1 and user_for_token(raw) == alice

    def test_anonymous__token_posts_go_to_login(self, client, alice):
        token, _ = token_create(user=alice, name="keep")
        for url in ("/accounts/settings/tokens/", f"/accounts/settings/tokens/{token.pk}/revoke/"):
            assert client.post(url, {"name": "x"})["Location"].startswith("/accounts/login/")
        assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 1


class TestNavigation:
    def test_home__links_every_page_and_staff_see_the_dashboard(self, alice):
        staff = make_user("operator", staff=True)
        home = signed_in(alice).get("/").content.decode()
        for href in ("/analyses/", "/analyses/new/", "/accounts/settings/", "/health", "/admin/"):
            assert f'href="{href}"' in home, href
        assert 'href="/operations/"' not in home
        assert 'href="/operations/"' in signed_in(staff).get("/").content.decode()

    def test_anonymous_home__offers_to_log_in(self, client):
        assert 'href="/accounts/login/"' in client.get("/").content.decode()
