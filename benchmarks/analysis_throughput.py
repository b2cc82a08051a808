"""How fast analyses go through the whole stack, against the fake API over loopback.

    python benchmarks/analysis_throughput.py [--functions N] [--postgres URL]

1. Throughput: the fake answers in 200 ms and an analysis runs 10 calls at once, so no
   implementation can beat 50 functions/s. Target: at least 90 % of that bound.
2. Rate limit: a budget of 600 requests per minute (scaled to a 10 s window: 100 requests per
   10 s, the same rate, so the run spans several windows). Target: the achieved rate is 95-100 %
   of the limit, and no window ever holds more than the limit (arrival times at the fake).

Each scenario runs in a child process on a fresh database (SQLite by default).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, child_environment, run_json_child, scratch_database


def write_project(root: Path, functions: int) -> None:
    for module in range((functions + 9) // 10):
        body = ['"""Generated."""\n']
        for index in range(module * 10, min(functions, module * 10 + 10)):
            body.append(
                f"\n\ndef f_{index}(value):\n    if value > {index}:\n"
                f"        return value - {index}\n    return value\n"
            )
        (root / f"m_{module}.py").write_text("".join(body))


def start_fake(*, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """The fake API in a process of its own, as the real one is on another machine."""
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "fake_anthropic",
            "--port",
            "0",
            "--latency",
            "0.2",
            "--responder",
            "review",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stdout:
        if match := re.search(r"(http://127\.0\.0\.1:\d+)", line):
            base_url = match.group(1)
            break
    else:
        raise RuntimeError("the fake did not start")
    # The fake advertises its limits in anthropic-ratelimit-* headers, which tighten the
    # budget: make them generous, so that only the budget under test limits the rate.
    control(
        base_url,
        "config",
        {"input_tokens_limit": 10**8, "output_tokens_limit": 10**8, "rpm_limit": 10**6},
    )
    return process, base_url


def control(base_url: str, what: str, payload: object | None = None) -> object:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"{base_url}/_fake/{what}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def scenario(name: str, *, functions: int, base_url: str) -> dict:
    import asyncio

    import django

    django.setup()
    from django.core.management import call_command

    from analyses.orchestrator import run_analysis
    from analyses.providers.anthropic import AnthropicProvider
    from analyses.services import analysis_create
    from reliability.guard import Guard
    from reliability.models import CircuitBreaker, RateLimitBudget
    from reliability.retry import RetryBudget, RetryPolicy
    from tests.budget_support import busiest_window

    call_command("migrate", verbosity=0)
    rate_limited = name == "rate"
    window, limit = 10.0, 100
    # migrate made both with the defaults (first-start rows): fresh ones, tuned for the run
    CircuitBreaker.objects.filter(name="anthropic").delete()
    RateLimitBudget.objects.filter(name="anthropic").delete()
    CircuitBreaker.objects.create(
        name="anthropic", state_changed_at=time.time(), window_started_at=time.time()
    )
    RateLimitBudget.objects.create(
        name="anthropic",
        window_seconds=window if rate_limited else 60,
        requests_per_window=limit if rate_limited else 10**6,
        input_tokens_per_window=10**9,
        output_tokens_per_window=10**9,
        requests_per_day=10**7,
    )
    control(base_url, "reset", {})
    with tempfile.TemporaryDirectory() as scratch:
        write_project(Path(scratch), functions)
        analysis = analysis_create(
            source=scratch,
            provider="static",
            allow_any_path=True,
            concurrency=20 if rate_limited else 10,
        )
        guard = Guard(
            target="anthropic",
            budget="anthropic",
            timeout=30,
            retry_policy=RetryPolicy(),
            retry_budget=RetryBudget(),
        )
        provider = AnthropicProvider(
            api_key="bench",
            base_url=base_url,
            model="claude-sonnet-5-5",
            max_tokens=1024,
            timeout=30,
            guard=guard,
        )
        began = time.monotonic()
        status = asyncio.run(run_analysis(analysis.pk, provider=provider))
        elapsed = time.monotonic() - began
    arrivals = [record["received_monotonic"] for record in control(base_url, "log")]
    analysis.refresh_from_db()
    result = {
        "status": status,
        "functions": analysis.functions_total,
        "analysed": analysis.functions_analyzed,
        "requests": len(arrivals),
        "elapsed_s": elapsed,
        "functions_per_s": analysis.functions_analyzed / elapsed,
    }
    if len(arrivals) > 1:
        ordered = sorted(arrivals)
        # From the first request to the last: the pipeline at work, without start-up and summary.
        result["steady_per_s"] = (len(ordered) - 1) / (ordered[-1] - ordered[0])
    if rate_limited and len(arrivals) > 1:
        result["rate_per_s"] = result["steady_per_s"]
        result["limit_per_s"] = limit / window
        result["max_in_any_window"] = busiest_window(arrivals, window=window)
        result["window_limit"] = limit
    return result


def run_scenario(name: str, *, functions: int, postgres: str | None) -> dict:
    """One scenario in a child process, on a fresh database, against a fake of its own."""
    with scratch_database(postgres) as url:
        env = child_environment(url)
        fake, base_url = start_fake(env=env)
        try:
            return run_json_child(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--functions",
                    str(functions),
                    "--base-url",
                    base_url,
                ],
                env,
            )
        finally:
            fake.terminate()
            fake.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument(
        "--postgres", help="run on a scratch database of this PostgreSQL server, not SQLite"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scenario(args.child, functions=args.functions, base_url=args.base_url)))
        return 0
    throughput = run_scenario("throughput", functions=args.functions, postgres=args.postgres)
    bound = 10 / 0.2
    print(f"throughput ({throughput['functions']} functions, 200 ms per call, 10 at once)")
    print(
        f"  {throughput['functions_per_s']:.1f} functions/s start to finish = "
        f"{100 * throughput['functions_per_s'] / bound:.1f}% of the {bound:.0f}/s bound; "
        f"{throughput['steady_per_s']:.1f}/s from first to last request = "
        f"{100 * throughput['steady_per_s'] / bound:.1f}% (target >= 90%); "
        f"{throughput['requests']} requests, status {throughput['status']}"
    )

    rate = run_scenario("rate", functions=args.functions, postgres=args.postgres)
    print("rate limit (600 requests/minute, as 100 per 10 s)")
    print(
        f"  achieved {rate['rate_per_s']:.2f}/s = "
        f"{100 * rate['rate_per_s'] / rate['limit_per_s']:.1f}% of {rate['limit_per_s']:.0f}/s "
        f"(target 95-100%); busiest 10 s window held "
        f"{rate['max_in_any_window']} of {rate['window_limit']} allowed; "
        f"{rate['requests']} requests over {rate['elapsed_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
