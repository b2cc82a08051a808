"""What a guarded call costs: the guard around a no-op, on SQLite and on PostgreSQL.

    python benchmarks/guard_overhead.py [--calls N] [--postgres URL | --no-postgres]
                                        [--processes 1 8 [--only-processes]]

Each database runs in its own child process (Django is configured once per process), on a
fresh database it creates and removes. Printed per database, measured in the same run:
an unguarded no-op await, pybreaker's in-memory breaker around a no-op, and Eidolon's guard
(breaker admission, budget reservation, timeout, outcome record, token reconciliation) around
a no-op. Target: under 1 ms per guarded call on both databases.

With ``--processes 1 8`` (say), contention: N processes on one database, each making the same
guarded calls at once (a shared start time) against the same breaker and budget rows; printed per
N: the per-call time in each process beside an unguarded call, and the guarded calls and row
updates per second all processes together sustained. The 8-process figure on PostgreSQL is what
``docs/BENCHMARKS.md``'s estimate of one primary's ceiling starts from.

Then the cost of counting every query (``reliability.dbmetrics``, the execute wrapper every
connection gets): the guarded call with the wrapper and without it, in alternating child
processes, the median of each; target: under 5 % more per guarded call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, child_environment, run_json_child, scratch_database

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


WARM_UP_CALLS = 50


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


def prepare_rows() -> None:
    """The tables, and the breaker and budget every guarded call of the run goes through."""
    from django.core.management import call_command

    from reliability.models import CircuitBreaker, RateLimitBudget

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


def measure_in_this_process(
    calls: int, *, db_metrics: bool = True, together: bool = False
) -> dict[str, dict[str, float]]:
    """The figures of one process. ``together``: the rows exist already (other processes share
    them), and the guarded calls start when the parent says so, with the others'."""
    import asyncio

    import django

    django.setup()
    if not db_metrics:
        from reliability import dbmetrics

        dbmetrics.uninstall()  # before the first connection: no connection gets the wrapper
    import pybreaker

    from reliability.guard import Attempt, Guard, TokenEstimate
    from reliability.models import CircuitBreaker
    from reliability.retry import RetryBudget, RetryPolicy

    if not together:
        prepare_rows()
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

    async def pybreaker_call() -> None:
        in_memory.call(noop_sync)

    async def guarded_call() -> None:
        await guard.call(noop_attempt, estimate=TokenEstimate(10, 5))

    async def run() -> dict[str, dict[str, float]]:
        await timed(guarded_call, WARM_UP_CALLS)  # warm-up: connections, compiled queries
        await guard.drain()
        results = {
            "unguarded no-op": summary(await timed(noop, calls)),
            "pybreaker (in memory)": summary(await timed(pybreaker_call, calls)),
        }
        if together:  # the parent says go when every process is ready
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        queries_before = counted_queries()
        wall_began, began = time.time(), time.perf_counter()
        results["eidolon guard"] = summary(await timed(guarded_call, calls))
        await guard.drain()  # successes are recorded in the background: count that time too
        sustained = (time.perf_counter() - began) / calls
        results["eidolon guard"]["sustained_us"] = sustained * 1e6
        results["eidolon guard"]["queries_per_call"] = (counted_queries() - queries_before) / calls
        results["wall"] = {"began": wall_began, "ended": time.time()}
        await guard.aclose()
        return results

    results = asyncio.run(run())
    if db_metrics:
        results["db metrics"] = {"wrapper_us_per_query": wrapper_cost_per_query() * 1e6}
    if not together:
        breaker = CircuitBreaker.objects.get(name="bench")
        assert breaker.total_successes == calls + WARM_UP_CALLS, "every guarded call was recorded"
    return results


def prepare_and_count(*, count: bool) -> dict[str, int]:
    """Child: make the shared rows, or count the successes the breaker recorded."""
    import django

    django.setup()
    from reliability.models import CircuitBreaker

    if not count:
        prepare_rows()
        return {}
    return {"successes": CircuitBreaker.objects.get(name="bench").total_successes}


