"""Chaos drill 4 (issue 13): a web process is SIGKILLed while WebSocket clients watch an
analysis through HAProxy. HAProxy (deploy/haproxy.cfg, unchanged) takes it out on its next
readiness poll; the clients that lost their socket reconnect through the load balancer with
``after=<last seq>``; every client sees every event of the analysis exactly once, in order."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from asgiref.sync import sync_to_async

from analyses.review_responder import review_responder
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.chaos.web_support import (
    Haproxy,
    RecordingClient,
    analysis_state,
    assert_saw_every_event_once,
    slow_analysis,
    stored_events,
    wait_for_status,
    watcher_with_token,
)
from tests.processes import start_daphne, start_worker, subprocess_environment, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.haproxy,
    pytest.mark.chaos,
]

CLIENTS = 6
FUNCTIONS = 50  # at 0.25 s a review, two at a time: ~10 s of reviews
EVENTS_BEFORE_THE_KILL = 15


async def test_a_web_process_killed_mid_run__clients_reconnect_and_miss_nothing(tmp_path):
    user, token = await sync_to_async(watcher_with_token)("watcher")
    fake = FakeAnthropic(config=FakeConfig(seed=4, latency_s=0.25), responder=review_responder)
    with fake.running():
        env = subprocess_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_LOG_LEVEL="WARNING",
        )
        (web1, web1_url), (web2, web2_url) = await asyncio.gather(
            asyncio.to_thread(start_daphne, env), asyncio.to_thread(start_daphne, env)
        )
        lb = await asyncio.to_thread(
            Haproxy,
            web1=web1_url.removeprefix("http://"),
            web2=web2_url.removeprefix("http://"),
            env=env,
        )
        worker = None
        watching: list[asyncio.Task] = []
        try:
            await asyncio.to_thread(wait_for_status, lb, "web1", "UP", timeout=20)
            await asyncio.to_thread(wait_for_status, lb, "web2", "UP", timeout=20)
            analysis = await sync_to_async(slow_analysis)(
                tmp_path, user, functions=FUNCTIONS, concurrency=2
            )
            clients = [
                RecordingClient(f"client{n}", lb.ws_url, analysis.pk, token) for n in range(CLIENTS)
            ]
            watching = [asyncio.create_task(client.run(within=90)) for client in clients]
            worker = start_worker(env, "drill4-worker")
            killed_at = await drill(web1, lb, analysis.pk, clients)
            try:
                await asyncio.wait_for(asyncio.gather(*watching), timeout=90)
            finally:
                stored = await sync_to_async(stored_events)(analysis.pk)
                report(clients, stored, killed_at=killed_at)
            for client in clients:
                assert_saw_every_event_once(client, stored)
            lost = [client for client in clients if client.lost]
            assert lost, "no client was on the killed web process"
            assert all(client.reconnects >= 1 for client in lost)
        finally:
            for task in watching:
                task.cancel()
            for process in (worker, web1, web2):
                if process is not None:
                    await asyncio.to_thread(process.stop)
            await asyncio.to_thread(lb.stop)


async def drill(web1, lb: Haproxy, analysis_id: int, clients: list[RecordingClient]) -> float:
    """Kill web1 once events flow to every client; time HAProxy's verdict."""
    await asyncio.to_thread(
        wait_until,
        lambda: (
            analysis_state(analysis_id)[0] >= EVENTS_BEFORE_THE_KILL
            and all(client.seqs for client in clients)
        ),
        timeout=60,
    )
    web1.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    last_seq, finished = await sync_to_async(analysis_state)(analysis_id)
    assert not finished, "the analysis ended before the kill: make it slower"
    to_down = await asyncio.to_thread(wait_for_status, lb, "web1", "DOWN", timeout=10, every=0.02)
    print(
        f"\n[drill 4] web1 SIGKILLed at event {last_seq}; HAProxy marked it DOWN after "
        f"{to_down:.2f} s (polls every 1 s, fall 1); web2 is {lb.server_status('web2')}"
    )
    return killed_at


def report(clients: list[RecordingClient], stored: list[tuple[int, str]], *, killed_at) -> None:
    print(f"[drill 4] the analysis stored {len(stored)} events")
    for client in clients:
        lost = ", ".join(f"+{at - killed_at:.2f} s" for at in client.lost)
        print(
            f"[drill 4] {client.summary()}"
            + (f"; socket lost {lost} after the kill" if lost else "")
        )
    print(f"[drill 4] reconnects in all: {sum(client.reconnects for client in clients)}")
