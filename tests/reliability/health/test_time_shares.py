"""Time up, down and unknown as shares of a window, and the hourly and daily cells of the
timelines: unknown time (nobody observed) is counted and shown beside uptime, not dropped."""

from __future__ import annotations

import datetime as dt

from reliability.health.uptime import (
    Segment,
    format_shares,
    status_segments,
    time_cells,
    time_shares,
)
from tests.reliability.health.standins import T0, UNK, D, H, U

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def day_with_a_12_minute_gap() -> list[Segment]:
    """Healthy all day, except 12 minutes the monitor was not running (unknown)."""
    return status_segments(
        changes=[
            (T0, H),
            (T0 + dt.timedelta(hours=10), UNK),
            (T0 + dt.timedelta(hours=10, minutes=12), H),
        ],
        start=T0,
        end=T0 + DAY,
    )


class TestTimeShares:
    def test_twelve_unobserved_minutes__shown_as_unknown_not_as_100_percent_up(self):
        shares = time_shares(day_with_a_12_minute_gap(), start=T0, end=T0 + DAY)
        assert shares.unknown == 100 * 12 / 1440
        assert shares.up == 100 * (1440 - 12) / 1440
        assert shares.down == 0
        assert format_shares(shares) == "up 99.2 % · unknown 0.8 %"

    def test_down_time__its_own_share__and_the_worst_status_colours_the_cell(self):
        segments = [
            Segment(T0, T0 + dt.timedelta(minutes=30), H),
            Segment(T0 + dt.timedelta(minutes=30), T0 + dt.timedelta(minutes=45), U),
            Segment(T0 + dt.timedelta(minutes=45), T0 + HOUR, D),
        ]
        shares = time_shares(segments, start=T0, end=T0 + HOUR)
        assert (shares.up, shares.down, shares.unknown, shares.degraded) == (75, 25, 0, 25)
        assert shares.worst == U
        assert format_shares(shares) == "up 75.0 % · down 25.0 %"

    def test_a_sliver__never_rounded_away(self):
        segments = [Segment(T0, T0 + dt.timedelta(seconds=30), H)]
        shares = time_shares(segments, start=T0, end=T0 + DAY)
        assert format_shares(shares) == "up 0.1 % · unknown 99.9 %"
        assert format_shares(time_shares([], start=T0, end=T0 + HOUR)) == "up 0 % · unknown 100 %"


class TestCells:
    def test_24_hourly_cells__the_gap_in_its_own_hour(self):
        cells = time_cells(day_with_a_12_minute_gap(), end=T0 + DAY, cell=HOUR, count=24)
        assert len(cells) == 24
        assert [cell.start for cell in cells] == [T0 + HOUR * i for i in range(24)]
        assert cells[10].unknown == 20.0 and cells[10].up == 80.0
        assert all(cell.up == 100.0 for index, cell in enumerate(cells) if index != 10)

    def test_the_cell_under_way__shared_over_its_elapsed_part_only(self):
        segments = [Segment(T0, T0 + dt.timedelta(hours=2), H)]
        now = T0 + dt.timedelta(hours=1, minutes=30)
        cells = time_cells(segments, end=T0 + 2 * HOUR, cell=HOUR, count=2, now=now)
        assert cells[-1].end == now and cells[-1].up == 100.0

    def test_7_daily_cells(self):
        segments = [Segment(T0 + 6 * DAY, T0 + 7 * DAY, H)]
        cells = time_cells(segments, end=T0 + 7 * DAY, cell=DAY, count=7)
        assert [cell.worst for cell in cells] == [UNK] * 6 + [H]
