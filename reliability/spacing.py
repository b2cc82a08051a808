"""How far apart a budget's requests start: seconds per request and per token, from the
effective limits, less headroom (``ratelimit`` reserves slots with them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

# The API states its limits per minute; budgets may use another window (tests do).
API_LIMIT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class Spacing:
    """Seconds each request and each token occupies, from the effective limits."""

    request: float
    input_token: float
    output_token: float


def _effective_limit(configured: int, observed: int | None, window: float) -> float:
    """The tighter of our limit and the one the API reported (scaled to our window)."""
    if observed is None:
        return float(configured)
    return max(1.0, min(float(configured), observed * window / API_LIMIT_WINDOW_SECONDS))


def spacing_of(config: Mapping[str, Any], *, headroom: float | None = None) -> Spacing:
    """Seconds per request and per token: the window over the effective limit, less headroom.

    Requests leave this process exactly on their slots but reach the API a few milliseconds
    apart from that, unevenly; keeping ``headroom`` (a fraction) of each limit free keeps the
    API from ever counting more than the limit in a window.
    """
    headroom = settings.EIDOLON_RATE_HEADROOM if headroom is None else headroom
    window = config["window_seconds"]

    def seconds_per_unit(configured: str, observed: str) -> float:
        limit = _effective_limit(config[configured], config[observed], window)
        return window / (limit * (1.0 - headroom))

    return Spacing(
        request=seconds_per_unit("requests_per_window", "observed_requests_limit"),
        input_token=seconds_per_unit("input_tokens_per_window", "observed_input_tokens_limit"),
        output_token=seconds_per_unit("output_tokens_per_window", "observed_output_tokens_limit"),
    )


def slot_seconds(
    tokens: int, seconds_per_token: float, window: float, *, headroom: float | None = None
) -> float:
    """The time ``tokens`` hold on a token slot: a whole number of such requests per window.

    Slots ``tokens * seconds_per_token`` long let a window hold one request more than fits
    when the tokens do not divide the limit (8,000 / 300 = 26.7: a 27th request starts
    59.9 s after the first, 8,100 tokens in one window). Rounding the requests per window
    down, over the window plus ``headroom`` of it (a request may start that late after its
    slot, or reach the API that much later), keeps every window within the limit.
    """
    headroom = settings.EIDOLON_RATE_HEADROOM if headroom is None else headroom
    exact = tokens * seconds_per_token
    if exact <= 0:
        return 0.0
    span = window * (1.0 + headroom)
    fitting = math.floor(span / exact + 1e-9)
    return max(exact, span / fitting) if fitting >= 1 else exact
