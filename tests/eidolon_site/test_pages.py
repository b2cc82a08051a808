"""The pages a new user sees first."""

from __future__ import annotations

import pytest


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

    def test_metrics__exposes_prometheus_text(self, client):
        client.get("/")
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "django_http_requests_total_by_method_total" in response.content.decode()
