"""One time format with seconds, relative times, and dollars, for every operator page."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from reliability.display import format_time, format_usd, relative_time, time_with_relative

NOW = dt.datetime(2026, 11, 30, 8, 41, 7, tzinfo=dt.UTC)


class TestTimes:
    def test_one_format_with_seconds_in_utc(self):
        assert format_time(NOW) == "2026-11-30 08:41:07 UTC"
        paris = dt.timezone(dt.timedelta(hours=1))
        assert format_time(NOW.astimezone(paris)) == "2026-11-30 08:41:07 UTC"
        assert format_time(None) == "—"

    @pytest.mark.parametrize(
        ("delta", "text"),
        [
            (dt.timedelta(seconds=2), "just now"),
            (dt.timedelta(seconds=40), "40 s ago"),
            (dt.timedelta(minutes=3, seconds=59), "3 min ago"),
            (dt.timedelta(hours=5, minutes=1), "5 h ago"),
            (dt.timedelta(days=2, hours=3), "2 d ago"),
            (-dt.timedelta(seconds=90), "in 1 min"),
        ],
    )
    def test_relative__in_its_largest_unit(self, delta, text):
        assert relative_time(NOW - delta, now=NOW) == text

    def test_both(self):
        then = NOW - dt.timedelta(minutes=3)
        assert time_with_relative(then, now=NOW) == "2026-11-30 08:38:07 UTC (3 min ago)"


class TestMoney:
    def test_dollars_to_the_hundredth_of_a_cent__a_dash_when_unpriced(self):
        assert format_usd(Decimal("0.01234567")) == "$0.0123"
        assert format_usd(Decimal("1234.5")) == "$1,234.5000"
        assert format_usd(0) == "$0.0000"
        assert format_usd(None) == "—"
