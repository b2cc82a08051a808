"""The analysis WebSocket against the real ASGI application (eidolon_site.asgi) with real
handshake headers (Origin, session cookie, Authorization) and the real database: refusals,
the snapshot, catch-up, reconnects without gap or duplicate while an analysis runs, in this
process and with the worker in another one (tailing on the embedded default; Redis)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from analyses.events import emit, persist_events
from analyses.live import EventCursor
from analyses.models import Analysis, AnalysisEvent, AnalysisStatus, Card, CodeUnit, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create, analysis_enqueue
from analyses.tailing import tailers_for
from eidolon_site.accounts import token_create
from eidolon_site.asgi import application
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)
from tests.processes import start_daphne, start_worker, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "http://127.0.0.1:8000"
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


@dataclass
class Person:
    user: User
    token: str
    cookie: str

    def headers(self, *, by: str = "cookie", origin: str | None = ORIGIN) -> list:
        return handshake(
            cookie=self.cookie if by == "cookie" else None,
            token=self.token if by == "token" else None,
            origin=origin,
        )


def handshake(
    *, cookie: str | None = None, token: str | None = None, origin: str | None = ORIGIN
) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"127.0.0.1:8000")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return headers


def person(username: str, *, staff: bool = False) -> Person:
    user = User.objects.create_user(username, password="not-used-1", is_staff=staff)
    _, token = token_create(user=user, name="ws")
    client = Client()
    client.force_login(user)
    return Person(
        user=user, token=token, cookie=client.cookies[django_settings.SESSION_COOKIE_NAME].value
    )


@pytest.fixture
def alice() -> Person:
    return person("alice")


@pytest.fixture
def bob() -> Person:
    return person("bob")


@pytest.fixture
def staff() -> Person:
    return person("operator", staff=True)


class Socket:
    """A client of the real application: JSON messages in, close codes as ``Closed``."""

    def __init__(self, path: str, headers: list) -> None:
        self.communicator = WebsocketCommunicator(application, path, headers=headers)
        self.accepted: bool | None = None

    async def open(self) -> bool:
        self.accepted, _ = await self.communicator.connect(timeout=10)
        return self.accepted

    async def next(self, *, within: float = 10) -> dict[str, Any]:
        output = await self.communicator.receive_output(within)
        if output["type"] == "websocket.close":
            raise Closed(output.get("code", 1000))
        return json.loads(output["text"])

    async def close_code(self, *, within: float = 10) -> int:
        with pytest.raises(Closed) as closed:
            await self.next(within=within)
        return closed.value.code

    async def leave(self) -> None:
        await self.communicator.disconnect(timeout=5)


@pytest.fixture
async def connect():
    opened: list[Socket] = []

    async def open_socket(analysis_id: int, headers: list, *, after: str | int | None = None):
        query = "" if after is None else f"?after={after}"
        socket = Socket(f"/ws/analyses/{analysis_id}/{query}", headers)
        opened.append(socket)
        await socket.open()
        return socket

    yield open_socket
    for socket in opened:
        await socket.leave()


def new_analysis(owner: User | None, **fields: Any) -> Analysis:
    return Analysis.objects.create(
        source="/srv/code", source_kind="local", provider="static", created_by=owner, **fields
    )


def record(analysis: Analysis, *kinds: str) -> list[int]:
    return [event.seq for event in persist_events(analysis.pk, [(k, {}) for k in kinds])]


async def refusal(connect, analysis_id: int, headers: list, *, after=None) -> int:
    socket = await connect(analysis_id, headers, after=after)
    assert socket.accepted, "refusals come after the accept, so that clients see the code"
    return await socket.close_code()


class TestRefusals:
    @pytest.fixture(autouse=True)
    def in_memory_layer(self, settings):
        # Refusals do not depend on the layer; on Redis a consumer refused before it used the
        # layer takes seconds to stop (channels-redis' blocking read), which CI need not wait.
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER

    async def test_no_credentials__4401(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        assert await refusal(connect, analysis.pk, handshake()) == 4401

    @pytest.mark.parametrize("origin", [ORIGIN, None])
    async def test_a_token_that_is_not_valid__4401_and_never_the_cookie(
        self, connect, alice, origin
    ):
        analysis = await sync_to_async(new_analysis)(alice.user)
        headers = handshake(cookie=alice.cookie, token="eid_not-a-token", origin=origin)
        assert await refusal(connect, analysis.pk, headers) == 4401

    @pytest.mark.parametrize("by", ["cookie", "token"])
    async def test_another_users_analysis__4403_not_allowed(self, connect, alice, bob, by):
        analysis = await sync_to_async(new_analysis)(alice.user)
        assert await refusal(connect, analysis.pk, bob.headers(by=by)) == 4403

    @pytest.mark.parametrize("analysis_id", [987654, 2**70])
    async def test_no_such_analysis__4404(self, connect, alice, analysis_id):
        assert await refusal(connect, analysis_id, alice.headers()) == 4404

    @pytest.mark.parametrize("after", ["abc", "-1", "", "1.5", "1&after=2", "9" * 30])
    async def test_a_malformed_after__4400(self, connect, alice, after):
        analysis = await sync_to_async(new_analysis)(alice.user)
        assert await refusal(connect, analysis.pk, alice.headers(), after=after) == 4400

    async def test_an_after_beyond_the_last_event__4400(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        await sync_to_async(record)(analysis, "analysis.started", "unit.finished")
        assert await refusal(connect, analysis.pk, alice.headers(), after=3) == 4400

    @pytest.mark.parametrize("by", ["cookie", "token"])
    async def test_a_foreign_origin__refused_before_the_handshake(self, connect, alice, by):
        analysis = await sync_to_async(new_analysis)(alice.user)
        socket = await connect(analysis.pk, alice.headers(by=by, origin="https://evil.example"))
        assert socket.accepted is False  # an HTTP 403 on a real server

    async def test_no_origin_with_a_session_cookie__refused_before_the_handshake(
        self, connect, alice
    ):
        analysis = await sync_to_async(new_analysis)(alice.user)
        socket = await connect(analysis.pk, alice.headers(origin=None))
        assert socket.accepted is False

    async def test_no_origin_with_a_bearer_token__a_cli_may_watch(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        socket = await connect(analysis.pk, alice.headers(by="token", origin=None))
        assert (await socket.next())["type"] == "analysis.snapshot"

    @pytest.mark.parametrize("by", ["cookie", "token"])
    async def test_staff_watch_anyones_analysis(self, connect, alice, staff, by):
        analysis = await sync_to_async(new_analysis)(alice.user)
        socket = await connect(analysis.pk, staff.headers(by=by))
        assert (await socket.next())["data"]["id"] == analysis.pk


class TestCatchUp:
    async def test_snapshot_first__then_the_events_after_after__then_live_ones(
        self, connect, alice
    ):
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
        await sync_to_async(record)(analysis, "analysis.started", *["unit.finished"] * 4)
        socket = await connect(analysis.pk, alice.headers(), after=2)
        snapshot = await socket.next()
        assert snapshot["type"] == "analysis.snapshot" and "seq" not in snapshot
        assert snapshot["data"]["id"] == analysis.pk and snapshot["data"]["last_seq"] == 5
        assert snapshot["at"]
        assert [(await socket.next())["seq"] for _ in range(3)] == [3, 4, 5]
        await emit(analysis.pk, [("card.created", {"title": "x"}), ("unit.failed", {})])
        live = [await socket.next(), await socket.next()]
        assert [(event["seq"], event["type"]) for event in live] == [
            (6, "card.created"),
            (7, "unit.failed"),
        ]
        assert live[0]["data"] == {"title": "x"} and live[0]["at"]
        await socket.communicator.receive_nothing(timeout=0.3)  # no duplicate from the tailer

    async def test_a_finished_analysis__snapshot_catch_up_and_close_1000(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.COMPLETED)
        await sync_to_async(record)(analysis, "analysis.started", "unit.finished")
        await sync_to_async(record)(analysis, "analysis.progress", "analysis.finished")
        socket = await connect(analysis.pk, alice.headers(), after=1)
        assert (await socket.next())["data"]["finished"] is True
        assert [(await socket.next())["seq"] for _ in range(3)] == [2, 3, 4]
        assert await socket.close_code() == 1000

    async def test_a_client_that_saw_the_end__gets_the_snapshot_and_the_close(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.FAILED)
        await sync_to_async(record)(analysis, "analysis.started", "analysis.finished")
        socket = await connect(analysis.pk, alice.headers(), after=2)
        assert (await socket.next())["type"] == "analysis.snapshot"
        assert await socket.close_code() == 1000

    async def test_a_resumed_analysis_stays_open_after_its_first_end(self, connect, alice):
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.QUEUED)
        await sync_to_async(record)(analysis, "analysis.started", "analysis.finished")
        socket = await connect(analysis.pk, alice.headers(), after=2)
        assert (await socket.next())["type"] == "analysis.snapshot"
        await socket.communicator.receive_nothing(timeout=0.3)
        await emit(analysis.pk, [("analysis.resumed", {})])
        assert (await socket.next())["type"] == "analysis.resumed"

    async def test_keepalives_carry_no_seq(self, connect, alice, settings):
        settings.EIDOLON_WS_KEEPALIVE_SECONDS = 0.2
        analysis = await sync_to_async(new_analysis)(alice.user)
        socket = await connect(analysis.pk, alice.headers())
        await socket.next()
        keepalive = await socket.next(within=3)
        assert keepalive["type"] == "keepalive" and "seq" not in keepalive and keepalive["at"]

    @pytest.mark.redis
    async def test_an_idle_socket_outlives_the_redis_blocking_read(self, connect, alice):
        # channels-redis blocks 5 s per read; with redis-py 8's default 5 s socket timeout the
        # consumer crashed at the first quiet spell (settings give the layer a longer one).
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
        socket = await connect(analysis.pk, alice.headers())
        await socket.next()
        await asyncio.sleep(6)
        await emit(analysis.pk, [("unit.finished", {})])
        assert (await socket.next(within=3))["seq"] == 1

    @pytest.mark.redis
    async def test_a_batch_the_shared_layer_dropped_arrives_before_the_next_keepalive(
        self, connect, alice, settings
    ):
        settings.EIDOLON_WS_KEEPALIVE_SECONDS = 0.3
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
        socket = await connect(analysis.pk, alice.headers())
        await socket.next()
        await sync_to_async(record)(analysis, "unit.finished", "card.created")  # never published
        received = [await socket.next(within=3) for _ in range(3)]
        assert [m.get("seq") for m in received] == [1, 2, None]
        assert received[2]["type"] == "keepalive"


class TestEventCursor:
    """The no-gap / no-duplicate rule on its own, over persisted events."""

    async def test_drops_what_was_sent_and_reads_a_gap_from_the_database(self, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        await sync_to_async(record)(analysis, *["unit.finished"] * 8)
        cursor = EventCursor(analysis_id=analysis.pk, last_sent=2)
        batch = [{"seq": n, "type": "unit.finished"} for n in (7, 6, 2, 8)]
        assert [event["seq"] for event in await cursor.admit(batch)] == [3, 4, 5, 6, 7, 8]
        assert await cursor.admit(batch) == []
        assert cursor.last_sent == 8

    async def test_finished_follows_the_last_lifecycle_event(self, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        kinds = ["analysis.started", "analysis.finished", "analysis.resumed", "unit.finished"]
        await sync_to_async(record)(analysis, *kinds)
        cursor = EventCursor(analysis_id=analysis.pk, last_sent=0)
        assert len(await cursor.admit([{"seq": 2, "type": "analysis.finished"}])) == 2
        assert cursor.finished
        await cursor.admit([{"seq": 4, "type": "unit.finished"}])
        assert not cursor.finished


class TestTailers:
    async def test_one_tailer_per_analysis_shared_by_its_sockets__stopped_with_the_last(
        self, connect, alice, settings
    ):
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
        sockets = [await connect(analysis.pk, alice.headers()) for _ in range(5)]
        for socket in sockets:
            await socket.next()
        tailers = tailers_for()
        assert len(tailers) == 1 and tailers.tailer(analysis.pk).watchers == 5
        # Events written without a publish (as by a worker in another process) reach them all.
        await sync_to_async(record)(analysis, "analysis.started", "unit.finished")
        for socket in sockets:
            assert [(await socket.next())["seq"] for _ in range(2)] == [1, 2]
        for socket in sockets:
            await socket.leave()
        assert len(tailers) == 0

    @pytest.mark.redis
    async def test_a_shared_layer_needs_no_tailer(self):
        assert tailers_for() is None


# --- while an analysis runs ---------------------------------------------------------------------


@dataclass
class Watched:
    seqs: list[int] = field(default_factory=list)
    types: Counter = field(default_factory=Counter)
    connections: int = 0
    reconnects_while_running: int = 0
    live: int = 0  # events persisted after the snapshot was read: the layer (or tailer) sent them
    close_code: int | None = None


async def watch_with_reconnects(
    connect, analysis_id: int, headers: list, *, within: float, seed: int = 7
) -> Watched:
    """Watch to the end, dropping the socket after every few events and reconnecting with
    ``after=<last seq seen>``, as the page does."""
    chooser = random.Random(seed)
    watched = Watched()
    deadline = time.monotonic() + within
    while watched.close_code is None:
        socket = await connect(analysis_id, headers, after=watched.seqs[-1] if watched.seqs else 0)
        watched.connections += 1
        snapshot = await socket.next()
        assert snapshot["type"] == "analysis.snapshot"
        if watched.connections > 1 and not snapshot["data"]["finished"]:
            watched.reconnects_while_running += 1
        persisted_before = snapshot["data"]["last_seq"]
        drop_after = chooser.randint(1, 6)
        while True:
            try:
                message = await socket.next(within=max(0.1, deadline - time.monotonic()))
            except Closed as closed:
                watched.close_code = closed.code
                break
            if message["type"] == "keepalive":
                continue
            watched.seqs.append(message["seq"])
            watched.types[message["type"]] += 1
            watched.live += message["seq"] > persisted_before
            drop_after -= 1
            if drop_after == 0:
                await socket.leave()
                break
    return watched


async def assert_every_event_exactly_once(watched: Watched, analysis_id: int) -> Analysis:
    analysis = await sync_to_async(Analysis.objects.get)(pk=analysis_id)
    assert watched.close_code == 1000
    assert watched.seqs == list(range(1, analysis.event_seq + 1))  # no gap, no duplicate
    assert watched.types["analysis.finished"] == 1
    assert watched.types["card.created"] == analysis.cards_count > 0
    assert watched.reconnects_while_running >= 3, watched
    assert watched.live >= 10, watched
    return analysis


@pytest.fixture
def fake_api():
    config = FakeConfig(seed=5, latency_s=0.04, fault_rates={"bad_request": 0.1})
    with FakeAnthropic(config=config, responder=review_responder).running() as server:
        yield server


async def ai_analysis(root: Path, owner: User, *, functions: int, concurrency: int) -> Analysis:
    await sync_to_async(generous_anthropic_limits)()
    return await sync_to_async(analysis_create)(
        source=str(write_project(root, functions=functions)),
        provider="static",
        concurrency=concurrency,
        allow_any_path=True,
        created_by=owner,
    )


class TestWhileUnitsComplete:
    async def test_reconnects_after_event_k_receive_k_plus_1_on__no_gap_no_duplicate(
        self, connect, alice, fake_api, tmp_path
    ):
        analysis = await ai_analysis(tmp_path, alice.user, functions=60, concurrency=3)
        await as_anthropic(analysis)
        run = asyncio.create_task(run_analysis(analysis.pk, provider=provider_for(fake_api)))
        try:
            watched = await watch_with_reconnects(connect, analysis.pk, alice.headers(), within=60)
        finally:
            status = await asyncio.wait_for(run, timeout=60)
        assert status == AnalysisStatus.COMPLETED_WITH_ERRORS
        finished = await assert_every_event_exactly_once(watched, analysis.pk)
        assert watched.types["unit.failed"] == finished.functions_failed > 0

    @pytest.mark.parametrize(("provider", "functions"), [("anthropic", 40), ("static", 600)])
    async def test_progress_at_most_five_a_second__cards_and_failures_never_dropped(
        self, alice, fake_api, tmp_path, provider, functions
    ):
        fake_api.configure(latency_s=0.005)
        analysis = await ai_analysis(tmp_path, alice.user, functions=functions, concurrency=8)
        if provider == "anthropic":
            await as_anthropic(analysis)
            await run_analysis(analysis.pk, provider=provider_for(fake_api))
        else:
            await run_analysis(analysis.pk)
        finished, units, cards, events = await sync_to_async(stored_run)(analysis.pk)
        progress = [e.created_at.timestamp() for e in events if e.type == "analysis.progress"]
        busiest = max(sum(1 for t in progress if start <= t < start + 1) for start in progress)
        assert busiest <= 5, progress
        kinds = Counter(event.type for event in events)
        assert kinds["unit.finished"] + kinds["unit.failed"] == units["done"] >= functions, (
            kinds,
            units,
        )
        assert kinds["unit.failed"] == units["failed"] == finished.functions_failed
        assert kinds["card.created"] == finished.cards_count == cards
        if provider == "anthropic":
            assert finished.functions_failed > 0 and cards > 0
        else:  # hundreds of units a second: progress says where they are, a few times a second
            assert len(progress) < units["done"] / 20


def stored_run(analysis_id: int) -> tuple[Analysis, Counter, int, list[AnalysisEvent]]:
    """The analysis, its reviewed units (modules too) by outcome, its cards and its events."""
    statuses = CodeUnit.objects.filter(analysis_id=analysis_id).values_list("status", flat=True)
    units = Counter(statuses)
    units["done"] = sum(
        units[s] for s in (UnitStatus.ANALYZED, UnitStatus.CACHED, UnitStatus.FAILED)
    )
    return (
        Analysis.objects.get(pk=analysis_id),
        units,
        Card.objects.filter(analysis_id=analysis_id).count(),
        list(AnalysisEvent.objects.filter(analysis_id=analysis_id).order_by("seq")),
    )


async def watch_a_run_by_another_process(connect, person: Person, fake, root: Path, **env):
    """An analysis run by ``manage.py worker``, watched with reconnects from this process."""
    analysis = await ai_analysis(root, person.user, functions=60, concurrency=3)
    await as_anthropic(analysis)
    environment = subprocess_environment(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake.base_url,
        EIDOLON_LOG_LEVEL="WARNING",
        **env,
    )
    await sync_to_async(analysis_enqueue)(analysis)
    worker = start_worker(environment, "watched-worker")
    try:
        watched = await watch_with_reconnects(
            connect, analysis.pk, person.headers(by="token", origin=None), within=90
        )
    finally:
        await sync_to_async(worker.stop)()
    return await assert_every_event_exactly_once(watched, analysis.pk)


class TestWorkerInAnotherProcess:
    async def test_embedded_default__tailing_the_persisted_events(
        self, connect, alice, fake_api, tmp_path, settings
    ):
        # The in-memory layer here and in the worker (also on a run with REDIS_URL set).
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
        assert tailers_for() is not None
        await watch_a_run_by_another_process(connect, alice, fake_api, tmp_path, REDIS_URL="")

    @pytest.mark.postgres
    @pytest.mark.redis
    async def test_postgresql_and_redis__published_through_the_shared_layer(
        self, connect, alice, fake_api, tmp_path
    ):
        assert tailers_for() is None and get_channel_layer() is not None
        await watch_a_run_by_another_process(connect, alice, fake_api, tmp_path)


# --- a real daphne and a real client ------------------------------------------------------------


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker):
    """daphne serving the application, on the test database (and the test's Redis, if any)."""
    with django_db_blocker.unblock():
        environment = subprocess_environment(EIDOLON_LOG_LEVEL="WARNING")
    server, base_url = start_daphne(environment)
    try:
        yield base_url.replace("http://", "ws://")
    finally:
        server.stop()


class TestOverARealServer:
    """What a browser or a CLI sees: close codes after the accept, an HTTP 403 for a foreign
    Origin, and events written by another process (this one) delivered live."""

    async def test_a_refusal_reaches_the_client_as_its_close_code(self, web, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        # A browser whose session has expired: its own Origin, no cookie.
        origin = web.replace("ws://", "http://")
        async with websocket_connect(f"{web}/ws/analyses/{analysis.pk}/", origin=origin) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), timeout=10)
        assert closed.value.rcvd.code == 4401  # (daphne drops the close reason we send)

    async def test_a_foreign_origin__http_403(self, web, alice):
        analysis = await sync_to_async(new_analysis)(alice.user)
        headers = {"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={alice.cookie}"}
        with pytest.raises(InvalidStatus) as refused:
            async with websocket_connect(
                f"{web}/ws/analyses/{analysis.pk}/",
                origin="https://evil.example",
                additional_headers=headers,
            ):
                pass
        assert refused.value.response.status_code == 403

    @pytest.mark.parametrize("by", ["cookie", "token"])
    async def test_events_written_elsewhere_arrive_live_then_the_close(self, web, alice, by):
        analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
        await emit(analysis.pk, [("analysis.started", {})])
        headers = (
            {"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={alice.cookie}"}
            if by == "cookie"
            else {"Authorization": f"Bearer {alice.token}"}
        )
        origin = web.replace("ws://", "http://") if by == "cookie" else None
        async with websocket_connect(
            f"{web}/ws/analyses/{analysis.pk}/?after=0", origin=origin, additional_headers=headers
        ) as socket:

            async def received() -> dict:
                return json.loads(await asyncio.wait_for(socket.recv(), timeout=10))

            assert (await received())["type"] == "analysis.snapshot"
            assert (await received())["seq"] == 1
            for seq in range(2, 12):
                await emit(analysis.pk, [("unit.finished", {"n": seq})])
                assert (await received())["seq"] == seq
            await sync_to_async(Analysis.objects.filter(pk=analysis.pk).update)(
                status=AnalysisStatus.COMPLETED
            )
            await emit(analysis.pk, [("analysis.finished", {"status": "completed"})])
            assert (await received())["type"] == "analysis.finished"
            with pytest.raises(ConnectionClosed) as closed:
                await received()
        assert closed.value.rcvd.code == 1000
