"""Analyses through 1 and 3 ``manage.py worker`` processes sharing one PostgreSQL database, the
fake API answering in 200 ms; then a tight budget shared by the 3 workers.

    python benchmarks/scale_workers.py [--postgres URL] [--redis URL] [--rounds 2]
        [--analyses 6 --functions 100 --concurrency 5 --threads 1]
        [--tight-rpm 30 --tight-window 5 --tight-functions 180]

Each phase runs on a scratch database of its own (``bench_*``, dropped afterwards) with real
processes: the fake API (``manage.py fake_anthropic --latency 0.2``), N workers and two daphne web
processes. Every analysis is followed by a WebSocket client (through the web processes in turn)
and each web's ``/health/ready`` is polled every second, as a load balancer would.

1. Roomy budget: the same analyses (distinct code, so no result is cached) with 1 worker, then 3.
   Each worker runs ``--threads`` analyses at once, each ``--concurrency`` calls at once: with the
   defaults one worker has at most 5 calls in flight (a bound of 25 functions/s at 200 ms), so a
   worker waits on the network rather than on this 2-core machine's CPU, as it does against the
   real API (seconds per call). Target: 3 workers >= 2.5x one (the ratio is printed).
2. Tight budget (``--tight-rpm`` requests per ``--tight-window`` seconds) shared by the 3 workers:
   the share of the budget used from the first request to the last (target >= 95 %) and the
   busiest window of requests at the fake (never over the limit).

Also printed: the peak resident memory (VmHWM) of every worker and web process of each phase.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.analysis_throughput import control, start_fake
from benchmarks.common import ROOT, child_environment, run_json_child, scratch_database

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
LATENCY_S = 0.2
ROOMY = {
    # One model, so that the budget measured is the only one (a chain would spill to the next).
    "EIDOLON_AI_MODELS": "claude-sonnet-5-5",
    "EIDOLON_AI_RPM": "1000000",
    "EIDOLON_AI_INPUT_TPM": "1000000000",
    "EIDOLON_AI_OUTPUT_TPM": "1000000000",
    "EIDOLON_AI_RPD": "100000000",
}


def write_projects(root: Path, *, analyses: int, functions: int) -> list[Path]:
    """One small codebase per analysis; every function body differs, so nothing is cached."""
    projects = []
    for number in range(analyses):
        project = root / f"project_{number}"
        project.mkdir()
        for module in range((functions + 9) // 10):
            body = ['"""Generated."""\n']
            for index in range(module * 10, min(functions, module * 10 + 10)):
                body.append(
                    f"\n\ndef f_{number}_{index}(value):\n    if value > {number * 10_000 + index}:"
                    f"\n        return value - {index}\n    return value\n"
                )
            (project / f"m_{module}.py").write_text("".join(body))
        projects.append(project)
    return projects


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Processes:
    """Child processes started here, each in a session of its own, stopped by their own ids."""

    def __init__(self) -> None:
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started[name] = process
        return process

    def peak_rss(self) -> dict[str, float]:
        return {
            name: round(peak_rss_mb(process.pid), 1)
            for name, process in self.started.items()
            if process.poll() is None
        }

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def worker_argv(name: str, threads: int) -> list[str]:
    return [
        *(sys.executable, "manage.py", "worker", "--no-reload", "--no-startup-delay"),
        *("--interval", "0.2", "--queue-name", "*", "--threads", str(threads)),
        *("--worker-id", name),
    ]


def web_argv(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "daphne", "--verbosity", "0", "--bind", "127.0.0.1"),
        *("--port", str(port), "eidolon_site.asgi:application"),
    ]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout} s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


class ReadinessPoller(threading.Thread):
    """Polls each web's ``/health/ready`` every second, as HAProxy does; counts the answers."""

    def __init__(self, bases: list[str]) -> None:
        super().__init__(daemon=True)
        self.bases = bases
        self.answers: dict[int, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for base in self.bases:
                status = http_status(f"{base}/health/ready")
                self.answers[status] = self.answers.get(status, 0) + 1


def follow_analyses(urls: list[str], token: str, received: dict[str, set[int]]) -> None:
    """One WebSocket client per URL, until the server closes it; the seqs each one got."""
    import asyncio

    from websockets.asyncio.client import connect

    async def follow(url: str) -> None:
        seen = received.setdefault(url, set())
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30
        ) as socket:
            async for text in socket:
                message = json.loads(text)
                if "seq" in message:
                    seen.add(message["seq"])

    async def run() -> None:
        await asyncio.gather(*(follow(url) for url in urls), return_exceptions=True)

    asyncio.run(run())


