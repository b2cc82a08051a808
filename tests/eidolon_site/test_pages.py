"""The pages a new user sees first."""

from __future__ import annotations

import pytest

from reliability.breaker import admit


@pytest.mark.django_db
class TestHomePage:
    def test_home__says_what_eidolon_is_and_links_to_the_admin(self, client):
        response = client.get("/")
        body = response.content.decode()
        assert response.status_code == 200
        assert "analyses Python codebases function by function" in body
        assert 'href="/admin/"' in body

    def test_admin_login__renders(self, client):
        response = client.get("/admin/login/")
        assert response.status_code == 200
        assert "csrfmiddlewaretoken" in response.content.decode()

    def test_admin__redirects_anonymous_users_to_login(self, client):
        response = client.get("/admin/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_metrics__exposes_prometheus_text_and_shared_breaker_state(self, client):
        admit("anthropic")
        client.get("/")
        response = client.get("/metrics")
        body = response.content.decode()
        assert response.status_code == 200
        assert "django_http_requests_total_by_method_total" in body
        assert 'eidolon_breaker_state{breaker="anthropic",state="closed"} 1.0' in body
        assert 'eidolon_breaker_state{breaker="anthropic",state="open"} 0.0' in body
