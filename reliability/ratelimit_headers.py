"""What the API's ``anthropic-ratelimit-*`` response headers say: which dimensions are
exhausted until when, and which limits it reports (``ratelimit.observe_headers`` acts on it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

# Header dimension -> the budget column that keeps the limit the API reported for it.
HEADER_DIMENSIONS = {
    "requests": "observed_requests_limit",
    "input-tokens": "observed_input_tokens_limit",
    "output-tokens": "observed_output_tokens_limit",
}


def _parse_reset(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class HeaderSignals:
    pauses: list[tuple[float, str]]  # (until, reason) for each exhausted dimension
    limits: dict[str, int]  # observed_* column -> the limit the API reported

    def limits_changed(self, known_limits: Mapping[str, int | None] | None) -> bool:
        known = known_limits or {}
        return any(known.get(column) != limit for column, limit in self.limits.items())

    def needs_writing(self, known_limits: Mapping[str, int | None] | None) -> bool:
        return bool(self.pauses) or self.limits_changed(known_limits)


def header_signals(headers: Mapping[str, str], *, now: float) -> HeaderSignals:
    """What ``anthropic-ratelimit-*`` headers say: dimensions exhausted, limits reported."""
    lowered = {key.lower(): value for key, value in headers.items()}
    pauses: list[tuple[float, str]] = []
    limits: dict[str, int] = {}
    for dimension, column in HEADER_DIMENSIONS.items():
        prefix = f"anthropic-ratelimit-{dimension}-"
        limit, remaining = lowered.get(prefix + "limit"), lowered.get(prefix + "remaining")
        reset_at = _parse_reset(lowered.get(prefix + "reset"))
        if limit is not None and limit.isdigit():
            limits[column] = int(limit)
        if remaining is not None and remaining.strip() == "0" and reset_at and reset_at > now:
            pauses.append((reset_at, f"{dimension} exhausted: API reported 0 remaining"))
    return HeaderSignals(pauses=pauses, limits=limits)
