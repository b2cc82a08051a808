"""The one retry policy: capped exponential backoff with full jitter, server hints honoured,
deadlines respected, and a retry budget so an outage does not multiply traffic.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from reliability.clock import SYSTEM_CLOCK, Clock

# A server hint longer than this is not a backoff but an outage; the deadline decides.
_MAX_RETRY_AFTER = 24 * 3600.0


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (lower case), whatever the case of the key."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` (seconds or an HTTP date)."""
    if (raw_ms := header_value(headers, "retry-after-ms")) is not None:
        try:
            milliseconds = float(raw_ms)
        except ValueError:
            milliseconds = -1.0
        if 0 <= milliseconds / 1000 <= _MAX_RETRY_AFTER:
            return milliseconds / 1000
    raw = header_value(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(0.0, seconds)
    if 0 <= seconds <= _MAX_RETRY_AFTER:
        return seconds
    return None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """``max_attempts`` counts the first try: 4 means the seed's 3 retries."""

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def backoff(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """Full jitter (AWS): uniform in [0, min(cap, base * multiplier ** (n - 1))]."""
        ceiling = min(self.max_delay, self.base_delay * self.multiplier ** max(0, retry_number - 1))
        return (rng or random).uniform(0.0, ceiling)

    def delay(
        self, retry_number: int, *, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """How long to wait before retry ``retry_number`` (1 = the first retry).

        A server's ``retry-after`` is a floor: waiting less would only earn another 429. A little
        jitter on top keeps every client that got the same hint from returning at once.
        """
        if retry_after is None:
            return self.backoff(retry_number, rng=rng)
        return retry_after + (rng or random).uniform(0.0, min(1.0, 0.1 * retry_after))


class RetryBudget:
    """Allow retries only while they stay under ``ratio`` of calls over a sliding window.

    Like Envoy's and gRPC's retry budgets, per process: during an outage every call fails and
    would be retried ``max_attempts`` times; the budget caps the extra load at ~``ratio``.
    ``min_retries`` keeps a quiet process from being unable to retry at all.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: float = 10.0,
        min_retries: int = 3,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ratio = ratio
        self.window = window
        self.min_retries = min_retries
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        for events in (self._calls, self._retries):
            while events and events[0] <= horizon:
                events.popleft()

    def record_call(self) -> None:
        with self._lock:
            now = self._clock.now()
            self._expire(now)
            self._calls.append(now)

    def try_acquire_retry(self) -> bool:
        """Take a retry from the budget if there is one left."""
        with self._lock:
            now = self._clock.now()
            self._expire(now)
            allowed = max(self.min_retries, int(self.ratio * len(self._calls)))
            if len(self._retries) >= allowed:
                return False
            self._retries.append(now)
            return True

    def next_retry_at(self) -> float:
        """When ``try_acquire_retry`` can next succeed if no new call comes in (now, if it can
        now): as retries age out of the window, though the calls that earned them age out too."""
        with self._lock:
            now = self._clock.now()
            self._expire(now)
            calls, retries = list(self._calls), list(self._retries)
        for moment in (now, *(retried + self.window for retried in retries)):
            horizon = moment - self.window
            live_calls = len(calls) - bisect.bisect_right(calls, horizon)
            live_retries = len(retries) - bisect.bisect_right(retries, horizon)
            if live_retries < max(self.min_retries, int(self.ratio * live_calls)):
                return moment
        # Only with min_retries = 0 and no call left in the window: the next call earns one.
        return now + self.window
