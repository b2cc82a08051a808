"""What a guarded call costs: the guard around a no-op, on SQLite and on PostgreSQL.

    python benchmarks/guard_overhead.py [--calls N] [--postgres URL | --no-postgres]

Each database runs in its own child process (Django is configured once per process), on a
fresh database it creates and removes. Printed per database, measured in the same run:
an unguarded no-op await, pybreaker's in-memory breaker around a no-op, and Eidolon's guard
(breaker admission, budget reservation, timeout, outcome record, token reconciliation) around
a no-op. Target: under 1 ms per guarded call on both databases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import child_environment, run_json_child, scratch_database

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "mean_us": statistics.fmean(samples) * 1e6,
        "p50_us": percentile(samples, 0.50) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
    }


def measure_in_this_process(calls: int) -> dict[str, dict[str, float]]:
    import asyncio

    import django

    django.setup()
    import pybreaker
    from django.core.management import call_command

    from reliability.guard import Attempt, Guard, TokenEstimate
    from reliability.models import CircuitBreaker, RateLimitBudget
    from reliability.retry import RetryBudget, RetryPolicy

    call_command("migrate", verbosity=0)
    CircuitBreaker.objects.create(
        name="bench", state_changed_at=time.time(), window_started_at=time.time()
    )
    RateLimitBudget.objects.create(
        name="bench",
        requests_per_window=10**9,
        input_tokens_per_window=10**9,
        output_tokens_per_window=10**9,
        requests_per_day=10**9,
        window_seconds=60,
    )
    guard = Guard(
        target="bench",
        budget="bench",
        timeout=5.0,
        retry_policy=RetryPolicy(),
        retry_budget=RetryBudget(),
    )
    in_memory = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    async def noop_attempt(attempt: Attempt) -> None:
        attempt.observe(input_tokens=10, output_tokens=5)

    async def noop() -> None:
        return None

    def noop_sync() -> None:
        return None

    async def timed(make_call, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            await make_call()
            samples.append(time.perf_counter() - began)
        return samples

    async def pybreaker_call() -> None:
        in_memory.call(noop_sync)

    async def guarded_call() -> None:
        await guard.call(noop_attempt, estimate=TokenEstimate(10, 5))

    async def run() -> dict[str, dict[str, float]]:
        await timed(guarded_call, 50)  # warm-up: connections, compiled queries
        await guard.drain()
        results = {
            "unguarded no-op": summary(await timed(noop, calls)),
            "pybreaker (in memory)": summary(await timed(pybreaker_call, calls)),
        }
        began = time.perf_counter()
        results["eidolon guard"] = summary(await timed(guarded_call, calls))
        await guard.drain()  # successes are recorded in the background: count that time too
        sustained = (time.perf_counter() - began) / calls
        results["eidolon guard"]["sustained_us"] = sustained * 1e6
        await guard.aclose()
        return results

    results = asyncio.run(run())
    breaker = CircuitBreaker.objects.get(name="bench")
    assert breaker.total_successes == calls + 50, "every guarded call was recorded"
    return results


def run_child(database_url: str, calls: int) -> dict[str, dict[str, float]]:
    return run_json_child(
        [sys.executable, __file__, "--child", "--calls", str(calls)],
        child_environment(database_url, log_level="WARNING"),
    )


def print_table(database: str, results: dict[str, dict[str, float]]) -> None:
    baseline = results["unguarded no-op"]["mean_us"]
    print(f"\n{database}")
    print(f"  {'call':<24}{'mean':>11}{'p50':>11}{'p99':>11}   vs unguarded")
    for name, figures in results.items():
        print(
            f"  {name:<24}{figures['mean_us']:>9.1f}us{figures['p50_us']:>9.1f}us"
            f"{figures['p99_us']:>9.1f}us   {figures['mean_us'] / baseline:>8.0f}x"
        )
    guarded = results["eidolon guard"]["sustained_us"] / 1000
    verdict = "meets" if guarded < 1.0 else "MISSES"
    print(
        f"  guarded call, sustained (the caller's wait plus the outcomes recorded in the "
        f"background): {guarded:.3f} ms per call -> {verdict} the 1 ms target"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_in_this_process(args.calls)))
        return 0

    print(f"guard overhead, {args.calls} sequential calls per row")
    with scratch_database() as url:
        print_table("SQLite (WAL)", run_child(url, args.calls))
    if not args.no_postgres:
        with scratch_database(args.postgres) as url:
            print_table("PostgreSQL", run_child(url, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
