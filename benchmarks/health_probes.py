"""What load balancers' probes cost: ``/health/live`` against a bare Django view in the same
daphne, and how many rounds of checks ``/health/ready`` runs under 200 concurrent probes.

    python benchmarks/health_probes.py [--seconds 5] [--connections 16] [--rounds 3]
                                       [--probes 200] [--postgres URL] [--python-client]

One daphne process serves ``benchmarks.bare_asgi:application`` (``/bare/``: a trivial view, no
middleware; everything else: Eidolon) on a fresh database (SQLite by default).

1. ``/health/live`` and ``/bare/``, S seconds each with C keep-alive connections, R rounds
   interleaved, the median round: requests/s and server CPU per request, each as a ratio to the
   bare view's (target >= 0.9x). Load from ``wrk`` when installed, else an asyncio client.
2. ``/health/ready`` with ``--probes`` keep-alive connections asking as fast as they are answered
   for S seconds: the rounds of checks the process ran (``eidolon_health_check_rounds_total``
   from ``/metrics``, before and after) against the seconds the flood lasted (the runner is
   single-flight with a ``EIDOLON_HEALTH_CACHE_SECONDS`` = 1 s cache: about one round a
   second, however many probes), the database statements they cost
   (``eidolon_db_queries_total``), the answers by status, and the probes' latency.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.api_throughput import (
    load_with_wrk,
    measure,
    process_cpu_seconds,
    start_daphne,
)
from benchmarks.common import child_environment, run_json_child, scratch_database
from benchmarks.scale_workers import free_port


def prepare_in_this_process() -> dict:
    """Child process: the tables (and the first-start rows the checks read)."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {}


def metric_total(base: str, name: str) -> float:
    """The sum of every sample of counter ``name`` at the server's ``/metrics``."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response off a keep-alive connection (sized or chunked); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    if length := re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head):
        await reader.readexactly(int(length[1]))
    elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        raise RuntimeError(f"an answer neither sized nor chunked: {head!r}")
    return int(head.split(b" ", 2)[1])


async def _probe(
    host: str, port: int, path: str, until: float, statuses: dict, latencies: list
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    while time.monotonic() < until:
        began = time.monotonic()
        writer.write(request)
        status = await read_response(reader)
        latencies.append(time.monotonic() - began)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()


def load_with_python(url: str, headers: dict[str, str], *, seconds: int, connections: int):
    """``api_throughput``'s asyncio client, for answers with or without a Content-Length."""
    port, path = int(url.split(":")[2].split("/")[0]), "/" + url.split("/", 3)[3]
    flooded = flood(port, path, probes=connections, seconds=seconds)
    if set(flooded["statuses"]) != {200}:
        raise RuntimeError(f"{url}: answers {flooded['statuses']}")
    return flooded["answers"], flooded["seconds"]


def flood(port: int, path: str, *, probes: int, seconds: float) -> dict:
    """``probes`` keep-alive connections asking ``path`` until ``seconds`` are up."""
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_probe("127.0.0.1", port, path, until, statuses, latencies) for _ in range(probes))
        )

    began = time.monotonic()
    asyncio.run(run())
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "answers": sum(statuses.values()),
        "statuses": statuses,
        "seconds": time.monotonic() - began,
        "latency_p50_ms": round(cuts[49] * 1000, 1),
        "latency_p95_ms": round(cuts[94] * 1000, 1),
    }


def live_against_bare(args: argparse.Namespace, server_pid: int, base: str) -> dict:
    load = load_with_wrk if shutil.which("wrk") and not args.python_client else load_with_python
    targets = {"bare": f"{base}/bare/", "live": f"{base}/health/live"}
    for url in targets.values():
        load(url, {}, seconds=1, connections=args.connections)  # warm up
    rounds: dict[str, list] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, url in targets.items():
            rounds[name].append(
                measure(
                    load, server_pid, url, {}, seconds=args.seconds, connections=args.connections
                )
            )
    rps = {name: statistics.median(m.per_second for m in runs) for name, runs in rounds.items()}
    cpu = {
        name: statistics.median(m.cpu_ms_per_request for m in runs) for name, runs in rounds.items()
    }
    return {
        "load_generator": "wrk" if load is load_with_wrk else "python asyncio client",
        "requests_per_second": {name: round(value) for name, value in rps.items()},
        "live_ratio": round(rps["live"] / rps["bare"], 3),
        "server_cpu_ms_per_request": {name: round(value, 3) for name, value in cpu.items()},
        "live_cpu_ratio": round(cpu["bare"] / cpu["live"], 3),
        "rounds_per_second": {
            name: [round(m.per_second) for m in runs] for name, runs in rounds.items()
        },
    }


