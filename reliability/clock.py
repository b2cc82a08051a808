"""Time, injectable: shared state uses wall-clock epoch seconds; tests use a fake clock.

Breaker and budget state is shared by processes (possibly on several hosts), so it is
expressed in epoch seconds (``now()``); keep hosts NTP-synchronised.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


def epoch_datetime(epoch: float) -> datetime:
    """Epoch seconds (what shared state stores) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, tz=UTC)


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, epoch seconds."""

    def monotonic(self) -> float:
        """For measuring durations only."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
