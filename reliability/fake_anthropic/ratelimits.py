"""The API's rate limits as the fake enforces them (``FakeConfig.enforce_rate_limits``).

As the API documents them: a token bucket per dimension (requests, input tokens, output
tokens), each holding one window's worth (``rpm_limit``, ``input_tokens_limit``,
``output_tokens_limit`` per ``rpm_window_s``) and refilled continuously. A request is charged
when it starts: one request, its input tokens as estimated from the prompt, and ``max_tokens``
output tokens; when it ends the charge is corrected to what it really used (a failed request
gives back all its output tokens). A request that would overdraw any bucket is refused with
429 ``rate_limit_error``, ``retry-after`` saying when that bucket will hold enough again, and
every answer carries ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-
{limit,remaining,reset}``: remaining after this request's charge, and reset the moment the
bucket will be full again (RFC 3339).

Not thread-safe: the server calls it under its lock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reliability.fake_anthropic import messages
from reliability.fake_anthropic.config import FakeConfig
from reliability.fake_anthropic.windows import _rfc3339 as rfc3339

# Used for requests when the config sets no rpm_limit.
NOMINAL_REQUESTS_LIMIT = 4_000
DIMENSIONS = ("requests", "input-tokens", "output-tokens")


@dataclass
class TokenBucket:
    """``capacity`` units, refilled at ``capacity / window_s`` per second, up to capacity."""

    capacity: float
    window_s: float
    level: float
    updated_at: float

    @property
    def refill_per_s(self) -> float:
        return self.capacity / self.window_s

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.level = min(self.capacity, self.level + elapsed * self.refill_per_s)
        self.updated_at = max(self.updated_at, now)

    def seconds_until(self, amount: float, now: float) -> float:
        """How long until the bucket holds ``amount`` (capped at its capacity); 0: it does."""
        self.refill(now)
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.refill_per_s)

    def seconds_until_full(self, now: float) -> float:
        return self.seconds_until(self.capacity, now)

    def add(self, amount: float, now: float) -> None:
        """Take (negative) or give back (positive) ``amount``; a correction may overdraw."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)


@dataclass
class Charge:
    """What one admitted request holds, and (once known) what it used."""

    input_tokens: int
    output_tokens: int
    used: tuple[int, int] | None = None  # (input, output) the reply reported; None: failed


class RateLimits:
    """The three buckets, made afresh when the limits change."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._limits: tuple[float, ...] = ()

    def clear(self) -> None:
        self._buckets = {}
        self._limits = ()

    def admit(
        self, config: FakeConfig, *, body: Any, input_tokens: int, now: float
    ) -> tuple[Charge | None, float | None]:
        """Charge one request's start, or say how long until it would fit: ``(charge, None)``
        or ``(None, seconds)``."""
        buckets = self._current(config, now=now)
        max_tokens = body.get("max_tokens", 0) if isinstance(body, Mapping) else 0
        charge = Charge(input_tokens=input_tokens, output_tokens=int(max_tokens or 0))
        needs = {
            "requests": 1,
            "input-tokens": charge.input_tokens,
            "output-tokens": charge.output_tokens,
        }
        wait_s = max(buckets[name].seconds_until(amount, now) for name, amount in needs.items())
        if wait_s > 0:
            return None, wait_s
        for name, amount in needs.items():
            buckets[name].add(-amount, now)
        return charge, None

    def settle(self, config: FakeConfig, charge: Charge, *, now: float) -> None:
        """Correct a finished request's charge to what it used."""
        buckets = self._current(config, now=now)
        used_input, used_output = charge.used or (charge.input_tokens, 0)
        buckets["input-tokens"].add(charge.input_tokens - used_input, now)
        buckets["output-tokens"].add(charge.output_tokens - used_output, now)

    def headers(self, config: FakeConfig, *, now: float, wall_now: datetime) -> dict[str, str]:
        buckets = self._current(config, now=now)
        headers: dict[str, str] = {}
        for name in DIMENSIONS:
            headers.update(_dimension_headers(name, buckets[name], now=now, wall_now=wall_now))
        # The token limit closest to being reached, as the API's combined headers report it.
        tightest = min(
            ("input-tokens", "output-tokens"),
            key=lambda name: buckets[name].level / buckets[name].capacity,
        )
        headers.update(_dimension_headers("tokens", buckets[tightest], now=now, wall_now=wall_now))
        return headers

    def _current(self, config: FakeConfig, *, now: float) -> dict[str, TokenBucket]:
        limits = _limits(config)
        if limits != self._limits:
            window_s = config.rpm_window_s
            self._buckets = {
                name: TokenBucket(capacity=limit, window_s=window_s, level=limit, updated_at=now)
                for name, limit in zip(DIMENSIONS, limits[:3], strict=True)
            }
            self._limits = limits
        return self._buckets


def estimated_input_tokens(body: Any) -> int:
    """The input tokens a request is charged when it starts (from its prompt's length)."""
    if not isinstance(body, Mapping):
        return 0
    try:
        return messages._input_tokens(body)
    except (TypeError, KeyError, ValueError):
        return 0


def _limits(config: FakeConfig) -> tuple[float, ...]:
    return (
        float(config.rpm_limit or NOMINAL_REQUESTS_LIMIT),
        float(config.input_tokens_limit),
        float(config.output_tokens_limit),
        config.rpm_window_s,
    )


def _dimension_headers(
    name: str, bucket: TokenBucket, *, now: float, wall_now: datetime
) -> Mapping[str, str]:
    prefix = f"anthropic-ratelimit-{name}"
    reset_at = wall_now + timedelta(seconds=bucket.seconds_until_full(now))
    per_minute = bucket.capacity * 60.0 / bucket.window_s  # the API states limits per minute
    return {
        f"{prefix}-limit": str(round(per_minute)),
        f"{prefix}-remaining": str(max(0, math.floor(bucket.level))),
        f"{prefix}-reset": rfc3339(reset_at),
    }
