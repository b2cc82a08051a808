"""Fifty WebSocket clients on one analysis against a live daphne, events written by another
process: does every client get every event, and how soon after it was written?

    python benchmarks/ws_fanout.py [--clients 50 [200 ...]] [--events 500] [--batch 5]
                                   [--batches-per-s 20] [--connect-wave 25]
    python benchmarks/ws_fanout.py --postgres postgres://postgres@127.0.0.1:5432/postgres \\
        --redis redis://127.0.0.1:6379/0

On the embedded default (SQLite, in-memory channel layer) daphne's process tails the persisted
events (one tailer for all the sockets); with ``--postgres`` and ``--redis`` the writer's
``group_send`` goes through Redis (a channel prefix of its own) on a scratch database.

Processes: daphne (the web process), a writer (``analyses.events.emit`` in batches, as the
orchestrator writes them, then ``analysis.finished``) and this one, whose clients connect with a
bearer token. Each number given to ``--clients`` is a run of its own (a fresh database and
daphne), printed in turn. Latency is from an event's write (``AnalysisEvent.created_at``, its
``at``) to its receipt by a client, over every (client, event) pair. Targets: 100 % of events
received by every client, in order, none twice; p95 under 100 ms on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, child_environment, run_json_child, scratch_database

CONNECT_TIMEOUT_S = 90  # a shared, busy machine: 200 handshakes can take a while
WAIT_SLACK_S = 60


def prepare() -> dict:
    """Child: a migrated database with a user, a token and a running analysis."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from analyses.models import Analysis, AnalysisStatus
    from eidolon_site.accounts import token_create

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-only-password-1")
    _, token = token_create(user=user, name="ws_fanout")
    analysis = Analysis.objects.create(
        source="/bench",
        source_kind="local",
        provider="static",
        created_by=user,
        status=AnalysisStatus.RUNNING,
    )
    return {"analysis_id": analysis.pk, "token": token}


def write(*, analysis_id: int, events: int, batch: int, batches_per_s: float) -> dict:
    """Child: ``events`` events in batches at a steady pace, then ``analysis.finished``."""
    import django

    django.setup()
    from asgiref.sync import sync_to_async

    from analyses.events import emit
    from analyses.models import Analysis, AnalysisStatus

    published: list[tuple[int, float]] = []  # (last seq of a write, when emit returned)

    async def run() -> float:
        began = time.monotonic()
        for index, first in enumerate(range(0, events, batch)):
            await asyncio.sleep(max(0.0, began + index / batches_per_s - time.monotonic()))
            size = min(batch, events - first)
            stored = await emit(
                analysis_id, [("unit.finished", {"n": first + k}) for k in range(size)]
            )
            published.append((stored[-1].seq, time.time()))
        await sync_to_async(Analysis.objects.filter(pk=analysis_id).update)(
            status=AnalysisStatus.COMPLETED
        )
        stored = await emit(analysis_id, [("analysis.finished", {"status": "completed"})])
        published.append((stored[-1].seq, time.time()))
        return time.monotonic() - began

    elapsed = asyncio.run(run())
    return {"written": events + 1, "elapsed_s": elapsed, "published": published}


@dataclass
class Client:
    received: list[tuple[int, str, float]] = field(default_factory=list)  # seq, at, receipt
    close_code: int | None = None
    error: str = ""


async def watch(url: str, token: str, client: Client, connected: asyncio.Event) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30
        ) as socket:
            json.loads(await socket.recv())  # the snapshot
            connected.set()
            try:
                async for text in socket:
                    receipt = time.time()
                    message = json.loads(text)
                    if "seq" in message:
                        client.received.append((message["seq"], message["at"], receipt))
            except ConnectionClosed:
                pass
            client.close_code = socket.close_code
    except Exception as error:
        client.error = f"{type(error).__name__}: {error}"
        connected.set()