def prepare_analyses(args: argparse.Namespace, scratch: Path) -> tuple[list[int], str]:
    """Migrated tables, a user with a token, and the queued analyses (not yet enqueued)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from analyses.services import analysis_create
    from eidolon_site.accounts import token_create

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    _, token = token_create(user=user, name="scale_workers")
    ids = [
        analysis_create(
            source=str(project),
            provider="anthropic",
            concurrency=args.concurrency,
            allow_any_path=True,
            created_by=user,
        ).pk
        for project in write_projects(scratch, analyses=args.analyses, functions=args.functions)
    ]
    return ids, token


def run_phase(args: argparse.Namespace) -> dict:
    """Child, on its scratch database: start the fake, the webs and ``args.workers`` workers,
    enqueue the analyses, wait for them all, and measure."""
    import django

    django.setup()
    from analyses.models import Analysis
    from analyses.services import analysis_enqueue
    from reliability.models import WorkerHeartbeat

    processes = Processes()
    with tempfile.TemporaryDirectory() as scratch:
        ids, token = prepare_analyses(args, Path(scratch))
        metrics_dir = Path(scratch) / "prometheus"
        metrics_dir.mkdir()
        env = {
            **os.environ,
            "EIDOLON_WORKER_HEARTBEAT_SECONDS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        fake, base_url = start_fake(env=env)
        try:
            env["ANTHROPIC_BASE_URL"] = base_url
            ports = [free_port() for _ in range(args.webs)]
            for number, port in enumerate(ports, start=1):
                processes.start(f"web-{number}", web_argv(port), env)
            for number in range(1, args.workers + 1):
                processes.start(f"worker-{number}", worker_argv(f"w{number}", args.threads), env)
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for base in bases:
                wait_for(
                    lambda b=base: http_status(f"{b}/health/live") == 200,
                    timeout=60,
                    what="web process",
                )
            wait_for(
                lambda: WorkerHeartbeat.objects.count() >= args.workers,
                timeout=60,
                what="workers' heartbeats",
            )
            control(base_url, "reset", {})
            urls = [
                f"ws://{bases[index % len(bases)].removeprefix('http://')}/ws/analyses/{pk}/"
                for index, pk in enumerate(ids)
            ]
            received: dict[str, set[int]] = {}
            follower = threading.Thread(
                target=follow_analyses, args=(urls, token, received), daemon=True
            )
            follower.start()
            poller = ReadinessPoller(bases)
            poller.start()
            began = time.time()
            for pk in ids:
                analysis_enqueue(Analysis.objects.get(pk=pk))
            wait_for(
                lambda: Analysis.objects.filter(pk__in=ids, finished_at__isnull=True).count() == 0,
                timeout=args.timeout,
                what="the analyses",
                every=0.2,
            )
            poller.stopped.set()
            follower.join(timeout=30)
            peak_rss = processes.peak_rss()
            log = control(base_url, "log")
        finally:
            processes.stop_all()
            fake.terminate()
            fake.wait()
        requeued = requeued_slots(metrics_dir)
    return phase_figures(args, ids, began, log, received, urls) | {
        "peak_rss_mb": peak_rss,
        "readiness_answers": poller.answers,
        "budget_slots_requeued": requeued,
    }


def requeued_slots(metrics_dir: Path) -> dict[str, int]:
    """Budget slots the workers gave up and queued for again, by why (``paused``: a 429 paused
    the budget; ``late``: the caller woke too late for its slot), from their metrics files."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    counts: dict[str, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "eidolon_ratelimit_requeued_total":
                why = sample.labels["why"]
                counts[why] = counts.get(why, 0) + int(sample.value)
    return counts


def phase_figures(args, ids, began, log, received, urls) -> dict:
    from django.db.models import Max, Sum

    from analyses.models import Analysis, AnalysisEvent
    from tests.budget_support import busiest_window

    analyses = Analysis.objects.filter(pk__in=ids)
    totals = analyses.aggregate(
        total=Sum("functions_total"),
        analysed=Sum("functions_analyzed"),
        cached=Sum("functions_cached"),
        last=Max("finished_at"),
    )
    elapsed = totals["last"].timestamp() - began
    arrivals = sorted(record["received_monotonic"] for record in log)
    stored = {
        url: AnalysisEvent.objects.filter(analysis_id=pk).count()
        for url, pk in zip(urls, ids, strict=True)
    }
    result = {
        "workers": args.workers,
        "statuses": sorted(analyses.values_list("status", flat=True)),
        "functions": totals["total"],
        "analysed": totals["analysed"],
        "cached": totals["cached"],
        "requests": len(arrivals),
        "elapsed_s": round(elapsed, 2),
        "functions_per_s": round(totals["analysed"] / elapsed, 2),
        "ws_clients_complete": sum(1 for url in urls if len(received.get(url, ())) == stored[url]),
        "ws_clients": len(urls),
    }
    if len(arrivals) > 1:
        span = arrivals[-1] - arrivals[0]
        result["requests_per_s"] = round((len(arrivals) - 1) / span, 3)
    if args.budget == "tight":
        limit_per_s = args.tight_rpm / args.tight_window
        result["limit_per_s"] = limit_per_s
        result["budget_used_pct"] = round(100 * result["requests_per_s"] / limit_per_s, 1)
        result["busiest_window"] = busiest_window(arrivals, window=args.tight_window)
        result["window_limit"] = args.tight_rpm
    return result


