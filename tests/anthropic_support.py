"""What tests of AI calls share: reliability rows, a guarded SDK request, the provider against the
fake API, and a small codebase to analyse."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
from asgiref.sync import sync_to_async
from django.conf import settings

from analyses.models import Analysis
from analyses.providers.anthropic import AnthropicProvider, model_target
from reliability.breaker import admit, record
from reliability.fake_anthropic import FakeAnthropic
from reliability.guard import Attempt, Guard
from reliability.models import CircuitBreaker, RateLimitBudget
from reliability.outcomes import BreakerVerdict
from reliability.retry import RetryBudget, RetryPolicy

MODEL = "claude-sonnet-5-5"


def generous_anthropic_limits(
    *,
    failure_threshold: int = 50,
    recovery_timeout: float = 60,
    legacy: bool = True,
    **breaker_tuning: float,
) -> None:
    """The ``anthropic`` breaker and budget (the target of ``provider_for``'s guard), and those of
    each model of the chain (``anthropic:<model>``, the product's guards in a worker process),
    set so that none gets in a test's way; ``breaker_tuning`` sets other fields of the breakers
    (the model's defaults otherwise). ``legacy=False``: the models' rows alone."""
    now = time.time()
    models = dict.fromkeys([MODEL, *settings.EIDOLON_AI_MODELS])
    for name in ["anthropic"] * legacy + [model_target(model) for model in models]:
        CircuitBreaker.objects.create(
            name=name,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            **breaker_tuning,
            state_changed_at=now,
            window_started_at=now,
        )
        RateLimitBudget.objects.create(
            name=name,
            requests_per_window=100_000,
            input_tokens_per_window=10**8,
            output_tokens_per_window=10**8,
            requests_per_day=10**6,
        )


def open_anthropic_breaker(*, recovery_timeout: float) -> CircuitBreaker:
    """The ``anthropic`` breaker, opened by one overloaded reply."""
    now = time.time()
    CircuitBreaker.objects.create(
        name="anthropic",
        failure_threshold=1,
        recovery_timeout=recovery_timeout,
        state_changed_at=now,
        window_started_at=now,
    )
    record(admit("anthropic"), BreakerVerdict.FAILURE, duration=0.1, reason="http_529")
    return CircuitBreaker.objects.get(name="anthropic")


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


def provider_for(
    fake: FakeAnthropic, *, timeout: float = 5.0, retry_budget: RetryBudget | None = None
) -> AnthropicProvider:
    guard = Guard(
        target="anthropic",
        budget="anthropic",
        timeout=timeout,
        retry_policy=RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=0.5),
        # The product's default: retries up to ~20 % of calls
        retry_budget=retry_budget or RetryBudget(),
    )
    return AnthropicProvider(
        api_key="test-key",
        base_url=fake.base_url,
        model=MODEL,
        max_tokens=1024,
        timeout=timeout,
        guard=guard,
    )


async def as_anthropic(analysis: Analysis) -> None:
    # Created as static (no API key in the test environment); the provider is passed in.
    await sync_to_async(Analysis.objects.filter(pk=analysis.pk).update)(
        provider="anthropic", model=MODEL
    )


def write_project(root: Path, *, functions: int) -> Path:
    """A small codebase: ``functions`` functions spread over a few modules."""
    per_module = 10
    for module in range((functions + per_module - 1) // per_module):
        lines = ['"""Generated module."""\n']
        for index in range(module * per_module, min(functions, (module + 1) * per_module)):
            lines.append(
                f"\n\ndef function_{index}(value, limit={index}):\n"
                f'    """Function {index}."""\n'
                f"    if value > limit:\n"
                f"        return value - limit\n"
                f"    return helper_{module}(value) + {index}\n"
            )
        lines.append(f"\n\ndef helper_{module}(value):\n    return value * 2\n")
        (root / f"module_{module}.py").write_text("".join(lines))
    return root
