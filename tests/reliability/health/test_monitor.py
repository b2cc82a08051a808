"""The monitor loop and the ``health_monitor`` command with its SIGTERM handling."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import signal
from typing import ClassVar

import pytest

from reliability.clock import epoch_datetime
from reliability.health.checks import DATABASE, OVERALL, ComponentCheck, DiskCheck, DiskUsage
from reliability.health.history import record_report
from reliability.health.monitor import run_health_monitor
from reliability.health.runner import HealthRunner
from reliability.models import HealthComponentState, HealthSample, HealthStatus
from tests.processes import ManagedProcess, subprocess_environment
from tests.reliability.health.standins import GB, synthetic_report

H = HealthStatus.HEALTHY


async def monitor_fast(*, runner: HealthRunner, stop: asyncio.Event, **options) -> int:
    """The monitor, a round every 50 ms, with the default retention."""
    return await run_health_monitor(
        interval=0.05,
        stop=stop,
        runner=runner,
        sample_retention=dt.timedelta(days=7),
        transition_retention=dt.timedelta(days=90),
        **options,
    )


@dataclasses.dataclass
class StopsTheMonitor(ComponentCheck):
    """Sets the monitor's stop event in the middle of a round."""

    component: ClassVar[str] = "stopper"
    stop: asyncio.Event | None = dataclasses.field(default=None, repr=False)

    async def run(self) -> None:
        assert self.stop is not None
        self.stop.set()
        await asyncio.sleep(0.2)  # the round goes on after the signal


@pytest.mark.django_db(transaction=True)
class TestMonitorLoop:
    async def test_monitor__finishes_the_round_in_progress_when_told_to_stop(self):
        stop = asyncio.Event()
        runner = HealthRunner(checks_factory=lambda: [StopsTheMonitor(stop=stop)])
        rounds = await monitor_fast(runner=runner, stop=stop)
        assert rounds == 1
        samples = await asyncio.to_thread(
            lambda: list(HealthSample.objects.values_list("component__name", flat=True))
        )
        assert sorted(samples) == [OVERALL, "stopper"]

    async def test_monitor__samples_every_interval_and_prunes(self):
        old = epoch_datetime(1_000_000_000.0)
        await asyncio.to_thread(record_report, report=synthetic_report(old, stopper=H))
        stop = asyncio.Event()
        runner = HealthRunner(
            checks_factory=lambda: [DiskCheck(usage=lambda p: DiskUsage(10 * GB, GB, 9 * GB))]
        )
        rounds = await monitor_fast(runner=runner, stop=stop, max_rounds=3)
        samples = await asyncio.to_thread(
            lambda: list(HealthSample.objects.values_list("component__name", flat=True))
        )
        assert rounds == 3
        assert sorted(samples) == sorted(["disk", OVERALL] * 3)  # the old samples were pruned


@pytest.mark.django_db(transaction=True)
class TestHealthMonitorCommand:
    def test_command__sigterm_ends_it_cleanly_with_exit_code_0(self):
        monitor = ManagedProcess.manage(
            "health_monitor", "--interval", "0.3", env=subprocess_environment()
        )
        try:
            monitor.wait_for(lambda line: "health_monitor_started" in line)
            monitor.wait_for(lambda line: '"health_changed"' in line and "overall" in line)
        finally:
            exit_code = monitor.stop(sig=signal.SIGTERM)
        events = [line.get("event") for line in monitor.json_lines()]
        assert exit_code == 0, monitor.output()
        assert "health_monitor_stopping" in events and events[-1] == "health_monitor_stopped"
        assert HealthSample.objects.filter(component__name=DATABASE).exists()
        assert HealthComponentState.objects.get(name=DATABASE).status == H

    def test_command__once_records_one_round(self):
        monitor = ManagedProcess.manage("health_monitor", "--once", env=subprocess_environment())
        assert monitor.process.wait(timeout=60) == 0, monitor.output()
        assert HealthSample.objects.filter(component__name=OVERALL).count() == 1
