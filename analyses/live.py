"""Live events of one analysis over one WebSocket: who may watch, what is sent first, and the
cursor that keeps the stream free of gaps and duplicates across any number of reconnects.

The protocol (``/ws/analyses/<id>/?after=SEQ``, ``after`` defaults to 0); each message is a JSON
object:

* first ``{"type": "analysis.snapshot", "data": analysis_detail(...), "at": ISO}`` (no ``seq``);
* then every persisted event with ``seq > after``, oldest first, then the live ones:
  ``{"seq": n, "type": ..., "data": {...}, "at": ISO}``, ``seq`` consecutive per analysis;
* ``{"type": "keepalive", "at": ISO}`` every ``EIDOLON_WS_KEEPALIVE_SECONDS``;
* once ``analysis.finished`` has been sent the server closes with 1000 (a reconnect to a
  finished analysis gets the snapshot, what it had not seen yet, and the same close).

Refusals are sent after the handshake was accepted, so that every client can read the code:
4401 no (valid) credentials, 4403 an analysis the user may not watch (neither its owner nor
staff), 4404 no such analysis, 4400 a malformed or impossible ``after``. (The API answers 404
for another user's analysis; the socket's codes are the protocol's own. Analysis ids are
consecutive, so that one exists is no secret; what it holds is.)

No gap, no duplicate: a watch subscribes to the analysis's group *before* it reads the snapshot
and the catch-up from the database, so every event is either read or received (or both); the
cursor sends only ``last_sent + 1``: what it has sent is dropped, and a batch that starts beyond
the next expected event has the missing range read from the database first (events are always
persisted before they are published, and committed in ``seq`` order).

When the shared (Redis) layer stops answering (a subscribe or the consumer's receive fails), the
socket is kept: its watch is fed from the database by this process's tailers (``analyses.
tailing``), catches up at once, and tries to rejoin its group every few seconds; once it has, the
tailer lets it go and a catch-up covers whatever was published before the rejoin. The cursor
makes the switch in either direction free of gaps and duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import structlog
from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from analyses.events import analysis_group
from analyses.models import Analysis, AnalysisEvent
from analyses.selectors import analysis_detail, events_after, may_see
from analyses.tailing import EventTailers

logger = structlog.get_logger(__name__)

CLOSE_FINISHED = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_NO_CREDENTIALS = 4401
CLOSE_NOT_ALLOWED = 4403
CLOSE_NOT_FOUND = 4404

SNAPSHOT = "analysis.snapshot"
KEEPALIVE = "keepalive"
FINISHED = "analysis.finished"
# The events that say whether an analysis is running: the last one sent decides the close.
LIFECYCLE = ("analysis.started", "analysis.resumed", FINISHED)
# Events read from the database at a time (catch-up and gap filling).
PAGE = 500
_SEQ = re.compile(r"\d{1,18}")
_LARGEST_ID = 2**63 - 1
# While the shared layer is down, a watch tries to rejoin its group after this long, doubling up
# to the second figure.
REJOIN_SECONDS = (0.5, 4.0)

Message = dict[str, Any]
ReadAfter = Callable[..., Awaitable[list[Message]]]


class Refused(Exception):
    """The watch cannot start: the socket is closed with ``code`` (and ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat()


def requested_after(query_string: bytes) -> int:
    """The ``after`` of a handshake's query string (0 when absent)."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after")
    if values is None:
        return 0
    if len(values) != 1 or not _SEQ.fullmatch(values[0]):
        raise Refused(CLOSE_BAD_REQUEST, "after must be a sequence number (an integer >= 0)")
    return int(values[0])


def authorise_watch(
    *, user: AbstractBaseUser | AnonymousUser | None, analysis_id: int, after: int
) -> None:
    """Refuse unless ``user`` may watch the analysis from ``after``."""
    if user is None or not user.is_authenticated:
        raise Refused(CLOSE_NO_CREDENTIALS, "sign in or send Authorization: Bearer <token>")
    row = (
        Analysis.objects.filter(pk=analysis_id).values_list("created_by_id", "event_seq").first()
        if 0 < analysis_id <= _LARGEST_ID
        else None
    )
    if row is None:
        raise Refused(CLOSE_NOT_FOUND, "no such analysis")
    owner_id, last_seq = row
    if not may_see(user, owner_id=owner_id):
        raise Refused(CLOSE_NOT_ALLOWED, "only its owner and staff may watch this analysis")
    if after > last_seq:
        raise Refused(CLOSE_BAD_REQUEST, f"after={after} is beyond the last event ({last_seq})")


def opening(*, analysis_id: int, after: int) -> tuple[Message, bool]:
    """The snapshot, and whether the analysis had finished as of event ``after`` (the client
    has then seen its end: it gets only what came since, and the close)."""
    analysis = Analysis.objects.filter(pk=analysis_id).first()
    if analysis is None:  # deleted since it was authorised
        raise Refused(CLOSE_NOT_FOUND, "no such analysis")
    snapshot = {"type": SNAPSHOT, "data": analysis_detail(analysis), "at": now_iso()}
    if not analysis.is_finished:
        return snapshot, False
    latest = (
        AnalysisEvent.objects.filter(analysis_id=analysis_id, seq__lte=after, type__in=LIFECYCLE)
        .order_by("-seq")
        .values_list("type", flat=True)
        .first()
    )
    return snapshot, latest == FINISHED


class EventCursor:
    """One socket's place in its analysis's events: ``last_sent``, and whether the last lifecycle
    event it sent (or its client saw before it reconnected) says the analysis finished."""

    def __init__(
        self,
        *,
        analysis_id: int,
        last_sent: int,
        finished: bool = False,
        read_after: ReadAfter | None = None,
    ) -> None:
        self.analysis_id = analysis_id
        self.last_sent = last_sent
        self.finished = finished
        self._read_after = read_after or database_sync_to_async(events_after)

    def _take(self, events: Sequence[Message]) -> list[Message]:
        """The leading run of ``events`` that continues the stream; the cursor moves past it."""
        taken = []
        for event in events:
            if event["seq"] <= self.last_sent:
                continue
            if event["seq"] != self.last_sent + 1:
                break
            taken.append(event)
            self.last_sent = event["seq"]
            if event["type"] in LIFECYCLE:
                self.finished = event["type"] == FINISHED
        return taken

    async def admit(self, events: Sequence[Message]) -> list[Message]:
        """What to send of a batch that arrived, in order: nothing sent before, and whatever is
        missing before it read from the database."""
        pending = sorted((e for e in events if e["seq"] > self.last_sent), key=lambda e: e["seq"])
        admitted: list[Message] = []
        while pending:
            admitted += self._take(pending)
            pending = [event for event in pending if event["seq"] > self.last_sent]
            if not pending:
                break
            missing = pending[0]["seq"] - self.last_sent - 1
            filled = self._take(
                await self._read_after(self.analysis_id, self.last_sent, limit=min(missing, PAGE))
            )
            if not filled:
                # Cannot happen while events are persisted before they are published; a gap
                # is then better than a socket that sends nothing more.
                logger.warning(
                    "websocket_event_gap_unfilled",
                    analysis_id=self.analysis_id,
                    after=self.last_sent,
                    next_seq=pending[0]["seq"],
                )
                self.last_sent = pending[0]["seq"] - 1
            admitted += filled
        return admitted

    async def catch_up(self) -> list[Message]:
        """One page of the persisted events after ``last_sent`` (empty when there is none)."""
        return self._take(await self._read_after(self.analysis_id, self.last_sent, limit=PAGE))


@dataclass(kw_only=True, eq=False)
class AnalysisWatch:
    """One WebSocket's watch over one analysis, from the accepted handshake to the close.

    The consumer calls ``open`` once, ``deliver`` for each batch the channel layer brings,
    ``layer_lost`` when receiving from a shared layer fails, and ``leave`` when the socket is
    gone; ``send_message`` and ``close_socket`` are the consumer's. ``subscribed`` is set while
    the watch is in its group: the consumer receives from the layer only then.

    ``tailers`` are this process's: with the in-memory layer they always feed the socket; with a
    shared layer, only while it is down (``shared_layer``).
    """

    scope: dict[str, Any]
    layer: Any
    channel_name: str
    send_message: Callable[[Message], Awaitable[None]]
    close_socket: Callable[[int, str], Awaitable[None]]
    keepalive_seconds: float
    tailers: EventTailers
    shared_layer: bool

    def __post_init__(self) -> None:
        self.analysis_id: int = self.scope["url_route"]["kwargs"]["analysis_id"]
        self.group = analysis_group(self.analysis_id)
        self.cursor: EventCursor | None = None
        self.closed = False
        self.subscribed = asyncio.Event()
        self._in_group = False
        self._tailed = False  # through the local layer (in-memory)
        self._fed_by_tailer = False  # directly, while the shared layer is down
        self._sending = asyncio.Lock()  # deliveries and keep-alives: one at a time, in order
        self._keepalive: asyncio.Task | None = None
        self._rejoin: asyncio.Task | None = None
        self._log = logger.bind(analysis_id=self.analysis_id)

    async def open(self) -> None:
        try:
            await self._open()
        except Refused as refusal:
            self._log.info("websocket_refused", code=refusal.code, reason=refusal.reason)
            await self.close(refusal.code, refusal.reason)

    async def _open(self) -> None:
        after = requested_after(self.scope.get("query_string", b""))
        await database_sync_to_async(authorise_watch)(
            user=self.scope.get("user"), analysis_id=self.analysis_id, after=after
        )
        # Subscribe first: whatever is published from now on reaches this socket, and whatever
        # was published before is in the database the catch-up reads next.
        await self._subscribe()
        snapshot, finished = await database_sync_to_async(opening)(
            analysis_id=self.analysis_id, after=after
        )
        self.cursor = EventCursor(analysis_id=self.analysis_id, last_sent=after, finished=finished)
        self._log.info("websocket_watch_opened", after=after, last_seq=snapshot["data"]["last_seq"])
        async with self._sending:
            await self.send_message(snapshot)
            await self._catch_up()
            await self._close_if_finished()
        if not self.closed:
            self._keepalive = asyncio.create_task(self._keep_alive())

    async def _subscribe(self) -> None:
        """Into the group (and, on the in-memory layer, onto the tailer); or, when the shared
        layer does not answer, onto the tailer until it rejoins."""
        try:
            await self.layer.group_add(self.group, self.channel_name)
        except Exception as error:
            if not self.shared_layer:
                raise
            await self._fall_back_to_tailer(error)
            return
        self._in_group = True
        if not self.shared_layer:
            await self.tailers.watch(self.analysis_id, layer=self.layer)
            self._tailed = True
        self.subscribed.set()

    async def layer_lost(self, error: Exception) -> None:
        """Receiving from the shared layer failed: feed the socket from the database (with a
        catch-up now, for what the layer may have lost) until the watch rejoins its group."""
        if not self.shared_layer:
            raise error  # the in-memory layer does not fail: something else is wrong
        if self.closed or not self.subscribed.is_set():
            return
        await self._fall_back_to_tailer(error)
        await self._catch_up_now()

    async def _fall_back_to_tailer(self, error: Exception) -> None:
        if self._fed_by_tailer:
            return
        self.subscribed.clear()
        self._log.warning(
            "websocket_layer_lost",
            error=type(error).__name__,
            last_sent=self.cursor.last_sent if self.cursor else None,
        )
        await self.tailers.watch(self.analysis_id, receiver=self.deliver)
        self._fed_by_tailer = True
        self._rejoin = asyncio.create_task(self._rejoin_group())

    async def _rejoin_group(self) -> None:
        delay, longest = REJOIN_SECONDS
        while not self.closed:
            await asyncio.sleep(delay)
            try:
                await self.layer.group_add(self.group, self.channel_name)
            except Exception:
                delay = min(2 * delay, longest)
                continue
            # Published from now on reaches the socket (once the consumer receives again);
            # the catch-up after the tailer lets go reads everything before.
            self._in_group = True
            self._stop_tailer_feed()
            self.subscribed.set()
            self._log.info(
                "websocket_layer_rejoined",
                last_sent=self.cursor.last_sent if self.cursor else None,
            )
            await self._catch_up_now()
            return

    def _stop_tailer_feed(self) -> None:
        if self._fed_by_tailer:
            self._fed_by_tailer = False
            self.tailers.unwatch(self.analysis_id, receiver=self.deliver)

    async def _catch_up_now(self) -> None:
        async with self._sending:
            if self.cursor is not None and not self.closed:
                await self._catch_up()
                await self._close_if_finished()

    async def deliver(self, events: Sequence[Message]) -> None:
        """A batch from the channel layer (the worker's publish, or this process's tailer)."""
        if self.cursor is None or self.closed:
            return
        async with self._sending:
            for event in await self.cursor.admit(events):
                await self.send_message(event)
            await self._close_if_finished()

    async def _catch_up(self) -> None:
        assert self.cursor is not None
        while page := await self.cursor.catch_up():
            for event in page:
                await self.send_message(event)
            if len(page) < PAGE:
                break

    async def _close_if_finished(self) -> None:
        if self.cursor is not None and self.cursor.finished and not self.closed:
            await self.close(CLOSE_FINISHED, "analysis finished")

    async def _keep_alive(self) -> None:
        """A keep-alive now and then; first a catch-up, in case a full channel dropped a batch
        (both layers drop rather than block when a slow socket's channel is full)."""
        while not self.closed:
            await asyncio.sleep(self.keepalive_seconds)
            try:
                async with self._sending:
                    if self.closed:
                        return
                    await self._catch_up()
                    await self.send_message({"type": KEEPALIVE, "at": now_iso()})
                    await self._close_if_finished()
            except Exception as error:
                self._log.warning("websocket_keepalive_failed", error=type(error).__name__)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self.close_socket(code, reason)
        await self.leave()

    async def leave(self) -> None:
        """Unsubscribe (idempotent): called when the socket closes, from either end."""
        self.closed = True
        self.subscribed.clear()
        for task in (self._keepalive, self._rejoin):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keepalive = self._rejoin = None
        if self._tailed:
            self._tailed = False
            self.tailers.unwatch(self.analysis_id)
        self._stop_tailer_feed()
        if self._in_group:
            self._in_group = False
            try:
                await self.layer.group_discard(self.group, self.channel_name)
            except Exception as error:  # a shared layer that is down: its membership expires
                self._log.info("websocket_group_discard_failed", error=type(error).__name__)
            self._log.info(
                "websocket_watch_closed", last_sent=self.cursor.last_sent if self.cursor else None
            )
