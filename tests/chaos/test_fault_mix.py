"""Drill 1, a fault mix (issue 13): five analyses of five repositories by three users run at
once on three worker processes, against the fake API as its own process answering 20 % 529,
10 % 429, 5 % hangs and 2 % connection resets.

Every analysis finishes with every function reviewed; no window of the budget's length holds
more requests at the fake than the budget allows, across all workers together; and the
requests stay within 1.1 x the expected minimum.

Scaled for CI: the budget's window is 6 s (18 requests, 3 a second) instead of a minute, so a
run of about 30 s spans five windows; the per-call timeout that ends a hang is 2 s (90 s in
production); backoff, retry-budget window and breaker recovery are scaled likewise
(``fleet.SCALED_SETTINGS``). The bounds asserted are the issue's.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from analyses.models import Analysis, AnalysisStatus, LLMCall
from reliability.fake_anthropic import Fault
from tests.api_support import caller
from tests.budget_support import busiest_window
from tests.chaos.fleet import (
    SCALED_SETTINGS,
    Fleet,
    analysis_durations,
    anthropic_controls,
    breaker_transitions,
    common_figures,
    figure_block,
    reviewable_units,
    units_without_result,
    write_repositories,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
]

FAULT_MIX = {"overloaded": 0.20, "rate_limit": 0.10, "hang": 0.05, "reset": 0.02}
SUCCESS_PER_ATTEMPT = 1 - sum(FAULT_MIX.values())  # 0.63: each attempt succeeds independently
# The fake draws one fault per request, in arrival order, from this seed. With it, the 57
# reviews need at least 90 requests, the median over seeds 0-199 (see ``least_requests``).
SEED = 9
FUNCTIONS = (8, 9, 10, 11, 12)  # per repository: 57 reviewable units in all
USERS = ("ada", "grace", "linus")
# 3 requests a second, as a 60 s budget scaled down would allow; the window is 12 s, not less:
# the budget keeps 2 % of it for a request's lateness and its way to the fake, and a busy machine
# (CI runs drills beside other work) needs the 0.24 s that leaves.
BUDGET_WINDOW, BUDGET_REQUESTS = 12.0, 36
AI_TIMEOUT = float(SCALED_SETTINGS["EIDOLON_AI_TIMEOUT"])
HANG_SECONDS = 20.0
BREAKER = {
    "failure_threshold": 3,  # the product's default
    "recovery_timeout": 2.0,  # 120 s in production
    "slow_call_duration": 2.0,  # = the per-call timeout, as the defaults have it
    "half_open_max_duration": 4.0,
}


def least_requests(seed: int, *, reviews: int) -> int:
    """The fewest requests that review ``reviews`` units when the fake draws its faults with
    ``seed`` (as ``FakeAnthropic`` seeds and draws them): where the ``reviews``-th success falls."""
    rng, failing = random.Random(f"faults-{seed}"), sum(FAULT_MIX.values())
    successes = requests = 0
    while successes < reviews:
        requests += 1
        successes += rng.random() >= failing
    return requests


def fake_options() -> list[str]:
    rates = [f"--rate={kind}={rate}" for kind, rate in FAULT_MIX.items()]
    return [
        *rates,
        f"--seed={SEED}",
        "--latency=0.02:0.1",
        "--retry-after=0.5",  # what the 429s ask for
        f"--hang-seconds={HANG_SECONDS:g}",  # far past the per-call timeout: the client gives up
    ]


def timeouts(calls) -> list[float]:
    """Seconds after which each timed-out call gave up."""
    return sorted(
        ms / 1000 for ms in calls.filter(status="timeout").values_list("latency_ms", flat=True)
    )


def call_figures(calls) -> list[str]:
    statuses = Counter(calls.values_list("status", flat=True))
    return [
        "calls the workers recorded: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        "timed-out calls gave up after: " + ", ".join(f"{t:.2f} s" for t in timeouts(calls)),
    ]


class TestFaultMix:
    def test_the_seed_is_typical(self):
        reviews = sum(reviewable_units(functions) for functions in FUNCTIONS)
        spread = sorted(least_requests(seed, reviews=reviews) for seed in range(200))
        assert spread[60] <= least_requests(SEED, reviews=reviews) <= spread[140]

    @pytest.mark.timeout(180)
    def test_five_analyses_three_workers__all_reviewed_within_budget_and_least_cost(self, tmp_path):
        anthropic_controls(
            breaker=BREAKER,
            budget={"requests_per_window": BUDGET_REQUESTS, "window_seconds": BUDGET_WINDOW},
        )
        callers = [caller(name) for name in USERS]
        repositories = write_repositories(tmp_path, FUNCTIONS)
        owners = [callers[index % len(callers)] for index in range(len(repositories))]
        units = sum(reviewable_units(count) for count in FUNCTIONS)
        expected_minimum = units / SUCCESS_PER_ATTEMPT

        with Fleet(
            source_root=tmp_path, fake_args=fake_options(), settings=SCALED_SETTINGS
        ) as fleet:
            began = time.time()
            submitted = {
                fleet.submit(who, repository): who
                for who, repository in zip(owners, repositories, strict=True)
            }
            try:
                fleet.wait_finished(submitted, timeout=140)
            finally:
                took = time.time() - began
                memory = fleet.peak_memory()
                requests = fleet.fake_log()
            details = [fleet.analysis(who, pk) for pk, who in submitted.items()]

        durations = analysis_durations(submitted)
        figures = common_figures(
            requests,
            window=BUDGET_WINDOW,
            durations=durations,
            transitions=breaker_transitions(),
            memory=memory,
            began=began,
        )
        calls = LLMCall.objects.filter(analysis__in=submitted)
        timed_out_after = timeouts(calls)
        least = least_requests(SEED, reviews=units)
        busiest = busiest_window([r.at for r in requests], window=BUDGET_WINDOW)
        print(
            figure_block(
                "drill 1: fault mix",
                [
                    f"{len(submitted)} analyses, {units} units, 3 users, 3 workers: "
                    f"all finished {took:.1f} s after submission (cluster up in "
                    f"{fleet.started_in:.1f} s)",
                    f"budget: {BUDGET_REQUESTS} requests per {BUDGET_WINDOW:g} s window",
                    f"expected minimum {units} / {SUCCESS_PER_ATTEMPT:.2f} = "
                    f"{expected_minimum:.1f} requests (bound 1.1 x = {1.1 * expected_minimum:.1f});"
                    f" this seed's draws allow {least}",
                    *figures,
                    *call_figures(calls),
                ],
            )
        )

        analyses = Analysis.objects.filter(pk__in=submitted)
        assert {a.status for a in analyses} == {AnalysisStatus.COMPLETED}, [
            (a.pk, a.status, a.status_reason) for a in analyses
        ]
        assert not units_without_result(submitted)
        assert sum(a.functions_total for a in analyses) == units
        assert all(d["analyzed"] == d["total"] for d in details)
        assert max(a.started_at for a in analyses) < min(a.finished_at for a in analyses), (
            "the five analyses ran at once"
        )
        assert busiest <= BUDGET_REQUESTS, f"{busiest} requests within {BUDGET_WINDOW} s"
        assert len(requests) <= 1.1 * expected_minimum
        faults = {request.fault for request in requests}
        assert {Fault.OVERLOADED, Fault.RATE_LIMIT, Fault.HANG, Fault.RESET} <= faults
        assert sum(a.llm_requests for a in analyses) == len(requests) == calls.count()
        hangs = sum(1 for request in requests if request.fault == Fault.HANG)
        # Each hang was cut by the client's per-call timeout, long before the fake let go.
        assert len(timed_out_after) >= hangs
        assert all(AI_TIMEOUT - 0.1 <= seconds < HANG_SECONDS / 2 for seconds in timed_out_after)
