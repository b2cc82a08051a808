"""The analysis WebSocket over a shared (Redis) channel layer whose Redis dies and comes back
empty: sockets are kept and fed from the database tail, a socket opened during the outage works,
and once Redis answers again every socket rejoins its group and the tail stops; no event is
missed or sent twice. (Chaos drill 6 does the same across real processes.)"""

from __future__ import annotations

import asyncio

import pytest
import redis
from asgiref.sync import sync_to_async

from analyses.events import analysis_group, emit
from analyses.models import Analysis, AnalysisStatus
from analyses.tailing import loop_tailers
from tests.analyses.test_consumers import Socket, new_analysis, person
from tests.chaos.web_support import RedisServer, redis_server_binary

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        redis_server_binary() is None,
        reason="needs redis-server on PATH (apt-get install redis-server): the test kills its own",
    ),
]

PREFIX = "layer-outage:asgi"


@pytest.fixture
def own_redis(settings):
    server = RedisServer()
    server.start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": server.url, "socket_timeout": 10}], "prefix": PREFIX},
        }
    }
    yield server
    server.kill()


def group_members(server: RedisServer, analysis_id: int) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return client.zcard(f"{PREFIX}:group:{analysis_group(analysis_id)}")
    finally:
        client.close()


async def eventually(check, *, within: float) -> None:
    """Until ``check()`` (run in a thread) is true."""
    deadline = asyncio.get_running_loop().time() + within
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s"
        await asyncio.sleep(0.05)


async def seqs(socket: Socket, count: int) -> list[int]:
    return [(await socket.next())["seq"] for _ in range(count)]


async def test_sockets_outlive_the_outage__fed_from_the_database__then_by_the_layer_again(
    own_redis,
):
    alice = await sync_to_async(person)("alice")
    analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
    await emit(analysis.pk, [("analysis.started", {})])
    first = Socket(f"/ws/analyses/{analysis.pk}/", alice.headers())
    late = Socket(f"/ws/analyses/{analysis.pk}/", alice.headers())
    try:
        assert await first.open()
        assert (await first.next())["type"] == "analysis.snapshot"
        assert await seqs(first, 1) == [1]
        await emit(analysis.pk, [("unit.finished", {})])
        assert await seqs(first, 1) == [2]
        assert loop_tailers().tailer(analysis.pk) is None  # the layer carries it

        own_redis.kill()
        stored = await emit(analysis.pk, [("unit.finished", {}), ("card.created", {})])
        assert [event.seq for event in stored] == [3, 4]  # persisted; the publish failed
        assert await seqs(first, 2) == [3, 4]  # from the database tail
        assert await late.open()  # opened while Redis is down
        assert (await late.next())["type"] == "analysis.snapshot"
        assert await seqs(late, 4) == [1, 2, 3, 4]
        await emit(analysis.pk, [("unit.finished", {})])
        assert await seqs(first, 1) == await seqs(late, 1) == [5]

        own_redis.start()  # empty: the groups are gone
        await eventually(lambda: group_members(own_redis, analysis.pk) == 2, within=15)
        # Let go once both rejoined and caught up, which follows their joining by a moment.
        tailers = loop_tailers()
        await eventually(lambda: tailers.tailer(analysis.pk) is None, within=5)
        await emit(analysis.pk, [("unit.finished", {})])
        assert await seqs(first, 1) == await seqs(late, 1) == [6]  # through the layer

        await sync_to_async(Analysis.objects.filter(pk=analysis.pk).update)(
            status=AnalysisStatus.COMPLETED
        )
        await emit(analysis.pk, [("analysis.finished", {"status": "completed"})])
        for socket in (first, late):
            assert await seqs(socket, 1) == [7]
            assert await socket.close_code() == 1000
    finally:
        for socket in (first, late):
            if socket.accepted:
                await socket.leave()


async def test_no_redis_at_all__a_socket_still_gets_its_catch_up_and_live_events(own_redis):
    alice = await sync_to_async(person)("alice")
    analysis = await sync_to_async(new_analysis)(alice.user, status=AnalysisStatus.RUNNING)
    await emit(analysis.pk, [("analysis.started", {})])
    own_redis.kill()
    socket = Socket(f"/ws/analyses/{analysis.pk}/?after=0", alice.headers())
    try:
        assert await socket.open()
        assert (await socket.next())["type"] == "analysis.snapshot"
        assert await seqs(socket, 1) == [1]
        await emit(analysis.pk, [("unit.finished", {})])
        assert await seqs(socket, 1) == [2]
        await asyncio.sleep(1)  # idle for a while, and still served
        await emit(analysis.pk, [("unit.finished", {})])
        assert await seqs(socket, 1) == [3]
    finally:
        await socket.leave()
