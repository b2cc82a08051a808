"""Shared fixtures. Tests use a real database and real servers on loopback, not mocks."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command


def pytest_collection_modifyitems(config, items):
    uses_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip_postgres = pytest.mark.skip(
        reason="needs PostgreSQL: set DATABASE_URL=postgres://... (CI runs this with it set)"
    )
    skip_redis = pytest.mark.skip(
        reason="needs Redis: set REDIS_URL=redis://... (CI runs this with it set)"
    )
    for item in items:
        if "postgres" in item.keywords and not uses_postgres:
            item.add_marker(skip_postgres)
        if "redis" in item.keywords and not settings.REDIS_URL:
            item.add_marker(skip_redis)


@pytest.fixture(scope="session", autouse=True)
def collected_static_files():
    """Debug is off in tests, so pages need the manifest that collectstatic writes."""
    call_command("collectstatic", interactive=False, verbosity=0)