def ready_under_probes(args: argparse.Namespace, server_pid: int, base: str, port: int) -> dict:
    rounds_before = metric_total(base, "eidolon_health_check_rounds_total")
    queries_before = metric_total(base, "eidolon_db_queries_total")
    cpu_before = process_cpu_seconds(server_pid)
    flooded = flood(port, "/health/ready", probes=args.probes, seconds=args.seconds)
    cpu = process_cpu_seconds(server_pid) - cpu_before
    statements = metric_total(base, "eidolon_db_queries_total") - queries_before
    rounds = metric_total(base, "eidolon_health_check_rounds_total") - rounds_before
    return {
        "probes": args.probes,
        **flooded,
        "requests_per_second": round(flooded["answers"] / flooded["seconds"]),
        "check_rounds": int(rounds),
        "rounds_per_second": round(rounds / flooded["seconds"], 2),
        "db_statements": int(statements),
        "server_cpu_ms_per_probe": round(1000 * cpu / max(1, flooded["answers"]), 3),
    }


def benchmark(args: argparse.Namespace, database_url: str) -> dict:
    with tempfile.TemporaryDirectory() as static_root:
        env = child_environment(database_url, log_level=args.log_level)
        env["EIDOLON_STATIC_ROOT"] = static_root
        env["EIDOLON_METRICS_ALLOWED_IPS"] = "127.0.0.1"
        # /metrics reads shared state from the database once, then from its cache: the
        # statements counted between two scrapes are the probes' own
        env["EIDOLON_METRICS_STATE_CACHE_SECONDS"] = "3600"
        env.pop("EIDOLON_METRICS_BASIC_AUTH", None)
        run_json_child([sys.executable, __file__, "--prepare"], env)
        port = free_port()
        server = start_daphne(env, port, within=120)
        base = f"http://127.0.0.1:{port}"
        try:
            live = live_against_bare(args, server.pid, base)
            ready = [ready_under_probes(args, server.pid, base, port) for _ in range(args.rounds)]
        finally:
            server.terminate()
            server.wait(timeout=15)
    database = "postgresql" if database_url.startswith("postgres") else "sqlite"
    return {"database": database, "live": live, "ready": ready}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--postgres", help="postgres://user@host:port/any-existing-database")
    parser.add_argument("--log-level", default="INFO", help="the server's (INFO in production)")
    parser.add_argument("--python-client", action="store_true", help="not wrk, even if installed")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare_in_this_process()))
        return
    with scratch_database(args.postgres) as database_url:
        result = benchmark(args, database_url)
    live = result["live"]
    print(f"load generator: {live['load_generator']}; database: {result['database']}")
    print(
        f"  /health/live {live['requests_per_second']['live']} req/s against the bare view's "
        f"{live['requests_per_second']['bare']}: {live['live_ratio']:.2f}x (target >= 0.9x); "
        f"by server CPU per request {live['live_cpu_ratio']:.2f}x "
        f"({live['server_cpu_ms_per_request']['live']:.2f} ms against "
        f"{live['server_cpu_ms_per_request']['bare']:.2f} ms); rounds {live['rounds_per_second']}"
    )
    for flood in result["ready"]:
        print(
            f"  /health/ready, {flood['probes']} probes at once for {flood['seconds']:.1f} s: "
            f"{flood['answers']} answers ({flood['requests_per_second']}/s, statuses "
            f"{flood['statuses']}), {flood['check_rounds']} check rounds = "
            f"{flood['rounds_per_second']:.2f} a second (single-flight, 1 s cache: about 1), "
            f"{flood['db_statements']} database statements; probe latency p50 "
            f"{flood['latency_p50_ms']} ms, p95 {flood['latency_p95_ms']} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