def start_daphne(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", "--verbosity", "0", "--bind", "127.0.0.1"),
            *("--port", str(port), "eidolon_site.asgi:application"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, port
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("daphne did not start")


async def fan_out(args: argparse.Namespace, env: dict[str, str], setup: dict, port: int) -> dict:
    url = f"ws://127.0.0.1:{port}/ws/analyses/{setup['analysis_id']}/"
    clients = [Client() for _ in range(args.clients)]
    connected = [asyncio.Event() for _ in clients]
    tasks = []
    # In waves, as pages open over a few seconds: a surge of handshakes all at once waits on
    # daphne's 5 s accept timeout (websocket_connect_timeout), which measures something else.
    for first in range(0, len(clients), args.connect_wave):
        wave = range(first, min(len(clients), first + args.connect_wave))
        tasks += [
            asyncio.create_task(watch(url, setup["token"], clients[index], connected[index]))
            for index in wave
        ]
        await asyncio.wait_for(
            asyncio.gather(*(connected[index].wait() for index in wave)), CONNECT_TIMEOUT_S
        )
    writer_argv = [sys.executable, __file__, "--child", "write", "--analysis-id"]
    writer_argv += [str(setup["analysis_id"]), "--events", str(args.events)]
    writer_argv += ["--batch", str(args.batch), "--batches-per-s", str(args.batches_per_s)]
    written = await asyncio.to_thread(run_json_child, writer_argv, env)
    _, pending = await asyncio.wait(tasks, timeout=WAIT_SLACK_S)
    for task in pending:
        task.cancel()
    return {"written": written, "clients": clients, "unfinished": len(pending)}


def percentiles(samples: list[float]) -> list[float]:
    """The 99 cut points (p1 .. p99) of ``samples``."""
    return statistics.quantiles(samples, n=100) if len(samples) > 1 else [0.0] * 99


def figures(outcome: dict) -> dict:
    expected = list(range(1, outcome["written"]["written"] + 1))
    clients: list[Client] = outcome["clients"]
    complete = sum(1 for c in clients if [seq for seq, _, _ in c.received] == expected)
    received = sum(len({seq for seq, _, _ in c.received} & set(expected)) for c in clients)
    duplicates = sum(len(c.received) - len({seq for seq, _, _ in c.received}) for c in clients)
    published_at = {}
    for last_seq, moment in sorted(outcome["written"]["published"], reverse=True):
        published_at.update({seq: moment for seq in range(1, last_seq + 1)})
    written_at: dict[int, float] = {}
    latencies_ms, from_publish_ms = [], []
    for client in clients:
        for seq, at, receipt in client.received:
            written = written_at.setdefault(seq, datetime.fromisoformat(at).timestamp())
            latencies_ms.append((receipt - written) * 1000)
            from_publish_ms.append((receipt - published_at[seq]) * 1000)
    commit_ms = [(published_at[seq] - written) * 1000 for seq, written in written_at.items()]
    cuts = percentiles(latencies_ms)
    return {
        "clients": len(clients),
        "events": len(expected),
        "received_pct": 100.0 * received / (len(clients) * len(expected)),
        "clients_with_every_event_in_order": complete,
        "duplicates": duplicates,
        "closed_1000": sum(1 for c in clients if c.close_code == 1000),
        "errors": sorted({c.error for c in clients if c.error}),
        "latency_p50_ms": cuts[49],
        "latency_p95_ms": cuts[94],
        "latency_max_ms": max(latencies_ms, default=0.0),
        # The same, split: the writer's persist + publish (its emit), then fan-out and receipt.
        "write_to_published_p50_ms": percentiles(commit_ms)[49],
        "write_to_published_p95_ms": percentiles(commit_ms)[94],
        "published_to_receipt_p50_ms": percentiles(from_publish_ms)[49],
        "published_to_receipt_p95_ms": percentiles(from_publish_ms)[94],
        "write_elapsed_s": outcome["written"]["elapsed_s"],
    }


def run(args: argparse.Namespace) -> dict:
    with scratch_database(args.postgres) as database_url:
        env = child_environment(database_url)
        env.pop("REDIS_URL", None)
        if args.redis:
            env["REDIS_URL"] = args.redis
            base_prefix = os.environ.get("EIDOLON_CHANNEL_PREFIX", "bench")
            env["EIDOLON_CHANNEL_PREFIX"] = f"{base_prefix}-{uuid.uuid4().hex[:8]}"
        setup = run_json_child([sys.executable, __file__, "--child", "prepare"], env)
        server, port = start_daphne(env)
        try:
            return figures(asyncio.run(fan_out(args, env, setup, port)))
        finally:
            server.terminate()
            server.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument(
        "--connect-wave", type=int, default=25, help="clients that connect at once, wave by wave"
    )
    parser.add_argument("--batch", type=int, default=5, help="events per write (one emit)")
    parser.add_argument("--batches-per-s", type=float, default=20.0)
    parser.add_argument("--postgres", help="a PostgreSQL server (a scratch database is made)")
    parser.add_argument("--redis", help="a Redis URL: the shared channel layer")
    parser.add_argument("--child", choices=["prepare", "write"], help=argparse.SUPPRESS)
    parser.add_argument("--analysis-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        print(json.dumps(prepare()))
        return 0
    if args.child == "write":
        print(json.dumps(write(**_write_options(args))))
        return 0
    setup_name = (
        "PostgreSQL + Redis" if args.postgres and args.redis else "embedded (SQLite, tailing)"
    )
    if bool(args.postgres) != bool(args.redis):
        setup_name = f"PostgreSQL={bool(args.postgres)}, Redis={bool(args.redis)}"
    for clients in args.clients:
        report(argparse.Namespace(**{**vars(args), "clients": clients}), setup_name)
    return 0


def report(args: argparse.Namespace, setup_name: str) -> None:
    result = run(args)
    print(
        f"ws fan-out, {setup_name}: {result['clients']} clients, {result['events']} events "
        f"({args.batch} per write, {args.batches_per_s:g} writes/s, "
        f"written in {result['write_elapsed_s']:.1f} s)"
    )
    print(
        f"  received {result['received_pct']:.2f}% of events by every client (target 100%); "
        f"{result['clients_with_every_event_in_order']}/{result['clients']} clients got every "
        f"event in order, {result['duplicates']} duplicates, "
        f"{result['closed_1000']}/{result['clients']} closed with 1000"
    )
    print(
        f"  delivery latency from write to receipt: p50 {result['latency_p50_ms']:.1f} ms, "
        f"p95 {result['latency_p95_ms']:.1f} ms (target < 100 ms), "
        f"max {result['latency_max_ms']:.1f} ms"
    )
    print(
        f"  of which the writer's emit (persist + publish): p50 "
        f"{result['write_to_published_p50_ms']:.1f} ms, p95 "
        f"{result['write_to_published_p95_ms']:.1f} ms; from its return to receipt: p50 "
        f"{result['published_to_receipt_p50_ms']:.1f} ms, p95 "
        f"{result['published_to_receipt_p95_ms']:.1f} ms"
    )
    if result["errors"]:
        print(f"  client errors: {result['errors']}")
    print(json.dumps(result))


def _write_options(args: argparse.Namespace) -> dict:
    return {
        "analysis_id": args.analysis_id,
        "events": args.events,
        "batch": args.batch,
        "batches_per_s": args.batches_per_s,
    }


if __name__ == "__main__":
    sys.exit(main())
