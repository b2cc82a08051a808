"""Shared fixtures. Tests use a real database and real servers on loopback, not mocks."""

from __future__ import annotations

import shutil

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from eidolon_site.status_strip import recent_public_strip


def pytest_collection_modifyitems(config, items):
    uses_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip_postgres = pytest.mark.skip(
        reason="needs PostgreSQL: set DATABASE_URL=postgres://... (CI runs this with it set)"
    )
    skip_redis = pytest.mark.skip(
        reason="needs Redis: set REDIS_URL=redis://... (CI runs this with it set)"
    )
    skip_haproxy = pytest.mark.skip(
        reason="needs HAProxy: apt-get install haproxy (.ci/run installs it)"
    )
    has_haproxy = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    for item in items:
        if "haproxy" in item.keywords and not has_haproxy:
            item.add_marker(skip_haproxy)
        if "postgres" in item.keywords and not uses_postgres:
            item.add_marker(skip_postgres)
        if "redis" in item.keywords and not settings.REDIS_URL:
            item.add_marker(skip_redis)


@pytest.fixture(scope="session", autouse=True)
def collected_static_files():
    """Debug is off in tests, so pages need the manifest that collectstatic writes."""
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def fresh_public_status_strip():
    """Each test reads the home page's strip afresh (a process keeps it a couple of seconds)."""
    recent_public_strip.clear()


@pytest.fixture(scope="session", autouse=True)
def disconnect_other_sessions_before_dropping_the_test_database(django_db_setup, django_db_blocker):
    """Threads (``sync_to_async``, ``asyncio.to_thread``) and child processes keep their own
    connections; PostgreSQL refuses to drop a database that still has sessions."""
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            # pytest-django drops the database next, over a new connection with these options:
            # the service's statement timeout (5 s) is for requests, and DROP DATABASE on a busy
            # machine can take longer, leaving the database behind for the next run.
            connection.settings_dict["OPTIONS"]["options"] = "-c statement_timeout=0"
