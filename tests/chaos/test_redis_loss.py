"""Chaos drill 6 (issue 13): the Redis behind the channel layer and the cache is killed while
WebSocket clients watch an analysis, and started again (empty) on the same port.

While it is down the web process keeps every socket and feeds it from the database tail (a
socket opened during the outage too), readiness is 503 naming the channel layer (the cache is
reported failing as well); once Redis is back readiness recovers, every socket rejoins its group
and live progress goes through the channel layer again. Every client sees every event exactly
once, in order, over the one socket it opened."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from asgiref.sync import sync_to_async

from analyses.events import analysis_group
from analyses.review_responder import review_responder
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.chaos.web_support import (
    RecordingClient,
    RedisServer,
    analysis_state,
    assert_saw_every_event_once,
    log_events,
    read_json,
    redis_server_binary,
    slow_analysis,
    stored_events,
    watcher_with_token,
)
from tests.processes import start_daphne, start_worker, subprocess_environment, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.chaos,
    pytest.mark.skipif(
        redis_server_binary() is None,
        reason="needs redis-server on PATH (apt-get install redis-server): the drill kills its own",
    ),
]

CLIENTS = 4
FUNCTIONS = 100  # at 0.3 s a review, two at a time: ~15 s of reviews
OUTAGE_SECONDS = 5.0
PREFIX = "drill6"


async def in_thread(function, *args, **kwargs):
    return await asyncio.to_thread(function, *args, **kwargs)


def readiness(base_url: str) -> tuple[int, dict]:
    return read_json(f"{base_url}/health/ready")


def failing_components(base_url: str) -> set[str]:
    _, body = read_json(f"{base_url}/health")
    return {name for name, component in body["components"].items() if not component["healthy"]}


def seconds_until(predicate, *, timeout: float) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout=timeout, every=0.05)
    return time.monotonic() - started


def group_members(server: RedisServer, analysis_id: int) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return client.zcard(f"{PREFIX}:asgi:group:{analysis_group(analysis_id)}")
    finally:
        client.close()


async def test_redis_killed_mid_run__sockets_fed_from_the_database_then_the_layer_again(
    tmp_path,
):
    server = RedisServer()
    server.start()
    user, token = await sync_to_async(watcher_with_token)("watcher")
    fake = FakeAnthropic(config=FakeConfig(seed=6, latency_s=0.3), responder=review_responder)
    with fake.running():
        env = subprocess_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            REDIS_URL=server.url,
            EIDOLON_CHANNEL_PREFIX=PREFIX,
            EIDOLON_LOG_LEVEL="WARNING",
        )
        web, base_url = await in_thread(start_daphne, {**env, "EIDOLON_LOG_LEVEL": "INFO"})
        worker = None
        figures: dict[str, float] = {}
        clients: list[RecordingClient] = []
        watching: list[asyncio.Task] = []
        try:
            await in_thread(wait_until, lambda: readiness(base_url)[0] == 200, timeout=30)
            analysis = await sync_to_async(slow_analysis)(
                tmp_path, user, functions=FUNCTIONS, concurrency=2
            )
            ws_url = base_url.replace("http://", "ws://")
            clients = [
                RecordingClient(f"client{n}", ws_url, analysis.pk, token) for n in range(CLIENTS)
            ]
            watching = [asyncio.create_task(client.run(within=90)) for client in clients]
            worker = start_worker(env, "drill6-worker")
            late = RecordingClient("late", ws_url, analysis.pk, token)
            watching.append(
                await outage(server, base_url, analysis.pk, clients, figures, late=late)
            )
            clients.append(late)
            await recovery(server, web, base_url, analysis.pk, clients, figures)
            await asyncio.wait_for(asyncio.gather(*watching), timeout=90)
        finally:
            for task in watching:
                task.cancel()
            for process in (worker, web):
                if process is not None:
                    await in_thread(process.stop)
            server.kill()
            report(clients, figures, web, worker)
        stored = await sync_to_async(stored_events)(analysis.pk)
        for client in clients:
            assert_saw_every_event_once(client, stored)
            assert client.connections == 1 and not client.lost, client.summary()
        stopped, restarted = figures["stopped_at"], figures["restarted_at"]
        for client in clients[:CLIENTS]:  # connected before the outage: fed from the database
            assert client.events_between(stopped, restarted) > 0, client.summary()
        for client in clients:  # and after it, through the layer again
            assert client.events_between(figures["rejoined_at"], time.monotonic()) > 0
        assert len(log_events(web, "websocket_layer_lost")) >= len(clients)
        assert len(log_events(worker, "events_not_published")) > 0  # what the tail made up for


async def outage(server, base_url, analysis_id, clients, figures, *, late) -> asyncio.Task:
    """Kill Redis once events flow to every client; readiness must name the channel layer;
    ``late`` connects while it is down (its watching task is returned)."""
    await in_thread(
        wait_until,
        lambda: analysis_state(analysis_id)[0] >= 10 and all(c.seqs for c in clients),
        timeout=60,
    )
    server.kill()
    figures["stopped_at"] = time.monotonic()
    seq, finished = await sync_to_async(analysis_state)(analysis_id)
    assert not finished, "the analysis ended before Redis was killed: make it slower"
    figures["seq_at_stop"] = seq
    figures["to_not_ready"] = await in_thread(
        seconds_until,
        lambda: (lambda answer: answer[0] == 503 and "channel_layer" in answer[1]["failed"])(
            readiness(base_url)
        ),
        timeout=10,
    )
    failing = await in_thread(failing_components, base_url)
    assert {"channel_layer", "cache"} <= failing, failing
    watching = asyncio.create_task(late.run(within=60))
    await in_thread(wait_until, lambda: late.connections == 1, timeout=10)
    await asyncio.sleep(max(0.0, figures["stopped_at"] + OUTAGE_SECONDS - time.monotonic()))
    assert time.monotonic() - figures["stopped_at"] < OUTAGE_SECONDS + 2, "outage overran"
    return watching


async def recovery(server, web, base_url, analysis_id, clients, figures) -> None:
    """Start Redis again (empty) on its port; readiness recovers and every socket rejoins."""
    seq, finished = await sync_to_async(analysis_state)(analysis_id)
    assert not finished, "the analysis ended during the outage: make it slower"
    figures["seq_at_restart"] = seq
    await in_thread(server.start)
    figures["restarted_at"] = time.monotonic()
    figures["to_ready"] = await in_thread(
        seconds_until, lambda: readiness(base_url)[0] == 200, timeout=15
    )
    # Every socket is a member of the analysis's group in the new (empty) Redis again.
    figures["to_rejoined"] = await in_thread(
        seconds_until,
        lambda: group_members(server, analysis_id) == len(clients),
        timeout=15,
    )
    figures["rejoined_at"] = time.monotonic()
    seq, finished = await sync_to_async(analysis_state)(analysis_id)
    assert not finished, "the analysis ended before the sockets rejoined: make it slower"
    figures["seq_at_rejoin"] = seq


def report(clients, figures, web, worker) -> None:
    stopped, restarted = figures.get("stopped_at"), figures.get("restarted_at")
    print(
        f"\n[drill 6] figures: { {k: round(v, 2) for k, v in figures.items() if 'at' != k[-2:]} }"
    )
    if stopped is not None and restarted is not None:
        print(f"[drill 6] Redis down for {restarted - stopped:.2f} s")
    for client in clients:
        line = f"[drill 6] {client.summary()}"
        if stopped is not None and restarted is not None and client.arrivals:
            first = client.arrivals[0]
            during = client.longest_silence(max(stopped, first), restarted)
            before = client.longest_silence(first, stopped) if first < stopped else 0.0
            line += (
                f"; {client.events_between(stopped, restarted)} events while Redis was down, "
                f"longest gap then {during:.2f} s (before: {before:.2f} s)"
            )
        print(line)
    if web is not None:
        print(
            f"[drill 6] web: {len(log_events(web, 'websocket_layer_lost'))} socket(s) lost the "
            f"layer, {len(log_events(web, 'websocket_layer_rejoined'))} rejoined"
        )
    if worker is not None:
        print(
            f"[drill 6] worker: {len(log_events(worker, 'events_not_published'))} publishes failed"
        )
