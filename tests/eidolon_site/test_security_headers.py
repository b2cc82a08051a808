"""Security headers, cookies and production defaults (issue 14): nosniff, frame denial and the
referrer policy on every response; HSTS, secure cookies and the HTTPS redirect behind
EIDOLON_HTTPS (a real daphne); /metrics limited to local and private networks in production
unless configured; the API key read from a file."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.analyses.page_support import PASSWORD, make_analysis, make_card
from tests.processes import run_manage, start_daphne, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)


def pages_of(client: Client, user: User) -> list[str]:
    analysis = make_analysis(user)
    card = make_card(analysis)
    return [
        "/",
        "/accounts/login/",
        "/analyses/",
        f"/analyses/{analysis.pk}/",
        f"/analyses/{analysis.pk}/cards/{card.pk}/",
        "/accounts/settings/",
        "/admin/",
        "/api/analyses",
        "/api/docs",
        "/no-such-page/",
    ]


class TestEveryResponse:
    def test_nosniff_frame_denial_and_referrer_policy(self):
        user = User.objects.create_superuser("root", password=PASSWORD)
        client = Client()
        client.force_login(user)
        for url in pages_of(client, user):
            response = client.get(url)
            assert response["X-Content-Type-Options"] == "nosniff", url
            assert response["X-Frame-Options"] == "DENY", url
            assert response["Referrer-Policy"] == "same-origin", url
            if url.startswith(("/admin/", "/api/")):
                continue  # exempt (inline code) or not HTML
            assert "frame-ancestors 'none'" in response["Content-Security-Policy"], url

    def test_plain_http__no_hsts_and_no_secure_cookies(self, client):
        response = client.get("/accounts/login/")
        assert "Strict-Transport-Security" not in response
        assert not response.cookies["csrftoken"]["secure"]


def _opener() -> urllib.request.OpenerDirector:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))


def _fetch(opener, url: str, *, data: dict | None = None, headers: dict | None = None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        return opener.open(request, timeout=15)
    except urllib.error.HTTPError as error:  # 3xx and 4xx: the response is what we check
        return error


class TestBehindHttps:
    def test_hsts_secure_cookies_and_the_redirect(self):
        User.objects.create_user("alice", password=PASSWORD)
        server, base = start_daphne(
            subprocess_environment(EIDOLON_HTTPS="true", EIDOLON_HSTS_SECONDS="600")
        )
        try:
            opener = _opener()
            plain = _fetch(opener, f"{base}/accounts/login/")
            assert plain.status == 301
            assert plain.headers["Location"].startswith("https://127.0.0.1:")
            assert _fetch(opener, f"{base}/health/live").status == 200  # probes stay on HTTP

            https = {"X-Forwarded-Proto": "https"}
            page = _fetch(opener, f"{base}/accounts/login/", headers=https)
            assert page.status == 200
            assert page.headers["Strict-Transport-Security"] == (
                "max-age=600; includeSubDomains; preload"
            )
            csrf_cookie = next(c for c in page.headers.get_all("Set-Cookie") if "csrftoken" in c)
            assert "Secure" in csrf_cookie and "HttpOnly" in csrf_cookie
            token = csrf_cookie.split("csrftoken=", 1)[1].split(";", 1)[0]
            login = _fetch(
                opener,
                f"{base}/accounts/login/",
                data={"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token},
                headers={
                    **https,
                    "Cookie": f"csrftoken={token}",
                    "Referer": f"https://{base.removeprefix('http://')}/accounts/login/",
                },
            )
            assert login.status == 302, login.read()[:300]
            session = next(c for c in login.headers.get_all("Set-Cookie") if "sessionid" in c)
            assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session
        finally:
            server.stop()


def _setting(name: str, **env: str) -> str:
    code = f"from django.conf import settings; print(settings.{name})"
    result = run_manage("shell", "-c", code, env=subprocess_environment(**env))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


class TestProductionDefaults:
    def test_metrics_without_settings__local_and_private_networks_only(self, client):
        outside = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
        assert outside.status_code == 403
        for address in ("127.0.0.1", "10.1.2.3", "192.168.0.5", "::1"):
            assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200, address

    def test_metrics_settings__debug_or_configured_replace_the_default(self):
        assert _setting("EIDOLON_METRICS_ALLOWED_IPS", EIDOLON_DEBUG="true") == "[]"
        configured = _setting("EIDOLON_METRICS_ALLOWED_IPS", EIDOLON_METRICS_BASIC_AUTH="p:s")
        assert configured == "[]"  # credentials alone guard it
        assert _setting(
            "EIDOLON_METRICS_ALLOWED_IPS", EIDOLON_METRICS_ALLOWED_IPS="0.0.0.0/0,::/0"
        ) == str(["0.0.0.0/0", "::/0"])

    def test_api_key_from_a_file(self, tmp_path):
        key = tmp_path / "key"
        key.write_text("sk-ant-from-a-file\n")
        env = {"ANTHROPIC_API_KEY": "", "ANTHROPIC_API_KEY_FILE": str(key)}
        assert _setting("ANTHROPIC_API_KEY == 'sk-ant-from-a-file'", **env) == "True"
        missing = run_manage(
            "check",
            env=subprocess_environment(ANTHROPIC_API_KEY="", ANTHROPIC_API_KEY_FILE="/nope/key"),
        )
        assert missing.returncode != 0
        assert "ANTHROPIC_API_KEY_FILE: cannot read /nope/key" in missing.stderr
