"""The runner (parallel checks through ``get_result``, single-flight rounds, per-process cache)
and the reports it builds, with stand-in checks that are real ``HealthCheck`` subclasses."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest
from django.apps import apps

from reliability.health.checks import DiskCheck
from reliability.health.runner import HealthRunner, process_runner
from reliability.models import HealthStatus
from tests.reliability.health.standins import (
    API_KEY,
    SECRET,
    BlockedCheck,
    CountingCheck,
    CrashingCheck,
    HangingCheck,
    LeakyFailingCheck,
    OtherSleepingCheck,
    SleepingCheck,
    ThreadSleepingCheck,
    WarningCheck,
    reading,
)


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
        blocked = BlockedCheck(timeout=dt.timedelta(0))  # + get_result's 1 s grace
        runner = HealthRunner(checks_factory=lambda: [blocked, ThreadSleepingCheck(seconds=1.3)])
        started = time.monotonic()
        report = await runner.report(max_age=0)
        elapsed = time.monotonic() - started
        blocked.release.set()
        assert report.components["blocked"].message == "no answer within 1 s"
        assert report.components["thread_sleeper"].status == HealthStatus.HEALTHY
        assert 1.3 <= elapsed < 1.7  # the slowest check's own duration, not the hung one's

    async def test_report__an_async_check_that_hangs_is_unhealthy_after_its_time_budget(self):
        runner = HealthRunner(checks_factory=lambda: [HangingCheck()])
        started = time.monotonic()
        report = await runner.report(max_age=0)
        elapsed = time.monotonic() - started
        component = report.components["hanging"]
        assert component.status == HealthStatus.UNHEALTHY
        assert component.message == "no answer within 1 s"
        assert component.result.error.message == "no answer within 1 s"  # /ht/ says the same
        assert 1.0 <= elapsed < 1.4

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

    async def test_report__a_round_that_joins_a_late_run__reports_it_late_not_healthy(self):
        """A component that answers, but after its budget, is unhealthy in every round: the
        round that joins the late run does not turn healthy when it finally answers."""
        release, started = threading.Event(), []
        runner = HealthRunner(
            checks_factory=lambda: [BlockedCheck(release=release, started=started)]
        )
        first = await runner.report(max_age=0)
        assert first.components["blocked"].message == "no answer within 1 s"
        second = asyncio.ensure_future(runner.report(max_age=0))
        await asyncio.sleep(0.1)
        release.set()
        joined = (await second).components["blocked"]
        assert joined.status == HealthStatus.UNHEALTHY
        assert joined.message.startswith("answered only after 1.") and "(> 1 s)" in joined.message
        assert len(started) == 1  # the second round's check joined the first one's run
        fresh = (await runner.report(max_age=0)).components["blocked"]
        assert fresh.status == HealthStatus.HEALTHY and fresh.message == "released"
        assert len(started) == 2  # a new run, which answered at once

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
    async def test_report__the_real_checks_answer_on_this_database(self, health_runner):
        report = await health_runner.report(max_age=0)
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


class TestProcessRunner:
    def test_process_runner__is_the_one_the_reliability_app_holds(self, health_runner):
        assert process_runner() is health_runner
        assert process_runner() is apps.get_app_config("reliability").health_runner

    def test_a_new_runner__starts_no_thread_until_its_first_round(self):
        before = set(threading.enumerate())
        HealthRunner()
        assert set(threading.enumerate()) - before == set()
