"""Health checks, their aggregation, the shared runner and the health views, on a real database.

Time-dependent checks take an injectable clock and the disk check an injectable reading; checks
that stand in for a broken component are real ``HealthCheck`` subclasses handed to the runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx2
import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from reliability.breaker import admit, record
from reliability.clock import FakeClock
from reliability.controls import breaker_force_open, breaker_reset
from reliability.health import (
    RUNNER,
    AIAPICheck,
    CacheCheck,
    ChannelLayerCheck,
    ComponentCheck,
    DatabaseCheck,
    DiskCheck,
    DiskUsage,
    HealthRunner,
    WorkerCheck,
    build_checks,
    error_detail,
    expected_migrations,
    pending_migrations,
    record_report,
    worker_heartbeat,
    worker_stopped,
)
from reliability.models import (
    BreakerState,
    CircuitBreaker,
    HealthComponentState,
    HealthStatus,
    WorkerHeartbeat,
)
from reliability.outcomes import BreakerVerdict
from tests.processes import ManagedProcess, free_port, subprocess_environment

GB = 1024**3
SECRET = "hunter2-s3cret-Passw0rd"
API_KEY = "sk-ant-api03-" + "Z" * 40
SECRET_ERROR = (
    f"could not connect to postgres://eidolon:{SECRET}@db-internal.example:5432/eidolon "
    f"from /srv/eidolon/var (api_key={API_KEY})"
)


@pytest.fixture(autouse=True)
def fresh_runner():
    """The process-wide runner caches reports: every test starts and ends with none."""
    factory = RUNNER.checks_factory
    RUNNER.reset()
    yield RUNNER
    RUNNER.checks_factory = factory
    RUNNER.reset()


@pytest.fixture
def clock():
    return FakeClock()


def reading(*, used_gb: float, free_gb: float):
    usage = DiskUsage(
        total=int((used_gb + free_gb) * GB), used=int(used_gb * GB), free=int(free_gb * GB)
    )
    return lambda path: usage


# --- stand-in checks (real HealthCheck subclasses) -------------------------------------------


@dataclasses.dataclass
class SleepingCheck(ComponentCheck):
    """Healthy after ``seconds``; async or in a thread."""

    component: ClassVar[str] = "sleeper"
    seconds: float = 0.3
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=5), repr=False)

    async def run(self) -> None:
        await asyncio.sleep(self.seconds)


@dataclasses.dataclass
class OtherSleepingCheck(SleepingCheck):
    component: ClassVar[str] = "other_sleeper"


@dataclasses.dataclass
class WarningCheck(ComponentCheck):
    component: ClassVar[str] = "warned"
    critical: ClassVar[bool] = True

    def run(self) -> None:
        raise ServiceWarning("running low on something")


@dataclasses.dataclass
class ThreadSleepingCheck(ComponentCheck):
    component: ClassVar[str] = "thread_sleeper"
    seconds: float = 0.3
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=5), repr=False)

    def run(self) -> None:
        time.sleep(self.seconds)


@dataclasses.dataclass
class BlockedCheck(ComponentCheck):
    """A synchronous check stuck until ``release`` is set (a hung database driver)."""

    component: ClassVar[str] = "blocked"
    critical: ClassVar[bool] = True
    release: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    started: list = dataclasses.field(default_factory=list, repr=False)
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=0.2), repr=False)

    def run(self) -> None:
        self.started.append(time.monotonic())
        self.release.wait(10)
        self.summary = "released"


@dataclasses.dataclass
class LeakyFailingCheck(ComponentCheck):
    """Fails with a public message; the cause carries hosts, paths and secrets."""

    component: ClassVar[str] = "leaky"
    critical: ClassVar[bool] = True

    def run(self) -> None:
        try:
            raise ConnectionError(SECRET_ERROR)
        except ConnectionError as error:
            raise ServiceUnavailable("the leaky component does not answer") from error


@dataclasses.dataclass
class CrashingCheck(ComponentCheck):
    """Raises something that is not a health-check exception, with secrets in its text."""

    component: ClassVar[str] = "crashing"

    def run(self) -> None:
        raise RuntimeError(SECRET_ERROR)


@dataclasses.dataclass
class CountingCheck(ComponentCheck):
    component: ClassVar[str] = "counting"
    calls: ClassVar[int] = 0

    async def run(self) -> None:
        type(self).calls += 1
        await asyncio.sleep(0.05)


# --- checks ------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestDatabaseCheck:
    def test_run__healthy_when_select_1_answers_and_migrations_are_applied(self):
        check = DatabaseCheck()
        check.run()
        assert "SELECT 1" in check.summary and "migrations applied" in check.summary

    def test_run__unhealthy_naming_a_migration_that_is_not_applied(self):
        MigrationRecorder(connection).migration_qs.filter(
            app="reliability", name="0003_health"
        ).delete()
        with pytest.raises(ServiceUnavailable) as caught:
            DatabaseCheck().run()
        assert caught.value.message.startswith("1 migration(s) not applied")
        assert "reliability.0003_health" in error_detail(caught.value)

    def test_pending_migrations__are_the_ones_on_disk_not_recorded(self):
        everything = set(expected_migrations())
        assert pending_migrations(applied=everything) == []
        missing = {("reliability", "0003_health"), ("auth", "0001_initial")}
        assert pending_migrations(applied=everything - missing) == sorted(missing)


class TestDiskCheck:
    def test_run__healthy_below_both_thresholds(self):
        check = DiskCheck(path="/data", usage=reading(used_gb=50, free_gb=50))
        check.run()
        assert check.summary == "50.0 % used, 50.00 GB free"

    @pytest.mark.parametrize(
        ("used_gb", "free_gb", "healthy"),
        [
            (89.9, 10.1, True),  # 89.9 % used
            (90.0, 10.0, False),  # 90 % used: the threshold itself is unhealthy
            (95.0, 5.0, False),
            (1.0, 1.0, False),  # 1 GB free: at the free-space floor
            (1.0, 1.01, True),
        ],
    )
    def test_run__thresholds_at_the_seed_defaults(self, used_gb, free_gb, healthy):
        check = DiskCheck(
            path="/data",
            max_used_percent=90.0,
            min_free_gb=1.0,
            usage=reading(used_gb=used_gb, free_gb=free_gb),
        )
        if healthy:
            check.run()
        else:
            with pytest.raises(ServiceUnavailable, match="data volume nearly full"):
                check.run()

    def test_thresholds__come_from_settings(self, settings):
        settings.EIDOLON_HEALTH_DISK_MAX_USED_PERCENT = 50.0
        settings.EIDOLON_HEALTH_DISK_MIN_FREE_GB = 0.5
        with pytest.raises(ServiceUnavailable, match=r"limits: 50 % used, 0.5 GB free"):
            DiskCheck(usage=reading(used_gb=60, free_gb=40)).run()
        DiskCheck(usage=reading(used_gb=40, free_gb=60)).run()

    def test_run__public_message_has_no_path_staff_detail_has_it(self):
        check = DiskCheck(path="/srv/secret-volume", usage=reading(used_gb=99, free_gb=0.5))
        with pytest.raises(ServiceUnavailable) as caught:
            check.run()
        assert "/srv/secret-volume" not in str(caught.value)
        assert "/srv/secret-volume" not in repr(check)
        assert "/srv/secret-volume" in error_detail(caught.value)

    def test_run__unreadable_volume_is_unhealthy(self):
        def unreadable(path: str) -> DiskUsage:
            raise PermissionError(13, "Permission denied", path)

        with pytest.raises(ServiceUnavailable, match="could not be read") as caught:
            DiskCheck(path="/srv/data", usage=unreadable).run()
        assert "PermissionError" in error_detail(caught.value)
        assert "/srv/data" not in caught.value.message

    def test_run__a_directory_not_created_yet_is_measured_on_its_parent_volume(self, tmp_path):
        measured = []

        def read(path: str) -> DiskUsage:
            measured.append(path)
            return DiskUsage(total=10 * GB, used=GB, free=9 * GB)

        DiskCheck(path=str(tmp_path / "not" / "yet"), usage=read).run()
        assert measured == [str(tmp_path)]

    def test_default_path__is_the_volume_that_holds_the_data(self):
        db = settings.DATABASES["default"]
        if db["ENGINE"].endswith("sqlite3"):
            expected = str(Path(db["NAME"]).parent)
        else:
            expected = str(getattr(settings, "EIDOLON_WORKSPACE_ROOT", settings.VAR_DIR))
        assert DiskCheck().path == expected
        assert DiskCheck().path != "/"


class TestCacheCheck:
    def test_run__set_get_delete_round_trip(self):
        check = CacheCheck()
        check.run()
        assert check.summary == "set / get / delete round trip"

    def test_run__unhealthy_when_the_cache_server_is_down(self, settings):
        settings.CACHES = {
            **settings.CACHES,
            "down": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
            },
        }
        with pytest.raises(ServiceUnavailable, match="the cache does not answer") as caught:
            CacheCheck(alias="down").run()
        assert SECRET not in str(caught.value)
        assert "ConnectionError" in error_detail(caught.value)


class TestChannelLayerCheck:
    async def test_run__in_memory_layer_is_skipped_and_does_not_gate_readiness(self, settings):
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        check = ChannelLayerCheck()
        await check.run()
        assert "in-memory" in check.summary
        assert check.gates_readiness() is False

    @pytest.mark.redis
    async def test_run__shared_layer_round_trip(self):
        check = ChannelLayerCheck()
        await check.run()
        assert check.summary == "send / receive round trip"
        assert check.gates_readiness() is True

    async def test_run__shared_layer_down_makes_the_service_unready(self, settings):
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
            }
        }
        runner = HealthRunner(checks_factory=lambda: [ChannelLayerCheck()])
        started = time.monotonic()
        report = await runner.report(max_age=0)
        elapsed = time.monotonic() - started
        component = report.components["channel_layer"]
        assert component.status == HealthStatus.UNHEALTHY and component.critical
        assert report.ready is False
        assert elapsed < 2.5  # its own 2 s timeout at most


@pytest.mark.django_db
class TestWorkerCheck:
    def test_run__warns_when_no_worker_ever_reported(self, clock):
        with pytest.raises(ServiceWarning, match="no task worker"):
            WorkerCheck(clock=clock, stale_seconds=60).run()

    def test_run__healthy_with_a_recent_heartbeat(self, clock):
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        clock.advance(59)
        check = WorkerCheck(clock=clock, stale_seconds=60)
        check.run()
        assert check.summary == "1 worker(s) alive; newest heartbeat 59 s ago"

    def test_run__warns_when_the_heartbeat_is_stale(self, clock):
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        clock.advance(61)
        with pytest.raises(ServiceWarning):
            WorkerCheck(clock=clock, stale_seconds=60).run()

    def test_run__warns_when_the_only_worker_stopped(self, clock):
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        worker_stopped(worker_id="w1", clock=clock)
        with pytest.raises(ServiceWarning):
            WorkerCheck(clock=clock, stale_seconds=60).run()

    def test_heartbeat__updates_one_row_per_worker(self, clock):
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        started = WorkerHeartbeat.objects.get(worker_id="w1").started_at
        clock.advance(10)
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        row = WorkerHeartbeat.objects.get(worker_id="w1")
        assert WorkerHeartbeat.objects.count() == 1
        assert row.started_at == started
        assert (row.last_seen_at - started).total_seconds() == 10


def fail_ai_calls(clock: FakeClock, count: int) -> None:
    for _ in range(count):
        permit = admit("anthropic", clock=clock)
        record(permit, BreakerVerdict.FAILURE, duration=0.1, reason="test: 529", clock=clock)


@pytest.mark.django_db
class TestAIAPICheck:
    def test_run__healthy_before_any_call(self, clock):
        check = AIAPICheck(clock=clock)
        check.run()
        assert check.summary == "no AI call made yet"

    def test_run__degraded_with_the_breaker_open_and_healthy_after_a_reset(self, clock):
        fail_ai_calls(clock, 3)  # the seed's threshold: 3 consecutive failures
        assert CircuitBreaker.objects.get(name="anthropic").state == BreakerState.OPEN
        with pytest.raises(ServiceWarning, match="AI breaker open until") as caught:
            AIAPICheck(clock=clock).run()
        assert "static reviewer still work" in caught.value.message

        clock.advance(5)
        breaker_reset(name="anthropic", actor="ops", clock=clock)
        check = AIAPICheck(clock=clock)
        check.run()
        assert check.summary == "breaker closed; no successful call yet"

    def test_run__degraded_when_forced_open(self, clock):
        breaker_force_open(name="anthropic", actor="ops", clock=clock)
        with pytest.raises(ServiceWarning, match="forced open"):
            AIAPICheck(clock=clock).run()

    def test_run__degraded_while_half_open(self, clock):
        fail_ai_calls(clock, 3)
        clock.advance(CircuitBreaker.objects.get(name="anthropic").recovery_timeout + 1)
        admit("anthropic", clock=clock)  # the probe: now half-open
        with pytest.raises(ServiceWarning, match="half-open"):
            AIAPICheck(clock=clock).run()

    def test_run__degraded_when_calls_fail_and_none_succeeded_recently(self, clock):
        admit("anthropic", clock=clock)
        CircuitBreaker.objects.filter(name="anthropic").update(failure_threshold=1000)
        permit = admit("anthropic", clock=clock)
        record(permit, BreakerVerdict.SUCCESS, duration=0.1, clock=clock)
        clock.advance(601)
        fail_ai_calls(clock, 2)
        with pytest.raises(ServiceWarning, match="none succeeded in the last 600 s"):
            AIAPICheck(clock=clock, stale_seconds=600).run()

    def test_run__an_idle_service_is_healthy_however_old_its_last_success(self, clock):
        permit = admit("anthropic", clock=clock)
        record(permit, BreakerVerdict.SUCCESS, duration=0.1, clock=clock)
        clock.advance(86_400)
        check = AIAPICheck(clock=clock, stale_seconds=600)
        check.run()
        assert check.summary == "breaker closed; last successful call 86400 s ago"


# --- aggregation and redaction -------------------------------------------------------------------


class TestAggregation:
    async def test_report__a_failed_critical_component_is_unhealthy_and_unready(self):
        runner = HealthRunner(
            checks_factory=lambda: [LeakyFailingCheck(), SleepingCheck(seconds=0)]
        )
        report = await runner.report(max_age=0)
        assert report.status == HealthStatus.UNHEALTHY
        assert report.ready is False
        assert [c.name for c in report.failed_critical] == ["leaky"]

    async def test_report__a_failed_non_critical_component_only_degrades(self):
        runner = HealthRunner(checks_factory=lambda: [CrashingCheck(), SleepingCheck(seconds=0)])
        report = await runner.report(max_age=0)
        assert report.components["crashing"].status == HealthStatus.UNHEALTHY
        assert report.status == HealthStatus.DEGRADED
        assert report.ready is True

    async def test_report__a_warning_degrades_even_on_a_critical_component(self):
        runner = HealthRunner(checks_factory=lambda: [WarningCheck(), SleepingCheck(seconds=0)])
        report = await runner.report(max_age=0)
        assert report.components["warned"].status == HealthStatus.DEGRADED
        assert report.status == HealthStatus.DEGRADED
        assert report.ready is True

    async def test_report__all_healthy_is_healthy(self):
        runner = HealthRunner(
            checks_factory=lambda: [
                DiskCheck(usage=reading(used_gb=1, free_gb=99)),
                SleepingCheck(seconds=0),
            ],
        )
        report = await runner.report(max_age=0)
        assert report.status == HealthStatus.HEALTHY
        assert report.components["disk"].message == "1.0 % used, 99.00 GB free"

    async def test_report__unexpected_errors_are_redacted(self):
        runner = HealthRunner(checks_factory=lambda: [CrashingCheck(), LeakyFailingCheck()])
        report = await runner.report(max_age=0)
        crashing, leaky = report.components["crashing"], report.components["leaky"]
        assert crashing.message == "the check failed unexpectedly"
        assert leaky.message == "the leaky component does not answer"
        for component in (crashing, leaky):
            assert "db-internal.example" in component.detail  # staff see what failed ...
            assert SECRET not in component.detail  # ... but never a secret
            assert API_KEY not in component.detail
            assert "[REDACTED]" in component.detail


# --- the runner ----------------------------------------------------------------------------------


class TestRunner:
    async def test_report__checks_run_in_parallel(self):
        runner = HealthRunner(
            checks_factory=lambda: [
                SleepingCheck(seconds=0.4),
                ThreadSleepingCheck(seconds=0.4),
                OtherSleepingCheck(seconds=0.4),
            ]
        )
        started = time.monotonic()
        await runner.report(max_age=0)
        assert time.monotonic() - started < 0.75  # not 1.2 s

    async def test_report__each_check_has_its_own_timeout(self):
        blocked = BlockedCheck(timeout=dt.timedelta(seconds=0.2))
        runner = HealthRunner(checks_factory=lambda: [blocked, ThreadSleepingCheck(seconds=0.5)])
        started = time.monotonic()
        report = await runner.report(max_age=0)
        elapsed = time.monotonic() - started
        blocked.release.set()
        assert report.components["blocked"].message == "no answer within 0.2 s"
        assert report.components["thread_sleeper"].status == HealthStatus.HEALTHY
        assert 0.5 <= elapsed < 0.9  # the slowest check's own duration, not the hung one's

    async def test_report__is_cached_for_the_interval(self, clock):
        runner = HealthRunner(clock=clock, checks_factory=lambda: [SleepingCheck(seconds=0)])
        first = await runner.report(max_age=1.0)
        clock.advance(0.99)
        assert await runner.report(max_age=1.0) is first
        clock.advance(0.02)
        assert await runner.report(max_age=1.0) is not first
        assert runner.rounds == 2

    async def test_report__concurrent_callers_share_one_round(self):
        CountingCheck.calls = 0
        runner = HealthRunner(checks_factory=lambda: [CountingCheck()])
        reports = await asyncio.gather(*(runner.report(max_age=0) for _ in range(200)))
        assert runner.rounds == 1 and CountingCheck.calls == 1
        assert all(report is reports[0] for report in reports)

    async def test_report__a_hung_sync_check_is_not_started_again_while_it_runs(self):
        blocked = BlockedCheck()
        runner = HealthRunner(checks_factory=lambda: [blocked])
        for _ in range(3):
            report = await runner.report(max_age=0)
            assert report.components["blocked"].status == HealthStatus.UNHEALTHY
        assert len(blocked.started) == 1  # one stuck thread, not three
        blocked.release.set()
        await asyncio.sleep(0.05)
        report = await runner.report(max_age=0)
        assert report.components["blocked"].status == HealthStatus.HEALTHY
        assert len(blocked.started) == 2

    async def test_report__a_probe_that_gives_up_does_not_cancel_the_round(self):
        runner = HealthRunner(checks_factory=lambda: [SleepingCheck(seconds=0.3)])
        impatient = asyncio.ensure_future(runner.report(max_age=0))
        patient = asyncio.ensure_future(runner.report(max_age=0))
        await asyncio.sleep(0.05)
        impatient.cancel()
        report = await patient
        assert report.components["sleeper"].status == HealthStatus.HEALTHY
        assert runner.rounds == 1

    @pytest.mark.django_db(transaction=True)
    async def test_report__the_real_checks_answer_on_this_database(self):
        report = await RUNNER.report(max_age=0)
        assert set(report.components) == {
            "database",
            "disk",
            "channel_layer",
            "cache",
            "workers",
            "ai_api",
        }
        assert report.components["database"].status == HealthStatus.HEALTHY
        assert report.components["workers"].status == HealthStatus.DEGRADED  # no worker here
        assert report.ready is True


# --- views ---------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="operator", password="x", is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def with_checks():
    def install(*extra):
        RUNNER.checks_factory = lambda: [*build_checks(), *extra]

    return install


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
        RUNNER.reset()
        with_checks(LeakyFailingCheck())  # critical failure
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

    def test_health__ai_degraded_with_the_breaker_open_healthy_after_reset(self, client):
        clock = FakeClock(start=time.time())
        fail_ai_calls(clock, 3)
        body = client.get("/health").json()
        assert body["components"]["ai_api"]["status"] == "degraded"
        assert body["ready"] is True  # an open AI breaker never makes the service unready
        assert client.get("/health/ready").status_code == 200
        breaker_reset(name="anthropic", actor="ops")
        RUNNER.reset()
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
    def test_ht__html_json_and_openmetrics_over_the_same_round(self, client):
        html = client.get("/ht/", HTTP_HOST="localhost")
        json_ = client.get("/ht/?format=json", HTTP_HOST="localhost")
        metrics = client.get("/ht/?format=openmetrics", HTTP_HOST="localhost")
        assert html.status_code == 200 and "DatabaseCheck" in html.content.decode()
        assert json_.json()["DatabaseCheck(alias='default')"] == "OK"
        assert json_.json()["WorkerCheck()"].startswith("Warning: no task worker")
        assert 'django_health_check_status{check="DatabaseCheck",alias="default"} 1' in (
            metrics.content.decode()
        )
        assert RUNNER.rounds == 1  # three views, one round within the cache interval

    def test_ht__500_only_when_unhealthy(self, client, with_checks):
        assert client.get("/ht/?format=json", HTTP_HOST="localhost").status_code == 200
        RUNNER.reset()
        with_checks(LeakyFailingCheck())
        assert client.get("/ht/?format=json", HTTP_HOST="localhost").status_code == 500


@pytest.mark.django_db(transaction=True)
class TestProbeFloodInProcess:
    async def test_ready__500_concurrent_probes_run_at_most_one_round_per_interval(self, settings):
        from eidolon_site.asgi import application

        settings.EIDOLON_HEALTH_CACHE_SECONDS = 0.2
        transport = httpx2.ASGITransport(app=application)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            started = time.monotonic()
            responses = await asyncio.gather(*(http.get("/health/ready") for _ in range(500)))
            duration = time.monotonic() - started
        assert [r.status_code for r in responses] == [200] * 500
        assert 1 <= RUNNER.rounds <= duration / 0.2 + 1, (RUNNER.rounds, duration)


# --- admin ---------------------------------------------------------------------------------


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
        assert "<svg" in changelist and "uptime 1 h" in changelist.lower()
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


# --- the worker command's heartbeat ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
class TestWorkerCommand:
    def test_worker__beats_while_running_and_marks_itself_stopped_on_sigterm(self):
        worker = ManagedProcess.manage(
            "worker",
            "--no-reload",
            "--no-startup-delay",
            "--interval",
            "0.2",
            "--heartbeat",
            "0.2",
            "--worker-id",
            "test-worker-1",
            "--queue-name",
            "*",
            env=subprocess_environment(),
        )
        try:
            deadline = time.monotonic() + 20
            seen: list = []
            while time.monotonic() < deadline and len(set(seen)) < 3:
                row = WorkerHeartbeat.objects.filter(worker_id="test-worker-1").first()
                if row is not None:
                    seen.append(row.last_seen_at)
                time.sleep(0.1)
        finally:
            exit_code = worker.stop()
        row = WorkerHeartbeat.objects.get(worker_id="test-worker-1")
        assert len(set(seen)) >= 3, worker.output()  # it kept beating
        assert exit_code == 0, worker.output()
        assert row.stopped_at is not None and row.pid > 0
        with pytest.raises(ServiceWarning):
            WorkerCheck().run()
