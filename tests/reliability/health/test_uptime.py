"""Uptime: exact arithmetic over status segments, and over a recorded history."""

from __future__ import annotations

import datetime as dt

import pytest

from reliability.clock import epoch_datetime
from reliability.health.history import record_report
from reliability.health.uptime import Segment, component_uptime, status_segments, uptime_percent
from reliability.models import HealthComponentState
from tests.clocks import FakeClock
from tests.reliability.health.standins import T0, UNK, D, H, U, synthetic_report


class TestUptimeArithmetic:
    NOW = T0 + dt.timedelta(days=30)

    def history(self) -> list[tuple[dt.datetime, str]]:
        now = self.NOW
        return [
            (now - dt.timedelta(days=7), H),
            (now - dt.timedelta(hours=10), U),
            (now - dt.timedelta(hours=9, minutes=30), H),
            (now - dt.timedelta(minutes=30), D),
            (now - dt.timedelta(minutes=20), U),
            (now - dt.timedelta(minutes=5), H),
        ]

    def uptime(self, window: dt.timedelta, changes=None, **kwargs) -> float | None:
        segments = status_segments(
            changes=self.history() if changes is None else changes,
            start=self.NOW - window,
            end=self.NOW,
            **kwargs,
        )
        return uptime_percent(segments)

    def test_uptime__exact_over_one_hour_a_day_and_a_week(self):
        # Down 15 min in the last hour; 30 + 15 min in the last day and week; degraded is up.
        assert self.uptime(dt.timedelta(hours=1)) == 100 * 45 / 60
        assert self.uptime(dt.timedelta(hours=24)) == 100 * (1440 - 45) / 1440
        assert self.uptime(dt.timedelta(days=7)) == 100 * (10080 - 45) / 10080

    def test_uptime__unknown_time_counts_neither_way(self):
        # Observed only for the last 2 hours of the week, down 15 minutes of them.
        changes = [(self.NOW - dt.timedelta(hours=2), H), *self.history()[3:]]
        assert self.uptime(dt.timedelta(days=7), changes) == 100 * 105 / 120

    def test_uptime__stops_counting_after_the_last_observation(self):
        changes = [(self.NOW - dt.timedelta(hours=1), U)]
        known_until = self.NOW - dt.timedelta(minutes=30)
        segments = status_segments(
            changes=changes,
            start=self.NOW - dt.timedelta(hours=1),
            end=self.NOW,
            known_until=known_until,
        )
        assert segments == [
            Segment(self.NOW - dt.timedelta(hours=1), known_until, U),
            Segment(known_until, self.NOW, UNK),
        ]
        assert uptime_percent(segments) == 0.0

    def test_uptime__none_without_data(self):
        assert self.uptime(dt.timedelta(hours=1), changes=[]) is None

    def test_segments__merge_equal_neighbours_and_cover_the_window(self):
        start = self.NOW - dt.timedelta(hours=1)
        changes = [(start - dt.timedelta(hours=1), H), (start + dt.timedelta(minutes=10), H)]
        assert status_segments(changes=changes, start=start, end=self.NOW) == [
            Segment(start, self.NOW, H)
        ]


@pytest.mark.django_db
class TestComponentUptime:
    def test_uptime__exact_over_a_recorded_synthetic_history(self):
        clock = FakeClock(start=T0.timestamp())
        now = T0 + dt.timedelta(days=8)
        changes = [
            (now - dt.timedelta(days=7, hours=1), H),
            (now - dt.timedelta(hours=10), U),
            (now - dt.timedelta(hours=9, minutes=30), H),
            (now - dt.timedelta(minutes=30), D),
            (now - dt.timedelta(minutes=20), U),
            (now - dt.timedelta(minutes=5), H),
            (now - dt.timedelta(seconds=10), H),  # the latest round
        ]
        for at, status in changes:
            record_report(report=synthetic_report(at, database=status))
        clock.advance((now - T0).total_seconds())
        database = HealthComponentState.objects.get(name="database")
        uptime = component_uptime(
            component=database,
            now=epoch_datetime(clock.now()),
            stale_after=dt.timedelta(seconds=90),
        )
        assert uptime == {
            dt.timedelta(hours=1): 75.0,
            dt.timedelta(hours=24): 100 * (1440 - 45) / 1440,
            dt.timedelta(days=7): 100 * (10080 - 45) / 10080,
        }

    def test_uptime__the_monitor_stopping_makes_the_rest_unknown(self):
        now = T0 + dt.timedelta(hours=2)
        record_report(report=synthetic_report(T0 + dt.timedelta(hours=1), database=U))
        database = HealthComponentState.objects.get(name="database")
        uptime = component_uptime(
            component=database,
            now=now,
            windows=[dt.timedelta(hours=2)],
            stale_after=dt.timedelta(seconds=90),
        )
        assert uptime == {dt.timedelta(hours=2): 0.0}  # only the 90 s after the last round