def counted_queries() -> float:
    """Queries counted so far by the execute wrapper, in this process (0 without it)."""
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "eidolon_db_queries"
        for sample in family.samples
        if sample.name == "eidolon_db_queries_total"
    )


def wrapper_cost_per_query(repeat: int = 200_000) -> float:
    """Seconds the execute wrapper adds to one query (its SQL text parsed already, as it is
    after the first time): the wrapper around a no-op execute, minus the no-op alone."""
    from reliability.dbmetrics import record_queries

    sql = 'UPDATE "reliability_circuitbreaker" SET "total_successes" = 1 WHERE "name" = %s'

    def execute(sql, params, many, context):
        return None

    began = time.perf_counter()
    for _ in range(repeat):
        execute(sql, (), False, {})
    bare = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(repeat):
        record_queries(execute, sql, (), False, {})
    return (time.perf_counter() - began - bare) / repeat


def run_child(
    database_url: str, calls: int, *, db_metrics: bool = True
) -> dict[str, dict[str, float]]:
    flags = [] if db_metrics else ["--no-db-metrics"]
    return run_json_child(
        [sys.executable, __file__, "--child", "--calls", str(calls), *flags],
        child_environment(database_url, log_level="WARNING"),
    )


def contend(database_url: str, calls: int, processes: int) -> dict:
    """``processes`` children make ``calls`` guarded calls each at once on the same rows."""
    env = child_environment(database_url, log_level="WARNING")
    run_json_child([sys.executable, __file__, "--child", "--prepare"], env)
    argv = [sys.executable, __file__, "--child", "--calls", str(calls), "--together"]
    children = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    for child in children:  # each warmed up, its connection open
        if "ready\n" not in iter(child.stdout.readline, ""):
            raise RuntimeError("a contending child failed before it was ready")
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        output, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"a contending child failed ({child.returncode})")
        results.append(json.loads(output.strip().splitlines()[-1]))
    late = max(r["wall"]["began"] for r in results) - min(r["wall"]["began"] for r in results)
    successes = run_json_child([sys.executable, __file__, "--child", "--count"], env)["successes"]
    expected = processes * (calls + WARM_UP_CALLS)
    assert successes == expected, f"{successes} successes recorded of {expected} calls"
    span = max(r["wall"]["ended"] for r in results) - min(r["wall"]["began"] for r in results)
    guarded = [r["eidolon guard"] for r in results]
    return {
        "processes": processes,
        "unguarded_mean_us": statistics.median(r["unguarded no-op"]["mean_us"] for r in results),
        "guarded_mean_us": statistics.median(g["mean_us"] for g in guarded),
        "guarded_p99_us": max(g["p99_us"] for g in guarded),
        "sustained_us": statistics.median(g["sustained_us"] for g in guarded),
        "calls_per_s": processes * calls / span,
        "statements_per_call": statistics.median(g["queries_per_call"] for g in guarded),
        "start_spread_s": late,
    }


def print_contention(database: str, figures: list[dict], calls: int) -> None:
    print(f"\n{database}: processes calling at once, {calls} guarded calls each, same rows")
    baseline = figures[0]
    for row in figures:
        mean_ms, p99_ms = row["guarded_mean_us"] / 1000, row["guarded_p99_us"] / 1000
        print(
            f"  {row['processes']} process(es): guarded call mean {mean_ms:.3f} ms (median of "
            f"the processes; p99 of the worst {p99_ms:.2f} ms), sustained "
            f"{row['sustained_us'] / 1000:.3f} ms; unguarded "
            f"{row['unguarded_mean_us']:.2f} us; all together {row['calls_per_s']:.0f} guarded "
            f"calls/s = {row['calls_per_s'] * row['statements_per_call']:.0f} statements/s on the "
            f"breaker and budget rows ({row['statements_per_call']:.2f} per call); "
            f"{row['calls_per_s'] / baseline['calls_per_s']:.2f}x the first row's calls/s, "
            f"per call {row['guarded_mean_us'] / baseline['guarded_mean_us']:.2f}x its time"
        )


