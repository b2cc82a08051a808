"""Live events when the worker is another process and the channel layer is not shared.

The embedded default's in-memory channel layer lives inside one process: a worker's
``group_send`` never reaches the web process's sockets. There, the web process tails the
persisted events instead: one tailer per analysis being watched, shared by all of that
analysis's sockets in this process, polls ``events_after`` every ``EIDOLON_WS_TAIL_SECONDS`` and
``group_send``s what is new to the analysis's group on the local layer, where each socket's
cursor takes it like a batch the worker had published. Fifty sockets cost one query per poll.

With a shared (Redis) layer the worker's own ``group_send`` reaches every web process and no
tailer runs (``tailers_for`` returns None) - until that layer stops answering: a socket that
loses it keeps its client and is fed by the same tailers, straight to its watch (a *receiver*)
since the layer cannot carry the batch, until it rejoins its group (``analyses.live``).

Who owns what: the ``EventTailers`` of an event loop belong to that loop (daphne serves all of a
process's sockets on one loop) and are dropped with it; each ``EventTailer`` belongs to its
watchers: the first socket that watches an analysis starts it, the last one to leave stops it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from channels.db import database_sync_to_async
from django.conf import settings

from analyses.events import CHANNEL_MESSAGE_TYPE, analysis_group
from analyses.models import Analysis
from analyses.selectors import events_after
from reliability.health.checks import is_shared_channel_layer

logger = structlog.get_logger(__name__)

# Events read per query; a full page is followed by another read at once.
TAIL_PAGE = 500

# A socket's watch, fed the batches directly (``AnalysisWatch.deliver``).
Receiver = Callable[[list[dict[str, Any]]], Awaitable[None]]


def _last_seq(analysis_id: int) -> int:
    return Analysis.objects.filter(pk=analysis_id).values_list("event_seq", flat=True).first() or 0


class EventTailer:
    """Polls one analysis's persisted events and fans out what is new to this process's
    sockets: through the analysis's group on the local channel layer (``layer``), and straight
    to the ``receivers`` (sockets whose shared layer is down)."""

    def __init__(self, *, analysis_id: int, interval: float, layer: Any = None) -> None:
        self.analysis_id = analysis_id
        self.layer = layer
        self.receivers: set[Receiver] = set()
        self.interval = interval
        self.watchers = 0
        self.last_seq = 0
        # Set once the starting point is known: a socket reads its catch-up only after that,
        # so that nothing falls between its catch-up and what the tailer sends.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        try:
            self.last_seq = await database_sync_to_async(_last_seq)(self.analysis_id)
        except asyncio.CancelledError:
            self.ready.cancel()
            raise
        except Exception as error:
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: the watchers that wait for it see it raised
            raise
        self.ready.set_result(None)
        self.task = asyncio.create_task(self._run(), name=f"event-tailer-{self.analysis_id}")
        logger.debug("event_tailer_started", analysis_id=self.analysis_id, after=self.last_seq)

    async def poll(self) -> int:
        """Fan out the events persisted since the last poll; returns how many there were."""
        events = await database_sync_to_async(events_after)(
            self.analysis_id, self.last_seq, limit=TAIL_PAGE
        )
        if events:
            self.last_seq = events[-1]["seq"]
            await self.fan_out(events)
        return len(events)

    async def fan_out(self, events: list[dict[str, Any]]) -> None:
        if self.layer is not None:
            await self.layer.group_send(
                analysis_group(self.analysis_id), {"type": CHANNEL_MESSAGE_TYPE, "events": events}
            )
        # At once, so that one slow socket does not hold the others back; awaited, so that
        # each receiver gets its batches in order.
        receivers = list(self.receivers)
        outcomes = await asyncio.gather(
            *(deliver(events) for deliver in receivers), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.warning(
                    "event_tailer_delivery_failed",
                    analysis_id=self.analysis_id,
                    error=type(outcome).__name__,
                )

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                read = await self.poll()
            except Exception as error:  # the database, mostly; the sockets' keep-alives catch up
                if not failing:
                    logger.warning(
                        "event_tailer_failed",
                        analysis_id=self.analysis_id,
                        error=type(error).__name__,
                    )
                failing, read = True, 0
                await asyncio.sleep(max(1.0, self.interval))
            else:
                if failing:
                    logger.info("event_tailer_recovered", analysis_id=self.analysis_id)
                failing = False
            if read < TAIL_PAGE:
                await asyncio.sleep(self.interval)


class EventTailers:
    """The tailers of one event loop, one per analysis that a socket watches."""

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._by_analysis: dict[int, EventTailer] = {}

    def __len__(self) -> int:
        return len(self._by_analysis)

    async def watch(
        self, analysis_id: int, *, layer: Any = None, receiver: Receiver | None = None
    ) -> None:
        """Count one more watcher (the first starts the tailer), fed through the local
        ``layer`` or as a ``receiver``; returns once the tailer knows where it starts."""
        tailer = self._by_analysis.get(analysis_id)
        starting = tailer is None
        if tailer is None:
            tailer = self._by_analysis[analysis_id] = EventTailer(
                analysis_id=analysis_id, interval=self.interval
            )
        tailer.watchers += 1
        if layer is not None:
            tailer.layer = layer
        if receiver is not None:
            tailer.receivers.add(receiver)
        try:
            await (tailer.start() if starting else asyncio.shield(tailer.ready))
        except BaseException:
            self.unwatch(analysis_id, receiver=receiver)
            raise

    def unwatch(self, analysis_id: int, *, receiver: Receiver | None = None) -> None:
        """Count one watcher less (the last stops the tailer)."""
        tailer = self._by_analysis.get(analysis_id)
        if tailer is None:
            return
        if receiver is not None:
            tailer.receivers.discard(receiver)
        tailer.watchers -= 1
        if tailer.watchers <= 0:
            del self._by_analysis[analysis_id]
            if tailer.task is not None:
                tailer.task.cancel()
            logger.debug("event_tailer_stopped", analysis_id=analysis_id, after=tailer.last_seq)

    def tailer(self, analysis_id: int) -> EventTailer | None:
        return self._by_analysis.get(analysis_id)


_TAILERS_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventTailers] = (
    weakref.WeakKeyDictionary()
)


def tailers_for(alias: str = "default") -> EventTailers | None:
    """This event loop's tailers, or None when the channel layer is shared (nothing to tail
    while it answers)."""
    if is_shared_channel_layer(alias):
        return None
    return loop_tailers()


def loop_tailers() -> EventTailers:
    """This event loop's tailers, whatever the channel layer."""
    loop = asyncio.get_running_loop()
    tailers = _TAILERS_BY_LOOP.get(loop)
    if tailers is None:
        tailers = _TAILERS_BY_LOOP[loop] = EventTailers(interval=settings.EIDOLON_WS_TAIL_SECONDS)
    return tailers
