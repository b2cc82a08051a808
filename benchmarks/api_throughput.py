"""Requests per second through Eidolon's HTTP stack, against a bare Django view, in one daphne.

    python benchmarks/api_throughput.py [--seconds S] [--connections C] [--rounds R]
                                        [--postgres URL] [--python-client]

One daphne process serves ``benchmarks.bare_asgi:application`` on a fresh database (SQLite by
default): ``/bare/`` (a trivial async view, no middleware), ``/stack/`` (the same view behind
the whole middleware stack), ``GET /api/analyses/{id}`` with a personal token, and the home
page ``/`` (a template page, the same for anyone). Each target is
measured for S seconds with C keep-alive connections, R rounds interleaved; the median round
counts. Printed for each: requests/s and its ratio to the bare view's, and the CPU time the
server process spent per request and the bare view's over it. On a machine shared with other
work, requests/s swing with the others' load; CPU per request hardly does, and its inverse is
the throughput whenever the server is the bottleneck. The last line is JSON.

Load comes from ``wrk`` when it is installed (``apt-get install wrk``), else from the asyncio
client below (slower: it competes with the server for the CPU, so its ratios read higher).
Target: the API at >= 0.5x the bare view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, child_environment, run_json_child, scratch_database

TARGETS = ("bare", "stack", "api", "page")


def prepare_in_this_process() -> dict:
    """Child process: migrate, collect static files, and make a user, a token and an analysis."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from analyses.models import Analysis
    from eidolon_site.accounts import token_create

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    user = User.objects.create_user("bench")
    _, token = token_create(user=user, name="benchmark")
    analysis = Analysis.objects.create(
        source="https://git.example.com/bench.git",
        source_kind="git",
        provider="static",
        created_by=user,
    )
    return {"token": token, "analysis_id": analysis.pk}


def start_daphne(env: dict[str, str], port: int, *, within: float = 30) -> subprocess.Popen:
    """daphne serving ``bare_asgi`` (the bare view beside the whole stack) on ``port``, once it
    answers; a busy machine may need a longer ``within``."""
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", "--verbosity", "0"),
            *("--bind", "127.0.0.1", "--port", str(port), "benchmarks.bare_asgi:application"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bare/", timeout=1).read()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("daphne did not start")


def check(url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


@dataclass(frozen=True)
class Measurement:
    requests: int
    seconds: float
    server_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_seconds / self.requests


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_with_wrk(url: str, headers: dict[str, str], *, seconds: int, connections: int):
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *header_args, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"{url}: some answers were not 2xx:\n{output}")
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    return int(done[1]), float(done[2]) / (1000 if done[3] == "ms" else 1)


async def _keep_alive_client(host: str, port: int, request: bytes, until: float) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    while time.monotonic() < until:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


def load_with_python(url: str, headers: dict[str, str], *, seconds: int, connections: int):
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    host, port, path = match[1], int(match[2]), match[3]
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def run() -> int:
        until = time.monotonic() + seconds
        clients = (_keep_alive_client(host, port, request, until) for _ in range(connections))
        return sum(await asyncio.gather(*clients))

    started = time.monotonic()
    done = asyncio.run(run())
    return done, time.monotonic() - started


def measure(load, server_pid: int, url: str, headers: dict[str, str], **options) -> Measurement:
    cpu = process_cpu_seconds(server_pid)
    requests, seconds = load(url, headers, **options)
    return Measurement(requests, seconds, process_cpu_seconds(server_pid) - cpu)


def run_rounds(args: argparse.Namespace, server_pid: int, targets: dict) -> dict:
    load = load_with_wrk if shutil.which("wrk") and not args.python_client else load_with_python
    rounds: dict[str, list[Measurement]] = {name: [] for name in TARGETS}
    for url, headers in targets.values():
        check(url, headers)
        load(url, headers, seconds=1, connections=args.connections)  # warm up
    for _ in range(args.rounds):
        for name, (url, headers) in targets.items():
            rounds[name].append(
                measure(
                    load,
                    server_pid,
                    url,
                    headers,
                    seconds=args.seconds,
                    connections=args.connections,
                )
            )
    rps = {name: statistics.median(m.per_second for m in runs) for name, runs in rounds.items()}
    cpu = {
        name: statistics.median(m.cpu_ms_per_request for m in runs) for name, runs in rounds.items()
    }
    return {
        "load_generator": "wrk" if load is load_with_wrk else "python asyncio client",
        "requests_per_second": {name: round(value) for name, value in rps.items()},
        "ratio_to_bare": {name: round(value / rps["bare"], 2) for name, value in rps.items()},
        "server_cpu_ms_per_request": {name: round(value, 3) for name, value in cpu.items()},
        "cpu_ratio_to_bare": {name: round(cpu["bare"] / value, 2) for name, value in cpu.items()},
        "rounds_per_second": {
            name: [round(m.per_second) for m in runs] for name, runs in rounds.items()
        },
    }


def benchmark(args: argparse.Namespace, database_url: str) -> dict:
    with tempfile.TemporaryDirectory() as static_root:
        env = child_environment(database_url, log_level=args.log_level)
        env["EIDOLON_STATIC_ROOT"] = static_root
        prepared = run_json_child([sys.executable, __file__, "--prepare"], env)
        port = 8000 + os.getpid() % 1000
        server = start_daphne(env, port)
        base = f"http://127.0.0.1:{port}"
        token_header = {"Authorization": f"Bearer {prepared['token']}"}
        targets = {
            "bare": (f"{base}/bare/", {}),
            "stack": (f"{base}/stack/", {}),
            "api": (f"{base}/api/analyses/{prepared['analysis_id']}", token_header),
            "page": (f"{base}/", {}),
        }
        try:
            result = run_rounds(args, server.pid, targets)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    database = "postgresql" if database_url.startswith("postgres") else "sqlite"
    return {"database": database, **result}


DESCRIPTIONS = {
    "bare": "/bare/: trivial view, no middleware",
    "stack": "/stack/: trivial view, full middleware",
    "api": "GET /api/analyses/{id}, Bearer token",
    "page": "/ (home page, a template)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
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
    print(f"load generator: {result['load_generator']}; database: {result['database']}")
    print(f"  {'':<40} {'req/s':>7} {'ratio':>6}   {'server CPU/req':>14} {'ratio':>6}")
    for name in TARGETS:
        print(
            f"  {DESCRIPTIONS[name]:<40} {result['requests_per_second'][name]:>7} "
            f"{result['ratio_to_bare'][name]:>5.2f}x   "
            f"{result['server_cpu_ms_per_request'][name]:>11.2f} ms "
            f"{result['cpu_ratio_to_bare'][name]:>5.2f}x"
            f"   rounds {result['rounds_per_second'][name]}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
