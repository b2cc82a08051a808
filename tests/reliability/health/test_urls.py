"""The health URLs of a real ASGI server (daphne) on the test database, in real processes.

PostgreSQL is reached through a TCP proxy this test runs, which it can close (refuse new
connections, drop existing ones) and reopen. On SQLite the equivalent is a database that stops
answering: another connection holds an exclusive lock on the file.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time

import httpx2
import pytest
from django.db import connection

from reliability.models import HealthTransition
from tests.processes import (
    ManagedProcess,
    database_url_of_test_database,
    start_daphne,
    subprocess_environment,
)
from tests.tcp_proxy import DatabaseProxy

READY_WITHIN = 2.5  # seconds: the acceptance bound for noticing a dead database


def start_server(**env: str) -> tuple[ManagedProcess, str]:
    return start_daphne(subprocess_environment(**env))


def get(base: str, path: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = httpx2.get(base + path, timeout=10.0)
    return response, time.monotonic() - started


def wait_for_status(base: str, path: str, status: int, *, within: float) -> float:
    """Poll until ``path`` answers ``status``; return how long it took."""
    started = time.monotonic()
    while True:
        response, _ = get(base, path)
        if response.status_code == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(
                f"{path} still {response.status_code} after {within} s: {response.text}"
            )
        time.sleep(0.05)


def wait_for_history(*, component: str, transitions: int, within: float) -> list[tuple]:
    deadline = time.monotonic() + within
    while True:
        rows = list(
            HealthTransition.objects.filter(component__name=component)
            .order_by("created_at", "id")
            .values_list("from_status", "to_status", "created_at", "message")
        )
        if len(rows) >= transitions or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def probe_outage(base: str) -> dict:
    """From the moment the database went away: poll readiness until it answers 503."""
    started = time.monotonic()
    slowest = 0.0
    while True:
        response, took = get(base, "/health/ready")
        slowest = max(slowest, took)
        if response.status_code == 503:
            live, live_took = get(base, "/health/live")
            return {
                "time_to_503": time.monotonic() - started,
                "slowest_probe": slowest,
                "body": response.json(),
                "live": (live.status_code, live.json(), live_took),
            }
        if time.monotonic() - started > 10:
            raise AssertionError(f"readiness never failed: {response.text}")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
class TestReadinessWhileTheDatabaseIsDown:
    @pytest.mark.postgres
    def test_ready__503_within_2_5_s_on_a_closed_database_port_and_200_once_it_returns(self):
        proxy = DatabaseProxy.in_front_of_the_test_database()
        url = database_url_of_test_database(host="127.0.0.1", port=proxy.port)
        server, base = start_server(DATABASE_URL=url)
        monitor = ManagedProcess.manage(
            "health_monitor", "--interval", "0.5", env=subprocess_environment(DATABASE_URL=url)
        )
        try:
            wait_for_status(base, "/health/ready", 200, within=20)
            monitor.wait_for(lambda line: '"health_changed"' in line and '"database"' in line)

            # The server's database sessions are killed (a failover): the service reconnects.
            terminated = proxy.terminate_sessions()
            time.sleep(1.1)  # past the cache interval: the next probe checks again
            after_terminate, _ = get(base, "/health/ready")

            proxy.close()  # the database's port is closed: refused, existing sessions dropped
            closed_at = time.monotonic()
            outage = probe_outage(base)
            time.sleep(max(0.0, 3.0 - (time.monotonic() - closed_at)))  # a 3 s outage

            proxy.restore()
            outage_seconds = time.monotonic() - closed_at
            recovery = wait_for_status(base, "/health/ready", 200, within=10)
            still_running = server.process.poll() is None
            # The monitor could not write during the outage; it writes what it saw once it can.
            history = wait_for_history(component="database", transitions=3, within=15)
        finally:
            server.stop()
            monitor.stop()
            proxy.close()

        assert terminated >= 1
        assert after_terminate.status_code == 200, after_terminate.text
        assert outage["time_to_503"] <= READY_WITHIN, outage
        assert outage["slowest_probe"] <= READY_WITHIN, outage
        assert outage["body"]["failed"] == {"database": "the database does not answer"}
        assert outage["live"][:2] == (200, {"alive": True}) and outage["live"][2] < 1.0
        assert recovery < 5.0 and still_running  # back without a restart
        assert [(f, t) for f, t, _, _ in history] == [
            ("unknown", "healthy"),
            ("healthy", "unhealthy"),
            ("unhealthy", "healthy"),
        ], history
        assert history[1][3] == "the database does not answer"
        down_for = (history[2][2] - history[1][2]).total_seconds()
        assert outage_seconds - 1.5 <= down_for <= outage_seconds + 1.5, (down_for, outage_seconds)

    def test_ready__503_while_the_sqlite_database_does_not_answer_and_200_after(self, tmp_path):
        db = connection.settings_dict
        if not db["ENGINE"].endswith("sqlite3"):
            pytest.skip("the SQLite variant of the outage (PostgreSQL has its own test)")
        # The server gets a copy of the migrated test database to itself: an exclusive lock
        # needs every other connection closed, and this process keeps some in its threads.
        copy = tmp_path / "eidolon.sqlite3"
        with sqlite3.connect(str(db["NAME"])) as source, sqlite3.connect(str(copy)) as target:
            source.backup(target)
        server, base = start_server(DATABASE_URL=f"sqlite:///{copy}")
        lock = None
        try:
            wait_for_status(base, "/health/ready", 200, within=20)
            lock = sqlite3.connect(str(copy), timeout=5, isolation_level=None)
            lock.execute("PRAGMA locking_mode=EXCLUSIVE")
            lock.execute("BEGIN EXCLUSIVE")
            lock.execute("SELECT count(*) FROM django_migrations").fetchone()
            outage = probe_outage(base)
            lock.close()
            lock = None
            recovery = wait_for_status(base, "/health/ready", 200, within=10)
            still_running = server.process.poll() is None
        finally:
            if lock is not None:
                lock.close()
            server.stop()

        # A database that hangs is noticed after its 1 s time budget, plus at most one cache
        # interval (1 s) of an earlier answer; no probe waits longer than the budget.
        assert outage["time_to_503"] <= READY_WITHIN, outage
        assert outage["slowest_probe"] <= READY_WITHIN, outage
        assert outage["body"]["failed"] == {"database": "no answer within 1 s"}
        assert outage["live"][:2] == (200, {"alive": True}) and outage["live"][2] < 1.0
        assert recovery < 5.0 and still_running


def rounds_run(base: str) -> float:
    text = httpx2.get(base + "/metrics", timeout=10).text
    match = re.search(r"^eidolon_health_check_rounds_total (\S+)$", text, re.MULTILINE)
    assert match, "eidolon_health_check_rounds_total is not exported"
    return float(match.group(1))


@pytest.mark.django_db(transaction=True)
class TestProbeFlood:
    def test_ready__500_concurrent_probes_run_at_most_one_round_per_interval(self):
        interval = 0.25
        server, base = start_server(EIDOLON_HEALTH_CACHE_SECONDS=str(interval))
        try:
            wait_for_status(base, "/health/ready", 200, within=20)
            before = rounds_run(base)

            async def flood() -> tuple[list[int], float]:
                limits = httpx2.Limits(max_connections=500, max_keepalive_connections=0)
                async with httpx2.AsyncClient(limits=limits, timeout=30) as http:
                    started = time.monotonic()
                    responses = await asyncio.gather(
                        *(http.get(base + "/health/ready") for _ in range(500))
                    )
                    return [r.status_code for r in responses], time.monotonic() - started

            statuses, duration = asyncio.run(flood())
            after = rounds_run(base)
        finally:
            server.stop()
        rounds = after - before
        assert statuses == [200] * 500
        assert 1 <= rounds <= duration / interval + 1, (rounds, duration)
