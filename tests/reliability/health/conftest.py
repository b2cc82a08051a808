"""Fixtures of the health tests: every test gets a fresh process runner (no cached report, no
rounds counted), installed where the probes and ``/ht/`` find it."""

from __future__ import annotations

import pytest
from django.apps import apps

from reliability.health.checks import build_checks
from reliability.health.runner import HealthRunner
from tests.clocks import FakeClock


@pytest.fixture
def install_health_runner(monkeypatch):
    """``install(**options)``: a new ``HealthRunner`` becomes this process's runner (the one
    ``process_runner()`` returns) until the test ends."""
    config = apps.get_app_config("reliability")

    def install(**options) -> HealthRunner:
        runner = HealthRunner(**options)
        monkeypatch.setattr(config, "health_runner", runner)
        return runner

    return install


@pytest.fixture(autouse=True)
def health_runner(install_health_runner) -> HealthRunner:
    """The process runner every health test starts with: fresh, with the real checks."""
    return install_health_runner()


@pytest.fixture
def with_checks(install_health_runner):
    """``with_checks(*extra)``: a fresh process runner whose rounds add ``extra`` checks."""

    def install(*extra) -> HealthRunner:
        return install_health_runner(checks_factory=lambda: [*build_checks(), *extra])

    return install


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="operator", password="x", is_staff=True)
    client.force_login(user)
    return client