def compare_db_metrics(database: str, postgres: str | None, calls: int, rounds: int) -> None:
    """The guarded call (sustained) with and without the query-counting execute wrapper."""
    figures: dict[bool, list[float]] = {True: [], False: []}
    per_query, queries = [], []
    for _ in range(rounds):
        for db_metrics in (False, True):
            with scratch_database(postgres) as url:
                result = run_child(url, calls, db_metrics=db_metrics)
            figures[db_metrics].append(result["eidolon guard"]["sustained_us"])
            if db_metrics:
                per_query.append(result["db metrics"]["wrapper_us_per_query"])
                queries.append(result["eidolon guard"]["queries_per_call"])
    without, with_ = statistics.median(figures[False]), statistics.median(figures[True])
    ratio = with_ / without
    added = statistics.median(per_query) * statistics.median(queries)
    share = added / without
    print(f"\n{database}: counting every query (eidolon_db_queries_total), {rounds} rounds")
    print(f"  guarded call without the wrapper: {without:8.1f} us  (rounds: {_us(figures[False])})")
    print(f"  guarded call with the wrapper:    {with_:8.1f} us  (rounds: {_us(figures[True])})")
    print(
        f"  A/B ratio of the medians: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %; noisy on a busy box)"
    )
    print(
        f"  the wrapper itself: {statistics.median(per_query):.2f} us per query x "
        f"{statistics.median(queries):.2f} queries per guarded call = {added:.1f} us "
        f"= {share * 100:.2f} % of the call -> "
        f"{'meets' if share < 0.05 else 'MISSES'} the 5 % target"
    )


def _us(samples: list[float]) -> str:
    return ", ".join(f"{sample:.0f}" for sample in samples)


def print_table(database: str, results: dict[str, dict[str, float]]) -> None:
    baseline = results["unguarded no-op"]["mean_us"]
    print(f"\n{database}")
    print(f"  {'call':<24}{'mean':>11}{'p50':>11}{'p99':>11}   vs unguarded")
    for name, figures in results.items():
        if "mean_us" not in figures:
            continue
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
    parser.add_argument(
        "--db-metrics-rounds",
        type=int,
        default=3,
        help="rounds of the with/without query-counting comparison (0: skip it)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        help="also measure N processes calling at once on the same rows (e.g. --processes 1 8)",
    )
    parser.add_argument(
        "--only-processes", action="store_true", help="skip the single-process tables"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-db-metrics", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--together", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and (args.prepare or args.count):
        print(json.dumps(prepare_and_count(count=args.count)))
        return 0
    if args.child:
        results = measure_in_this_process(
            args.calls, db_metrics=not args.no_db_metrics, together=args.together
        )
        print(json.dumps(results))
        return 0
    if args.processes:
        contention(args)
        if args.only_processes:
            return 0

    print(f"guard overhead, {args.calls} sequential calls per row")
    with scratch_database() as url:
        print_table("SQLite (WAL)", run_child(url, args.calls))
    if not args.no_postgres:
        with scratch_database(args.postgres) as url:
            print_table("PostgreSQL", run_child(url, args.calls))
    if args.db_metrics_rounds:
        compare_db_metrics("SQLite (WAL)", None, args.calls, args.db_metrics_rounds)
        if not args.no_postgres:
            compare_db_metrics("PostgreSQL", args.postgres, args.calls, args.db_metrics_rounds)
    return 0


def contention(args: argparse.Namespace) -> None:
    databases = [("SQLite (WAL)", None)]
    if not args.no_postgres:
        databases.append(("PostgreSQL", args.postgres))
    for database, server in databases:
        figures = []
        for processes in args.processes:
            with scratch_database(server) as url:
                figures.append(contend(url, args.calls, processes))
        print_contention(database, figures, args.calls)
        print(json.dumps({"database": database, "contention": figures}))


if __name__ == "__main__":
    sys.exit(main())
