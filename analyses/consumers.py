"""The WebSocket of one analysis's live events: a thin caller of ``analyses.live``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from analyses import metrics
from analyses.events import CHANNEL_MESSAGE_TYPE
from analyses.live import AnalysisWatch, Message
from analyses.tailing import loop_tailers
from reliability.health.checks import is_shared_channel_layer

# Clients have nothing to send on this socket: a message above EIDOLON_WS_MAX_MESSAGE_BYTES is
# refused with this code (the protocol's 44xx, like HTTP's 413), any other is ignored unread.
CLOSE_MESSAGE_TOO_BIG = 4413


class AnalysisEventsConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/analyses/<id>/?after=SEQ``: a snapshot, the events after ``after``, then live ones.

    Reads ``scope["user"]`` (set by the session or bearer-token middleware of the site).
    """

    watch: AnalysisWatch | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._watch_created = asyncio.Event()
        self._layer_receive: Callable[[], Awaitable[Message]] | None = None

    # Channels' __call__ sets ``channel_receive`` (the layer's receive for this socket's channel)
    # and then waits on it beside the client's messages; an exception from it would end the
    # consumer and drop the client. It gets a receive that outlives a shared layer's outage.
    @property
    def channel_receive(self) -> Callable[[], Awaitable[Message]]:
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[Message]]) -> None:
        self._layer_receive = receive

    async def _receive_from_layer(self) -> Message:
        """The next message from the layer, received only while the watch is subscribed; a
        failure switches the watch to the database tail (it rejoins by itself)."""
        await self._watch_created.wait()
        assert self.watch is not None and self._layer_receive is not None
        while True:
            await self.watch.subscribed.wait()
            try:
                return await self._layer_receive()
            except Exception as error:
                await self.watch.layer_lost(error)

    async def connect(self) -> None:
        # Accepted first, even when it is refused next: a close before the accept reaches a
        # browser as an HTTP 403 whose reason it cannot read; after it, as a close code.
        await self.accept()
        metrics.record_websocket_opened()
        self.watch = AnalysisWatch(
            scope=self.scope,
            layer=self.channel_layer,
            channel_name=self.channel_name,
            send_message=self._send,
            close_socket=self._close,
            keepalive_seconds=settings.EIDOLON_WS_KEEPALIVE_SECONDS,
            tailers=loop_tailers(),
            shared_layer=is_shared_channel_layer(self.channel_layer_alias),
        )
        self._watch_created.set()
        await self.watch.open()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.EIDOLON_WS_MAX_MESSAGE_BYTES:
            reason = f"messages are limited to {settings.EIDOLON_WS_MAX_MESSAGE_BYTES} bytes"
            if self.watch is not None:
                await self.watch.close(CLOSE_MESSAGE_TOO_BIG, reason)
            else:
                await self.close(code=CLOSE_MESSAGE_TOO_BIG, reason=reason)

    async def _send(self, message: Message) -> None:
        await self.send_json(message)
        metrics.record_websocket_message(message)

    async def _close(self, code: int, reason: str) -> None:
        await self.close(code=code, reason=reason)

    async def dispatch(self, message: Message) -> None:
        # Channels hops to its one sync thread before every handler (close_old_connections):
        # a thousand hops a second for fifty sockets at twenty batches a second. A live batch
        # reads the database only through database_sync_to_async (which tidies the connections
        # itself), so it goes straight to its handler.
        if message["type"] == CHANNEL_MESSAGE_TYPE:
            await self.analysis_events(message)
            return
        await super().dispatch(message)

    async def analysis_events(self, message: Message) -> None:
        """A batch of events (``analyses.events.CHANNEL_MESSAGE_TYPE``)."""
        if self.watch is not None:
            await self.watch.deliver(message["events"])

    async def disconnect(self, code: int) -> None:
        if self.watch is not None:
            metrics.record_websocket_closed()
            await self.watch.leave()
