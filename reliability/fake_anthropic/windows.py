"""The fake's own rolling windows of admitted requests and token usage, and the
``anthropic-ratelimit-*`` headers that advertise them as the real API does."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reliability.fake_anthropic.config import FakeConfig

# Advertised in the request rate-limit headers when the fake enforces no limit of its own.
_NOMINAL_REQUESTS_LIMIT = 4_000


@dataclass(frozen=True)
class WindowUsage:
    requests: int
    input_tokens: int
    output_tokens: int
    requests_reset_s: float
    tokens_reset_s: float


class UsageWindows:
    """Requests admitted and tokens used in the last ``rpm_window_s``.

    Not thread-safe: the server calls it under its lock.
    """

    def __init__(self) -> None:
        self._admitted: deque[float] = deque()
        self._token_usage: deque[tuple[float, int, int]] = deque()

    def admit(self, now: float) -> None:
        self._admitted.append(now)

    def count_tokens(self, now: float, usage: tuple[int, int]) -> None:
        self._token_usage.append((now, *usage))

    def rpm_wait(self, config: FakeConfig, *, now: float) -> float | None:
        """Seconds until ``rpm_limit`` admits another request; None when it admits one now."""
        if config.rpm_limit is None:
            return None
        self._prune(config, now=now)
        excess = len(self._admitted) - config.rpm_limit
        if excess < 0:
            return None
        # Admitted again once the request that makes the window one too full ages out.
        return self._admitted[excess] + config.rpm_window_s - now

    def usage(self, config: FakeConfig, *, now: float) -> WindowUsage:
        self._prune(config, now=now)
        # A rolling window is fully replenished when its newest entry ages out.
        return WindowUsage(
            requests=len(self._admitted),
            input_tokens=sum(input_tokens for _, input_tokens, _ in self._token_usage),
            output_tokens=sum(output_tokens for _, _, output_tokens in self._token_usage),
            requests_reset_s=(
                self._admitted[-1] + config.rpm_window_s - now if self._admitted else 0
            ),
            tokens_reset_s=(
                self._token_usage[-1][0] + config.rpm_window_s - now if self._token_usage else 0
            ),
        )

    def clear(self) -> None:
        self._admitted.clear()
        self._token_usage.clear()

    def _prune(self, config: FakeConfig, *, now: float) -> None:
        horizon = now - config.rpm_window_s
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        while self._token_usage and self._token_usage[0][0] <= horizon:
            self._token_usage.popleft()


def ratelimit_headers(
    config: FakeConfig,
    usage: WindowUsage,
    *,
    wall_now: datetime,
    exhausted_for_s: float | None = None,
) -> dict[str, str]:
    """limit, remaining and reset of requests, input and output tokens; ``exhausted_for_s``
    advertises no requests left for that long (a 429's retry-after)."""
    requests_limit = config.rpm_limit or _NOMINAL_REQUESTS_LIMIT
    requests_remaining = requests_limit - usage.requests
    requests_reset_s = usage.requests_reset_s
    if exhausted_for_s is not None:
        requests_remaining, requests_reset_s = 0, exhausted_for_s
    headers = {}
    for name, limit, remaining, reset_s in (
        ("requests", requests_limit, requests_remaining, requests_reset_s),
        (
            "input-tokens",
            config.input_tokens_limit,
            config.input_tokens_limit - usage.input_tokens,
            usage.tokens_reset_s,
        ),
        (
            "output-tokens",
            config.output_tokens_limit,
            config.output_tokens_limit - usage.output_tokens,
            usage.tokens_reset_s,
        ),
    ):
        prefix = f"anthropic-ratelimit-{name}"
        headers[f"{prefix}-limit"] = str(limit)
        headers[f"{prefix}-remaining"] = str(max(0, remaining))
        headers[f"{prefix}-reset"] = _rfc3339(wall_now + timedelta(seconds=max(0, reset_s)))
    return headers


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