def phase(args: argparse.Namespace, *, workers: int, budget: str, functions: int) -> dict:
    """One phase in a child process, on a scratch database of its own."""
    with scratch_database(args.postgres) as url:
        env = child_environment(url)
        env.pop("REDIS_URL", None)
        if args.redis:
            env["REDIS_URL"] = args.redis
            env["EIDOLON_CHANNEL_PREFIX"] = f"{args.channel_prefix}-{os.getpid()}"
        env["ANTHROPIC_API_KEY"] = "bench"
        env.update(ROOMY)
        if budget == "tight":
            env["EIDOLON_AI_RPM"] = str(args.tight_rpm)
            env["EIDOLON_RATE_WINDOW"] = str(args.tight_window)
        argv = [sys.executable, __file__, "--child", "--workers", str(workers)]
        argv += ["--budget", budget, "--functions", str(functions)]
        for option in (
            "analyses",
            "concurrency",
            "threads",
            "webs",
            "tight_rpm",
            "tight_window",
            "timeout",
        ):
            argv += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        return run_json_child(argv, env)


def print_phase(name: str, result: dict) -> None:
    print(
        f"  {name}: {result['analysed']}/{result['functions']} functions analysed "
        f"({result['cached']} cached) in {result['elapsed_s']:.1f} s = "
        f"{result['functions_per_s']:.1f} functions/s; {result['requests']} requests, "
        f"{result.get('requests_per_s', 0):.1f}/s first to last; statuses "
        f"{sorted(set(result['statuses']))}; WebSocket clients with every event "
        f"{result['ws_clients_complete']}/{result['ws_clients']}"
    )
    print(
        f"    peak RSS (MB): {result['peak_rss_mb']}; readiness answers "
        f"{result['readiness_answers']}; budget slots requeued {result['budget_slots_requeued']}"
    )


def one_round(args: argparse.Namespace) -> dict:
    functions = args.functions
    one = phase(args, workers=1, budget="roomy", functions=functions)
    print_phase("1 worker, roomy budget", one)
    three = phase(args, workers=3, budget="roomy", functions=functions)
    print_phase("3 workers, roomy budget", three)
    ratio = three["functions_per_s"] / one["functions_per_s"]
    steady = three["requests_per_s"] / one["requests_per_s"]
    print(
        f"  3 workers / 1 worker: {ratio:.2f}x functions/s start to finish, {steady:.2f}x "
        f"requests/s first to last (target >= 2.5x)"
    )
    tight_args = argparse.Namespace(**{**vars(args), "analyses": 3})
    tight = phase(tight_args, workers=3, budget="tight", functions=args.tight_functions)
    print_phase(f"3 workers, {args.tight_rpm} requests per {args.tight_window:g} s", tight)
    print(
        f"  budget used {tight['budget_used_pct']:.1f}% of {tight['limit_per_s']:.1f}/s "
        f"(target >= 95%); busiest {args.tight_window:g} s window {tight['busiest_window']} of "
        f"{tight['window_limit']} (never over)"
    )
    return {
        "one": one,
        "three": three,
        "ratio": round(ratio, 3),
        "steady_ratio": round(steady, 3),
        "tight": tight,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--redis", help="a Redis URL for the channel layer (else in memory)")
    parser.add_argument(
        "--channel-prefix", default=os.environ.get("EIDOLON_CHANNEL_PREFIX", "bench")
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--analyses", type=int, default=6)
    parser.add_argument("--functions", type=int, default=100, help="per analysis")
    parser.add_argument("--concurrency", type=int, default=5, help="calls at once per analysis")
    parser.add_argument("--threads", type=int, default=1, help="analyses at once per worker")
    parser.add_argument("--webs", type=int, default=2)
    parser.add_argument("--tight-rpm", type=int, default=30, help="requests per tight window")
    parser.add_argument("--tight-window", type=float, default=5.0)
    parser.add_argument("--tight-functions", type=int, default=60, help="per analysis (3 of them)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--budget", choices=["roomy", "tight"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_phase(args)))
        return 0
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number} of {args.rounds} (fake API at {LATENCY_S * 1000:.0f} ms)")
        rounds.append(one_round(args))
    if len(rounds) > 1:
        ratios = [r["ratio"] for r in rounds]
        used = [r["tight"]["budget_used_pct"] for r in rounds]
        print(
            f"ratio range {min(ratios):.2f}-{max(ratios):.2f}x (median "
            f"{statistics.median(ratios):.2f}); budget used {min(used):.1f}-{max(used):.1f}%"
        )
    print(json.dumps(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
