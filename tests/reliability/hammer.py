"""A separate OS process that hammers one breaker and one budget through the guard.

    python -m tests.reliability.hammer --base-url URL --breaker B --budget B --calls N
        [--for-seconds S]

Prints READY once warmed up, reads the epoch to start at from standard input, then prints one
JSON line: how many attempts it made (by outcome) and how many calls it made.
Used by the multi-process tests; the database comes from DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter

WARM_UP = "warm-up"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--breaker", required=True)
    parser.add_argument("--budget")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--for-seconds", type=float, default=0.0)
    parser.add_argument("--max-attempts", type=int, default=3)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eidolon_site.settings")
    import django

    django.setup()
    return asyncio.run(hammer(args))


async def hammer(args: argparse.Namespace) -> int:
    import anthropic
    from asgiref.sync import sync_to_async

    from reliability import breaker
    from reliability.exceptions import ReliabilityError
    from reliability.guard import Guard, TokenEstimate
    from reliability.retry import RetryBudget, RetryPolicy
    from tests.anthropic_support import MODEL, ask

    client = anthropic.AsyncAnthropic(
        api_key="hammer-key", base_url=args.base_url, max_retries=0, timeout=30.0
    )
    guard = Guard(
        target=args.breaker,
        budget=args.budget,
        timeout=30.0,
        retry_policy=RetryPolicy(max_attempts=args.max_attempts, base_delay=0.01, max_delay=0.05),
        retry_budget=RetryBudget(min_retries=10_000),
    )
    attempts: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def count_attempt(report) -> None:
        attempts[report.outcome.verdict.value] += 1

    async def one_call(number: int) -> None:
        call = ask(client, f"pid {os.getpid()} call {number}", max_tokens=50)
        try:
            await guard.call(call, estimate=TokenEstimate(20, 20), on_attempt=count_attempt)
            calls["succeeded"] += 1
        except ReliabilityError as error:
            calls[type(error).__name__] += 1
        except anthropic.APIError as error:
            calls[type(error).__name__] += 1

    # Warm up outside the budget (imports, the connection, the first reply's parsing, which
    # blocks the event loop for a while), as a long-running worker already is.
    await client.messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": WARM_UP}]
    )
    await sync_to_async(breaker.get_or_create_breaker)(args.breaker)  # and the database connection
    # Tell the test we are warm, then start when it says so (an epoch on standard input).
    print("READY", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    if args.for_seconds:
        deadline = time.monotonic() + args.for_seconds
        number, pending = 0, []
        while time.monotonic() < deadline:
            number += 1
            pending.append(asyncio.create_task(one_call(number)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
    else:
        await asyncio.gather(*(one_call(number) for number in range(args.calls)))
    await guard.aclose()
    print(json.dumps({"pid": os.getpid(), "attempts": attempts, "calls": calls}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
