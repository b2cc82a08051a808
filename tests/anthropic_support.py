"""What tests of AI calls share: generous reliability rows and one guarded SDK request."""

from __future__ import annotations

import time

import anthropic

from reliability.guard import Attempt
from reliability.models import CircuitBreaker, RateLimitBudget

MODEL = "claude-sonnet-5-5"


def generous_anthropic_limits(*, failure_threshold: int = 50, recovery_timeout: float = 60) -> None:
    """The ``anthropic`` breaker and budget, set so that neither gets in a test's way."""
    now = time.time()
    CircuitBreaker.objects.create(
        name="anthropic",
        failure_threshold=failure_threshold,
        recovery_timeout=recovery_timeout,
        state_changed_at=now,
        window_started_at=now,
    )
    RateLimitBudget.objects.create(
        name="anthropic",
        requests_per_window=100_000,
        input_tokens_per_window=10**8,
        output_tokens_per_window=10**8,
        requests_per_day=10**6,
    )


def ask(client: anthropic.AsyncAnthropic, text: str = "Review this function.", *, max_tokens=200):
    """A guarded function making one Messages request and reporting what the reply said."""

    async def call(attempt: Attempt) -> anthropic.types.Message:
        raw = await client.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": text}],
            timeout=attempt.timeout,
        )
        message = await raw.parse()
        attempt.observe(
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            headers=dict(raw.headers),
        )
        return message

    return call
