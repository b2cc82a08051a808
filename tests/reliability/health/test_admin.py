"""The health pages of the admin: read-only, for staff, with uptime, timelines and details."""

from __future__ import annotations

import asyncio

import pytest

from reliability.health.heartbeats import worker_heartbeat
from reliability.health.history import record_report
from reliability.health.runner import HealthRunner
from reliability.models import HealthComponentState, HealthStatus
from tests.reliability.health.standins import SECRET, LeakyFailingCheck, SleepingCheck

ADMIN_PAGES = (
    "/admin/reliability/healthcomponentstate/",
    "/admin/reliability/healthtransition/",
    "/admin/reliability/healthsample/",
    "/admin/reliability/workerheartbeat/",
)


@pytest.mark.django_db(transaction=True)
class TestHealthAdmin:
    @pytest.fixture
    def history(self):
        report = asyncio.run(
            HealthRunner(
                checks_factory=lambda: [LeakyFailingCheck(), SleepingCheck(seconds=0)]
            ).report(max_age=0)
        )
        record_report(report=report)
        worker_heartbeat(worker_id="w-admin", host="host-a", pid=42)

    def test_pages__render_for_staff(self, admin_client, history):
        for url in ADMIN_PAGES:
            assert admin_client.get(url).status_code == 200, url
        changelist = admin_client.get(ADMIN_PAGES[0]).content.decode()
        assert "<svg" in changelist and "last 24 h" in changelist
        assert "non-critical" in changelist and "critical" in changelist
        leaky = HealthComponentState.objects.get(name="leaky")
        page = admin_client.get(f"{ADMIN_PAGES[0]}{leaky.pk}/change/").content.decode()
        assert "the leaky component does not answer" in page
        assert "unknown" in page and "unhealthy" in page  # its transition
        assert "db-internal.example" in page  # staff detail, redacted
        assert SECRET not in page

    def test_pages__redirect_anonymous_users_to_login(self, client, history):
        for url in ADMIN_PAGES:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/")

    def test_history__is_read_only(self, admin_client, history):
        leaky = HealthComponentState.objects.get(name="leaky")
        assert admin_client.get(f"{ADMIN_PAGES[1]}add/").status_code == 403
        response = admin_client.post(f"{ADMIN_PAGES[0]}{leaky.pk}/change/", {"status": "healthy"})
        assert response.status_code == 403
        assert HealthComponentState.objects.get(name="leaky").status == HealthStatus.UNHEALTHY
