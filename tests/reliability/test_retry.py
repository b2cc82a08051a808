"""The retry policy, Retry-After parsing, the retry budget and outcome classification."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import anthropic
import httpx2
import pytest

from reliability.exceptions import CallTimeoutError
from reliability.outcomes import BreakerVerdict, classify_exception, classify_status
from reliability.retry import RetryBudget, RetryPolicy, parse_retry_after
from tests.clocks import FakeClock

NOW = 1_800_000_000.0


class TestRetryAfter:
    def test_milliseconds_header_wins(self):
        headers = {"retry-after-ms": "1500", "retry-after": "9"}
        assert parse_retry_after(headers, now=NOW) == 1.5

    def test_seconds(self):
        assert parse_retry_after({"Retry-After": "2"}, now=NOW) == 2.0
        assert parse_retry_after({"retry-after": "0.25"}, now=NOW) == 0.25

    def test_http_date(self):
        when = datetime.fromtimestamp(NOW + 30, tz=UTC)
        assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=NOW) == (
            pytest.approx(30.0)
        )

    def test_http_date_in_the_past_means_now(self):
        when = datetime.fromtimestamp(NOW - 30, tz=UTC)
        assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=NOW) == 0

    @pytest.mark.parametrize("raw", ["soon", "-5", "", "1e9"])
    def test_nonsense_is_ignored(self, raw):
        assert parse_retry_after({"retry-after": raw}, now=NOW) is None

    def test_absent(self):
        assert parse_retry_after({}, now=NOW) is None


class TestRetryPolicy:
    def test_full_jitter_stays_under_the_capped_exponential(self):
        policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
        rng = random.Random(1)
        for retry_number, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
            delays = [policy.backoff(retry_number, rng=rng) for _ in range(500)]
            assert 0 <= min(delays) and max(delays) <= ceiling
            assert max(delays) > 0.8 * ceiling  # the whole range is used: full jitter

    def test_a_server_hint_is_a_floor(self):
        policy = RetryPolicy()
        rng = random.Random(2)
        delays = [policy.delay(1, retry_after=2.0, rng=rng) for _ in range(200)]
        assert min(delays) >= 2.0 and max(delays) <= 2.2

    def test_invalid_policies_are_refused(self):
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy(max_attempts=0)
        with pytest.raises(ValueError, match="base_delay"):
            RetryPolicy(base_delay=5, max_delay=1)


class TestRetryBudget:
    def test_retries_are_capped_at_the_ratio_of_calls(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.2, window=60, min_retries=0, clock=clock)
        for _ in range(50):
            budget.record_call()
        granted = sum(budget.try_acquire_retry() for _ in range(50))
        assert granted == 10

    def test_a_quiet_process_still_gets_its_minimum(self):
        budget = RetryBudget(ratio=0.2, window=60, min_retries=3, clock=FakeClock())
        budget.record_call()
        assert [budget.try_acquire_retry() for _ in range(4)] == [True, True, True, False]

    def test_the_window_slides(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.5, window=10, min_retries=0, clock=clock)
        for _ in range(4):
            budget.record_call()
        assert budget.try_acquire_retry() and budget.try_acquire_retry()
        assert not budget.try_acquire_retry()
        clock.advance(11)
        for _ in range(2):
            budget.record_call()
        assert budget.try_acquire_retry()


def status_error(status: int, *, message: str = "error", headers: dict | None = None):
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return anthropic.APIStatusError(message, response=response, body=None)


class TestClassification:
    @pytest.mark.parametrize(
        ("status", "verdict", "retryable"),
        [
            (500, BreakerVerdict.FAILURE, True),
            (503, BreakerVerdict.FAILURE, True),
            (529, BreakerVerdict.FAILURE, True),
            (408, BreakerVerdict.FAILURE, True),
            (409, BreakerVerdict.IGNORED, True),
            (429, BreakerVerdict.IGNORED, True),
            (401, BreakerVerdict.FAILURE, False),
            (403, BreakerVerdict.FAILURE, False),
            (400, BreakerVerdict.IGNORED, False),
            (404, BreakerVerdict.IGNORED, False),
            (413, BreakerVerdict.IGNORED, False),
            (422, BreakerVerdict.IGNORED, False),
        ],
    )
    def test_status_table(self, status, verdict, retryable):
        outcome = classify_exception(status_error(status), now=NOW)
        assert (outcome.verdict, outcome.retryable, outcome.status) == (verdict, retryable, status)

    def test_429_is_backpressure_with_its_retry_after(self):
        outcome = classify_exception(status_error(429, headers={"retry-after": "2"}), now=NOW)
        assert outcome.rate_limited and outcome.retry_after == 2.0

    def test_a_spend_limit_429_is_never_retried(self):
        outcome = classify_status(
            429, headers={}, message="You have reached your monthly spend limit", now=NOW
        )
        assert (outcome.reason, outcome.retryable) == ("spend_limit", False)
        assert outcome.verdict is BreakerVerdict.FAILURE

    @pytest.mark.parametrize(
        "exc",
        [
            CallTimeoutError(target="x", timeout=1),
            TimeoutError(),
            anthropic.APITimeoutError(request=httpx2.Request("POST", "http://127.0.0.1/")),
            anthropic.APIConnectionError(request=httpx2.Request("POST", "http://127.0.0.1/")),
            ConnectionResetError(),
        ],
    )
    def test_timeouts_and_connection_errors_fail_and_are_retried(self, exc):
        outcome = classify_exception(exc, now=NOW)
        assert outcome.verdict is BreakerVerdict.FAILURE and outcome.retryable

    def test_our_own_bugs_are_neither_retried_nor_blamed_on_the_service(self):
        outcome = classify_exception(KeyError("oops"), now=NOW)
        assert outcome.verdict is BreakerVerdict.IGNORED and not outcome.retryable
