"""The health views: liveness, readiness, the full report (two formats), django-health-check's
own page, and a flood of probes in process; anonymous callers never see exception text."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reliability.controls import breaker_reset
from tests.clocks import FakeClock
from tests.reliability.health.standins import (
    API_KEY,
    SECRET,
    CrashingCheck,
    LeakyFailingCheck,
    ai_breaker,
    fail_ai_calls,
)


@pytest.mark.django_db(transaction=True)
class TestLiveView:
    def test_live__answers_without_any_database_query_even_for_a_logged_in_user(
        self, staff_client, django_assert_num_queries
    ):
        with django_assert_num_queries(0):
            response = staff_client.get("/health/live")
        assert response.status_code == 200
        assert response.json() == {"alive": True}
        assert "no-cache" in response["Cache-Control"]
        # The same client on an ordinary page does hit the database (session and user):
        with CaptureQueriesContext(connection) as queries:
            staff_client.get("/")
        assert len(queries) >= 1

    def test_live__answers_any_host_header(self, client):
        response = client.get("/health/live", HTTP_HOST="10.1.2.3:8000")
        assert response.status_code == 200

    def test_live__refuses_post(self, client):
        assert client.post("/health/live").status_code == 405


@pytest.mark.django_db(transaction=True)
class TestReadyView:
    def test_ready__200_when_the_critical_components_are_healthy(self, client):
        response = client.get("/health/ready")
        body = response.json()
        assert response.status_code == 200
        assert body["ready"] is True and body["failed"] == {}
        assert body["status"] == "degraded"  # no task worker: degraded, still ready

    def test_ready__503_naming_the_disk_when_it_is_full(self, client, settings):
        settings.EIDOLON_HEALTH_DISK_MAX_USED_PERCENT = 0.0  # any real volume is "full"
        response = client.get("/health/ready")
        body = response.json()
        assert response.status_code == 503
        assert list(body["failed"]) == ["disk"]
        assert body["failed"]["disk"].startswith("data volume nearly full")
        assert settings.EIDOLON_HEALTH_DISK_PATH not in response.content.decode()

    def test_ready__staff_see_details_of_the_failure(self, staff_client, with_checks):
        with_checks(LeakyFailingCheck())
        body = staff_client.get("/health/ready").json()
        assert body["failed"] == {"leaky": "the leaky component does not answer"}
        assert "db-internal.example" in body["details"]["leaky"]


@pytest.mark.django_db(transaction=True)
class TestHealthView:
    def test_health__the_seed_format(self, client):
        response = client.get("/health")
        body = response.json()
        assert response.status_code == 200
        assert body["status"] in {"healthy", "degraded", "unhealthy"}
        assert dt.datetime.fromisoformat(body["timestamp"])
        database = body["components"]["database"]
        assert database["healthy"] is True and database["status"] == "healthy"
        assert database["latency_ms"] >= 0
        assert dt.datetime.fromisoformat(database["last_check"])
        assert "migrations applied" in database["message"]
        assert "detail" not in database

    def test_health__degraded_is_200_unhealthy_is_503(self, client, with_checks):
        with_checks(CrashingCheck())  # non-critical failure
        assert client.get("/health").json()["status"] == "degraded"
        assert client.get("/health").status_code == 200
        with_checks(LeakyFailingCheck())  # critical failure, on a fresh runner
        response = client.get("/health")
        assert (response.status_code, response.json()["status"]) == (503, "unhealthy")

    def test_health__health_json_when_asked(self, client):
        response = client.get("/health", HTTP_ACCEPT="application/health+json")
        body = response.json()
        assert response["Content-Type"] == "application/health+json"
        assert body["status"] == "warn"  # degraded: no worker
        database = body["checks"]["database:responseTime"][0]
        assert database["status"] == "pass" and database["observedUnit"] == "ms"
        workers = body["checks"]["workers:responseTime"][0]
        assert workers["status"] == "warn" and "no task worker" in workers["output"]
        plain = client.get("/health", HTTP_ACCEPT="application/json")
        assert plain["Content-Type"] == "application/json"

    def test_health__ai_degraded_with_the_breaker_open_healthy_after_reset(
        self, client, install_health_runner
    ):
        clock = FakeClock(start=time.time())
        fail_ai_calls(clock, 3)
        body = client.get("/health").json()
        assert body["components"]["ai_api"]["status"] == "degraded"
        assert body["ready"] is True  # an open AI breaker never makes the service unready
        assert client.get("/health/ready").status_code == 200
        breaker_reset(name=ai_breaker(), actor="ops")
        install_health_runner()  # no cached report
        assert client.get("/health").json()["components"]["ai_api"]["status"] == "healthy"

    def test_health__anonymous_output_has_no_exception_text(self, client, with_checks):
        with_checks(LeakyFailingCheck(), CrashingCheck())
        for url in ("/health", "/health/ready", "/ht/?format=json", "/ht/"):
            text = client.get(url, HTTP_HOST="localhost").content.decode()
            for leak in (SECRET, API_KEY, "db-internal.example", "/srv/eidolon", "RuntimeError"):
                assert leak not in text, (url, leak)
        health_json = client.get("/health", HTTP_ACCEPT="application/health+json").content.decode()
        assert "db-internal.example" not in health_json and SECRET not in health_json

    def test_health__staff_see_the_exception_text_with_secrets_redacted(
        self, staff_client, with_checks
    ):
        with_checks(LeakyFailingCheck(), CrashingCheck())
        body = staff_client.get("/health").json()
        text = str(body)
        assert (
            "ConnectionError: could not connect to postgres://eidolon:"
            in (body["components"]["leaky"]["detail"])
        )
        assert "RuntimeError" in body["components"]["crashing"]["detail"]
        assert "db-internal.example" in text
        assert SECRET not in text and API_KEY not in text

    def test_health__a_non_staff_user_sees_no_details(self, client, django_user_model, with_checks):
        client.force_login(django_user_model.objects.create_user(username="dev", password="x"))
        with_checks(LeakyFailingCheck())
        assert "db-internal.example" not in client.get("/health").content.decode()


@pytest.mark.django_db(transaction=True)
class TestHealthCheckLibraryView:
    def test_ht__html_json_and_openmetrics_over_the_same_round(self, client, health_runner):
        html = client.get("/ht/", HTTP_HOST="localhost")
        json_ = client.get("/ht/?format=json", HTTP_HOST="localhost")
        metrics = client.get("/ht/?format=openmetrics", HTTP_HOST="localhost")
        assert html.status_code == 200 and "DatabaseCheck" in html.content.decode()
        assert json_.json()["DatabaseCheck(alias='default')"] == "OK"
        assert json_.json()["WorkerCheck()"].startswith("Warning: no task worker")
        assert 'django_health_check_status{check="DatabaseCheck",alias="default"} 1' in (
            metrics.content.decode()
        )
        assert health_runner.rounds == 1  # three views, one round within the cache interval

    def test_ht__500_only_when_unhealthy(self, client, with_checks):
        assert client.get("/ht/?format=json", HTTP_HOST="localhost").status_code == 200
        with_checks(LeakyFailingCheck())  # on a fresh runner
        assert client.get("/ht/?format=json", HTTP_HOST="localhost").status_code == 500


@pytest.mark.django_db(transaction=True)
class TestProbeFloodInProcess:
    async def test_ready__500_concurrent_probes_run_at_most_one_round_per_interval(
        self, settings, health_runner
    ):
        from eidolon_site.asgi import application

        settings.EIDOLON_HEALTH_CACHE_SECONDS = 0.2
        transport = httpx2.ASGITransport(app=application)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            started = time.monotonic()
            responses = await asyncio.gather(*(http.get("/health/ready") for _ in range(500)))
            duration = time.monotonic() - started
        assert [r.status_code for r in responses] == [200] * 500
        assert 1 <= health_runner.rounds <= duration / 0.2 + 1, (health_runner.rounds, duration)
