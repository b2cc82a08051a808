"""Several OS processes share one breaker and one budget on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import BreakerState, CircuitBreaker, RateLimitBudget
from tests.budget_support import busiest_window
from tests.processes import ROOT, subprocess_environment
from tests.reliability.hammer import WARM_UP

PROCESSES = 4

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_hammers(fake: FakeAnthropic, *args: str, faults: dict) -> list[dict]:
    """Run the hammers; once all are warm, the fake starts misbehaving and they start together."""
    env = subprocess_environment(EIDOLON_LOG_LEVEL="WARNING")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.hammer", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for process in processes:
            ready = process.stdout.readline()
            assert ready.strip() == "READY", ready + process.stderr.read()
        fake.configure(**faults)
        start_at = time.time() + 0.5
        results = []
        for process in processes:
            process.stdin.write(f"{start_at}\n")
            process.stdin.flush()
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class TestSharedBudget:
    def test_no_window_holds_more_requests_than_the_limit__and_every_outcome_is_counted(self):
        # Departures follow the slots exactly; arrivals jitter with the senders' scheduling
        # (2 cores, 5 processes here). The budget's 2 % headroom absorbs that: 200 ms for this
        # 10 s window, as it is 1.2 s for a real one-minute window.
        limit, window = 50, 10.0
        RateLimitBudget.objects.create(
            name="shared",
            requests_per_window=limit,
            window_seconds=window,
            input_tokens_per_window=1_000_000,
            output_tokens_per_window=1_000_000,
            requests_per_day=100_000,
        )
        CircuitBreaker.objects.create(
            name="shared",
            failure_threshold=1_000,
            failure_rate_threshold=100,
            minimum_calls=1_000,
            window_size=1_000,
            state_changed_at=time.time(),
            window_started_at=time.time(),
        )
        with FakeAnthropic(config=FakeConfig(seed=7)).running() as fake:
            results = run_hammers(
                fake,
                "--base-url",
                fake.base_url,
                "--breaker",
                "shared",
                "--budget",
                "shared",
                "--calls",
                "15",
                "--max-attempts",
                "3",
                faults={"fault_rates": {"overloaded": 0.25}},
            )
            arrivals = [r.received_monotonic for r in fake.requests if r.prompt_text != WARM_UP]

        attempts = sum((Counter(r["attempts"]) for r in results), Counter())
        calls = sum((Counter(r["calls"]) for r in results), Counter())
        made = sum(attempts.values())
        breaker = CircuitBreaker.objects.get(name="shared")
        budget = RateLimitBudget.objects.get(name="shared")

        assert sum(calls.values()) == PROCESSES * 15
        assert len(arrivals) == made, "every attempt reached the fake exactly once"
        assert breaker.total_calls == made, (
            f"recorded {breaker.total_successes}+{breaker.total_failures}+"
            f"{breaker.total_ignored}, made {made}"
        )
        assert (breaker.total_successes, breaker.total_failures) == (
            attempts["success"],
            attempts["failure"],
        )
        assert budget.total_requests == made
        busiest = busiest_window(arrivals, window=window)
        assert busiest <= limit, f"{busiest} requests reached the API within {window} s"
        assert busiest >= limit - 1, "the budget was not used: the test proves nothing"


class TestSharedBreaker:
    def test_half_open_admits_exactly_the_permitted_probes_across_processes(self):
        permitted = 3
        CircuitBreaker.objects.create(
            name="probed",
            state=BreakerState.OPEN,
            recovery_timeout=1.0,
            state_changed_at=time.time() - 60,
            window_started_at=time.time(),
            half_open_max_calls=permitted,
            half_open_success_threshold=100,
            half_open_max_duration=120,
        )
        # Probes take 4 s, so every probe admitted in the 2 s of hammering is still in flight.
        with FakeAnthropic().running() as fake:
            results = run_hammers(
                fake,
                "--base-url",
                fake.base_url,
                "--breaker",
                "probed",
                "--for-seconds",
                "2",
                "--max-attempts",
                "1",
                faults={"latency_s": 4.0},
            )
            requests = [r for r in fake.requests if r.prompt_text != WARM_UP]

        calls = sum((Counter(r["calls"]) for r in results), Counter())
        breaker = CircuitBreaker.objects.get(name="probed")
        assert calls["succeeded"] == permitted
        assert len(requests) == permitted
        assert calls["CircuitOpenError"] > 50, "the processes really competed for the slots"
        assert breaker.state == BreakerState.HALF_OPEN
        assert breaker.total_successes == permitted
        assert breaker.total_rejected == calls["CircuitOpenError"]
        assert breaker.transitions.filter(to_state=BreakerState.HALF_OPEN).count() == 1
