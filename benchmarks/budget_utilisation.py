"""How much of the API's rate limits an analysis uses, against a fake that enforces them as the
API does.

    python benchmarks/budget_utilisation.py [--minutes N] [--postgres URL]

The default limits (50 requests, 40,000 input and 8,000 output tokens a minute), and a fake
enforcing the same limits with token buckets (``max_tokens`` charged when a request starts,
refunded to its usage when it ends) and answering every review with 300 output tokens after
1 s. The output tokens bind: 8,000 / 300 = 26.7 requests a minute. Targets: at least 90 % of
that over the run's first ``--minutes`` minutes (3 by default), no 60 s window holding more
output tokens than the limit, and under 1 % of requests answered 429.

It runs in a child process on a fresh database (SQLite by default).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import child_environment, run_json_child, scratch_database
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.fake_anthropic.ratelimits import estimated_input_tokens

OUTPUT_TOKENS_PER_REPLY = 300
LATENCY_S = 1.0
LIMITS = {"requests": 50, "input_tokens": 40_000, "output_tokens": 8_000}
WINDOW_S = 60.0


class FixedOutputFake(FakeAnthropic):
    """Every reply reports ``OUTPUT_TOKENS_PER_REPLY`` output tokens."""

    async def _reply(self, path: str, body: Any) -> tuple[dict[str, Any], tuple[int, int]]:
        payload, usage = await super()._reply(path, body)
        if "usage" in payload:
            payload["usage"]["output_tokens"] = OUTPUT_TOKENS_PER_REPLY
            usage = (usage[0], OUTPUT_TOKENS_PER_REPLY)
        return payload, usage


def write_project(root: Path, functions: int) -> None:
    body = ['"""Generated."""\n']
    for index in range(functions):
        body.append(
            f"\n\ndef f_{index}(value):\n    if value > {index}:\n"
            f"        return value - {index}\n    return value\n"
        )
    (root / "module.py").write_text("".join(body))


def measure(*, minutes: float, window_s: float = WINDOW_S, latency_s: float = LATENCY_S) -> dict:
    """Run one analysis against the limiting fake (in this process, Django set up); return the
    figures over the first ``minutes`` windows of ``window_s`` from its first request (tests
    compress time: a shorter window and latency, the same limits per window)."""
    import asyncio

    from analyses.orchestrator import run_analysis
    from analyses.providers.anthropic import AnthropicProvider
    from analyses.review_responder import review_responder
    from analyses.services import analysis_create
    from reliability.guard import Guard
    from reliability.models import CircuitBreaker, RateLimitBudget
    from reliability.ratelimit import get_or_create_budget
    from reliability.retry import RetryBudget, RetryPolicy

    limits = LIMITS
    bound_per_window = limits["output_tokens"] / OUTPUT_TOKENS_PER_REPLY
    CircuitBreaker.objects.get_or_create(
        name="anthropic", defaults={"state_changed_at": time.time()}
    )
    get_or_create_budget("anthropic")
    RateLimitBudget.objects.filter(name="anthropic").update(
        window_seconds=window_s,
        requests_per_window=limits["requests"],
        input_tokens_per_window=limits["input_tokens"],
        output_tokens_per_window=limits["output_tokens"],
    )
    fake = FixedOutputFake(
        config=FakeConfig(
            enforce_rate_limits=True,
            rpm_limit=limits["requests"],
            input_tokens_limit=limits["input_tokens"],
            output_tokens_limit=limits["output_tokens"],
            rpm_window_s=window_s,
            latency_s=latency_s,
            seed=1,
        ),
        responder=review_responder,
    )
    functions = math.ceil(bound_per_window * minutes * 1.15) + 5
    with tempfile.TemporaryDirectory() as scratch, fake.running():
        write_project(Path(scratch), functions)
        analysis = analysis_create(
            source=scratch, provider="static", allow_any_path=True, concurrency=5
        )
        provider = AnthropicProvider(
            api_key="bench",
            base_url=fake.base_url,
            model="claude-sonnet-5-5",
            max_tokens=2048,
            timeout=30,
            guard=Guard(
                target="anthropic",
                budget="anthropic",
                timeout=30,
                retry_policy=RetryPolicy(),
                retry_budget=RetryBudget(),
            ),
        )
        status = asyncio.run(run_analysis(analysis.pk, provider=provider))
        records = fake.requests
    return {"status": status, "functions": functions, **_figures(records, minutes, window_s)}


def _figures(records: list, minutes: float, window_s: float) -> dict[str, Any]:
    from tests.budget_support import busiest_window

    first = min(record.received_monotonic for record in records)
    end = first + minutes * window_s
    in_run = [record for record in records if record.received_monotonic < end]
    answered = [record for record in in_run if record.status == 200]
    ok_times = [record.received_monotonic for record in records if record.status == 200]
    return {
        "requests": len(in_run),
        "answered": len(answered),
        "refused_429": sum(1 for record in in_run if record.status == 429),
        "all_requests": len(records),
        "all_429": sum(1 for record in records if record.status == 429),
        "per_window": {
            "requests": len(in_run) / minutes,
            "input_tokens": sum(estimated_input_tokens(r.body) for r in answered) / minutes,
            "output_tokens": len(answered) * OUTPUT_TOKENS_PER_REPLY / minutes,
        },
        "busiest_output_window": busiest_window(ok_times, window=window_s)
        * OUTPUT_TOKENS_PER_REPLY,
        "median_gap_s": statistics.median(b - a for a, b in itertools.pairwise(sorted(ok_times))),
    }


def report(figures: dict, *, minutes: float, limits: dict | None = None) -> list[str]:
    limits = limits or LIMITS
    per_window = figures["per_window"]
    bound_requests = limits["output_tokens"] / OUTPUT_TOKENS_PER_REPLY
    lines = [
        f"{figures['answered']} replies in the first {minutes:g} minutes "
        f"({figures['requests']} requests), status {figures['status']}"
    ]
    for dimension, label in (
        ("requests", "requests"),
        ("input_tokens", "input tokens"),
        ("output_tokens", "output tokens"),
    ):
        achieved, limit = per_window[dimension], limits[dimension]
        lines.append(
            f"  {label:<14} {achieved:>9,.1f} a minute of {limit:,} "
            f"= {100 * achieved / limit:5.1f}%"
        )
    achieved = figures["answered"] / minutes
    lines.append(
        f"  bound (output tokens / {OUTPUT_TOKENS_PER_REPLY}): {achieved:.1f} of "
        f"{bound_requests:.1f} replies a minute = {100 * achieved / bound_requests:.1f}% "
        f"(target >= 90%)"
    )
    lines.append(
        f"  busiest 60 s window: {figures['busiest_output_window']:,} output tokens of "
        f"{limits['output_tokens']:,} allowed"
    )
    lines.append(f"  median gap between replies' requests: {figures['median_gap_s']:.2f} s")
    share = figures["all_429"] / max(1, figures["all_requests"])
    lines.append(
        f"  429s: {figures['all_429']} of {figures['all_requests']} requests = "
        f"{100 * share:.2f}% (target < 1%)"
    )
    return lines


def child(minutes: float) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return measure(minutes=minutes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument(
        "--postgres", help="run on a scratch database of this PostgreSQL server, not SQLite"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.minutes)))
        return 0
    with scratch_database(args.postgres) as url:
        figures = run_json_child(
            [sys.executable, __file__, "--child", "--minutes", str(args.minutes)],
            child_environment(url),
        )
    print(
        f"budget utilisation: default limits, fake enforcing them, {OUTPUT_TOKENS_PER_REPLY} "
        f"output tokens per reply after {LATENCY_S:g} s"
    )
    for line in report(figures, minutes=args.minutes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
