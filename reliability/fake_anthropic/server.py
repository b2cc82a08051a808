"""``FakeAnthropic``: the server, what it plans for each request, its log and its controls.

Each API request gets, in this order of precedence:

1. the next scripted fault (``script()`` / ``POST /_fake/script``), if any is pending;
2. 401 when it carries no API key and ``require_api_key`` is set;
3. 429 when the fake's own limit of ``rpm_limit`` requests per ``rpm_window_s`` is reached;
4. a fault drawn with the seeded RNG from the rates of the request's model
   (``model_fault_rates``) or else ``fault_rates``, or ``ok`` when none is drawn.

Scripted and drawn requests count towards the RPM window; requests it refuses do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import structlog

from reliability.fake_anthropic import control
from reliability.fake_anthropic.config import FakeConfig, Fault, RequestOutcome, fault_kind
from reliability.fake_anthropic.errors import api_error, plain_error
from reliability.fake_anthropic.http import (
    MAX_HEAD_BYTES,
    BadHttpRequestError,
    HttpRequest,
    HttpResponse,
    json_response,
    read_request,
    send,
    send_then_reset,
    trickle,
)
from reliability.fake_anthropic.messages import (
    COUNT_TOKENS_PATH,
    MALFORMED_BODY,
    MESSAGES_PATH,
    InvalidRequestError,
    Responder,
    ResponderFailedError,
    canned_reply,
    new_id,
    reply,
)
from reliability.fake_anthropic.prompt_cache import PromptCache
from reliability.fake_anthropic.ratelimits import Charge, RateLimits, estimated_input_tokens
from reliability.fake_anthropic.records import RequestRecord, counts_by_model, credential_header
from reliability.fake_anthropic.windows import UsageWindows, ratelimit_headers

logger = structlog.get_logger(__name__)

_API_ROUTES = frozenset({("POST", MESSAGES_PATH), ("POST", COUNT_TOKENS_PATH)})
_DELAYED_FAULTS = frozenset({Fault.OK, Fault.TRICKLE, Fault.MALFORMED})
_THREAD_TIMEOUT_S = 10.0


class FakeAnthropic:
    """The fake API server. Use ``async with FakeAnthropic(...)`` or ``with fake.running():``.

    ``script``, ``configure``, ``reset``, ``requests`` and ``config`` are safe to call from any
    thread; the responder runs on the server's event loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: FakeConfig | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.host = host
        self.responder = responder
        self._requested_port = port
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._config = config or FakeConfig()
        self._script: deque[Fault] = deque()
        self._records: list[RequestRecord] = []
        self._windows = UsageWindows()
        self._prompt_cache = PromptCache()
        self._limits = RateLimits()
        self._fault_rng, self._latency_rng = _rngs(self._config.seed)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake Anthropic API is not running")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the fake Anthropic API is already running")
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self._requested_port, limit=MAX_HEAD_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("fake_anthropic_started", base_url=self.base_url)

    async def stop(self) -> None:
        """Stop listening and drop every connection, including hanging and trickling ones."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()
        logger.info("fake_anthropic_stopped", base_url=self.base_url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> None:
        """Serve from a new event loop in a daemon thread, for sync code and subprocess tests."""
        if self._thread is not None:
            raise RuntimeError("the fake Anthropic API is already running in a thread")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-anthropic", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_THREAD_TIMEOUT_S)
        except BaseException:
            _stop_loop_thread(loop, thread)
            raise
        self._loop, self._thread = loop, thread

    def stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_THREAD_TIMEOUT_S)
        finally:
            _stop_loop_thread(loop, thread)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """``with FakeAnthropic().running() as fake:`` serves from a thread for the block."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_thread()

    # control

    @property
    def config(self) -> FakeConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> None:
        """Replace config fields, e.g. ``configure(fault_rates={"overloaded": 0.5})``."""
        with self._lock:
            config = self._config.with_changes(**changes)
            if config.seed != self._config.seed:
                self._fault_rng, self._latency_rng = _rngs(config.seed)
            self._config = config
        logger.info("fake_anthropic_configured", changes=sorted(changes))

    def script(self, *kinds: str) -> None:
        """Apply these faults, in order, to the next API requests; replaces any pending script."""
        faults = [fault_kind(kind) for kind in kinds]
        with self._lock:
            self._script = deque(faults)

    @property
    def pending_script(self) -> list[str]:
        with self._lock:
            return [fault.value for fault in self._script]

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests per model per outcome (``fault``) so far; see ``records.counts_by_model``."""
        return counts_by_model(self.requests)

    def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> list[RequestRecord]:
        """Block until the log holds ``count`` requests; TimeoutError after ``timeout`` seconds.

        Blocking: from async code call it through ``asyncio.to_thread``.
        """
        with self._logged:
            if not self._logged.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(f"{len(self._records)} of {count} requests after {timeout}s")
            return list(self._records)

    def reset(self) -> None:
        """Clear the log, the script and the rate-limit windows; reseed. Keeps the config."""
        with self._lock:
            self._records.clear()
            self._script.clear()
            self._windows.clear()
            self._prompt_cache.clear()
            self._limits.clear()
            self._fault_rng, self._latency_rng = _rngs(self._config.seed)

    # connections

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while (request := await read_request(reader)) is not None:
                if not await self._respond(request, writer):
                    break
        except BadHttpRequestError as exc:
            request_id = new_id("req_")
            logger.warning(
                "fake_anthropic_bad_http_request", request_id=request_id, reason=str(exc)
            )
            response = plain_error(
                400, error_type="invalid_request_error", message=str(exc), request_id=request_id
            )
            with contextlib.suppress(ConnectionError):
                await send(writer, response, keep_alive=False)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally keeps asyncio's stream callback
            # from logging the cancellation as an error (it calls task.exception()).
            pass
        except Exception:
            logger.exception("fake_anthropic_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _respond(self, request: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True when the connection stays open for the next one."""
        if control.is_control(request):
            await send(writer, control.response(self, request), keep_alive=request.keep_alive)
            return request.keep_alive
        plan = await self._plan(request)
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if plan.charge is not None:  # the request ends: its charge becomes what it used
            with self._lock:
                self._limits.settle(plan.config, plan.charge, now=time.monotonic())
        if plan.response is None:  # hang
            await asyncio.sleep(plan.config.hang_seconds)
            return False
        match plan.fault:
            case Fault.RESET:
                await send_then_reset(writer, plan.response)
                return False
            case Fault.TRICKLE:
                await trickle(
                    writer,
                    plan.response,
                    keep_alive=request.keep_alive,
                    chunk_bytes=plan.config.trickle_chunk_bytes,
                    delay_s=plan.config.trickle_delay_s,
                )
            case _:
                await send(writer, plan.response, keep_alive=request.keep_alive)
        return request.keep_alive

    # API requests

    async def _plan(self, request: HttpRequest) -> _Plan:
        received_at, received_monotonic = datetime.now(UTC), time.monotonic()
        request_id = new_id("req_")
        with self._lock:
            config = self._config
            fault, rpm_wait_s, charge = self._choose_fault(
                request,
                config,
                has_credential=credential_header(request.headers) is not None,
                now=received_monotonic,
            )
            delay_s = self._latency(config) if fault in _DELAYED_FAULTS else 0.0
        fault, response = await self._response(
            request,
            fault=fault,
            request_id=request_id,
            retry_after_s=config.retry_after_s if rpm_wait_s is None else rpm_wait_s,
            charge=charge,
        )
        with self._lock:
            record = RequestRecord.of(
                request,
                index=len(self._records),
                received_at=received_at,
                received_monotonic=received_monotonic,
                fault=fault,
                status=response.status if response is not None else None,
                request_id=request_id,
            )
            self._records.append(record)
            self._logged.notify_all()
        logger.debug(
            "fake_anthropic_request_planned",
            request_id=request_id,
            path=record.path,
            fault=fault,
            status=record.status,
        )
        return _Plan(fault=fault, response=response, config=config, delay_s=delay_s, charge=charge)

    def _choose_fault(
        self, request: HttpRequest, config: FakeConfig, *, has_credential: bool, now: float
    ) -> tuple[str, float | None, Charge | None]:
        """The fault for this request, the seconds to wait when a rate limit refuses it, and
        what it holds of the rate limits (``enforce_rate_limits``)."""
        if (request.method, request.path) not in _API_ROUTES:
            return RequestOutcome.NOT_FOUND, None, None
        if self._script:
            self._windows.admit(now)
            return self._script.popleft(), None, None
        if config.require_api_key and not has_credential:
            return RequestOutcome.MISSING_API_KEY, None, None
        charge = None
        if config.enforce_rate_limits and request.path == MESSAGES_PATH:
            charge, wait_s = self._limits.admit(
                config,
                body=request.json_body,
                input_tokens=estimated_input_tokens(request.json_body),
                now=now,
            )
            if charge is None:
                return RequestOutcome.BUCKET_LIMITED, wait_s, None
        elif (wait_s := self._windows.rpm_wait(config, now=now)) is not None:
            return RequestOutcome.RPM_LIMITED, wait_s, None
        self._windows.admit(now)
        return self._drawn_fault(config, model=_model_of(request)), None, charge

    def _drawn_fault(self, config: FakeConfig, *, model: str | None) -> Fault:
        rates = config.rates_for(model)
        draw = self._fault_rng.random()
        cumulative = 0.0
        for kind in Fault:  # a fixed order, so a seed means the same faults whatever the dict
            cumulative += rates.get(kind, 0.0)
            if draw < cumulative:
                return kind
        return Fault.OK

    def _latency(self, config: FakeConfig) -> float:
        if isinstance(config.latency_s, tuple):
            return self._latency_rng.uniform(*config.latency_s)
        return config.latency_s

    async def _response(
        self,
        request: HttpRequest,
        *,
        fault: str,
        request_id: str,
        retry_after_s: float,
        charge: Charge | None = None,
    ) -> tuple[str, HttpResponse | None]:
        """The response for ``fault`` (None for a hang), and the fault itself, which may turn
        into an error."""
        match fault:
            case Fault.HANG:
                return fault, None
            case Fault.OK | Fault.TRICKLE:
                try:
                    payload, usage = await self._reply(request.path, request.json_body)
                except InvalidRequestError as exc:
                    return RequestOutcome.INVALID_REQUEST, self._error(
                        RequestOutcome.INVALID_REQUEST, request_id=request_id, message=str(exc)
                    )
                except ResponderFailedError:
                    logger.exception("fake_anthropic_responder_failed", request_id=request_id)
                    return RequestOutcome.RESPONDER_FAILED, self._error(
                        RequestOutcome.RESPONDER_FAILED, request_id=request_id
                    )
                if charge is not None:
                    charge.used = usage
                headers = self._api_headers(request_id=request_id, usage=usage)
                return fault, json_response(200, payload, headers=headers)
            case Fault.RESET:
                headers = self._api_headers(request_id=request_id)
                return fault, json_response(200, canned_reply(request.json_body), headers=headers)
            case Fault.MALFORMED:
                headers = self._api_headers(request_id=request_id)
                return fault, HttpResponse(200, headers, MALFORMED_BODY)
            case Fault.RATE_LIMIT | RequestOutcome.RPM_LIMITED | RequestOutcome.BUCKET_LIMITED:
                return fault, self._error(fault, request_id=request_id, retry_after_s=retry_after_s)
            case _:
                return fault, self._error(fault, request_id=request_id)

    async def _reply(self, path: str, body: Any) -> tuple[dict[str, Any], tuple[int, int]]:
        """The 200 payload for a valid request, and its (input, output) token usage.

        A hook: a test's subclass can alter replies, e.g. cut them off at ``max_tokens``.
        """
        return await reply(path, body, responder=self.responder, prompt_cache=self._prompt_cache)

    def _error(
        self,
        kind: str,
        *,
        request_id: str,
        message: str | None = None,
        retry_after_s: float | None = None,
    ) -> HttpResponse:
        return api_error(
            kind,
            request_id=request_id,
            headers=self._api_headers(request_id=request_id, exhausted_for_s=retry_after_s),
            message=message,
            retry_after_s=retry_after_s,
        )

    def _api_headers(
        self,
        *,
        request_id: str,
        usage: tuple[int, int] | None = None,
        exhausted_for_s: float | None = None,
    ) -> dict[str, str]:
        """request-id and the anthropic-ratelimit-* headers, after counting ``usage``."""
        now, wall_now = time.monotonic(), datetime.now(UTC)
        with self._lock:
            config = self._config
            if usage is not None:
                self._windows.count_tokens(now, usage)
            window_usage = self._windows.usage(config, now=now)
            if config.enforce_rate_limits:
                limits = self._limits.headers(config, now=now, wall_now=wall_now)
                return {"request-id": request_id, **limits}
        return {
            "request-id": request_id,
            **ratelimit_headers(
                config, window_usage, wall_now=wall_now, exhausted_for_s=exhausted_for_s
            ),
        }


@dataclass(frozen=True)
class _Plan:
    """What to send for one API request, decided before anything is sent."""

    fault: str
    response: HttpResponse | None
    """None: send nothing (``hang``)."""
    config: FakeConfig
    delay_s: float
    charge: Charge | None = None  # what it holds of the rate limits until it ends


def _model_of(request: HttpRequest) -> str | None:
    body = request.json_body
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _rngs(seed: int | None) -> tuple[random.Random, random.Random]:
    # Separate generators: latency draws do not shift which requests get faults.
    if seed is None:
        return random.Random(), random.Random()
    return random.Random(f"faults-{seed}"), random.Random(f"latency-{seed}")


def _stop_loop_thread(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_THREAD_TIMEOUT_S)
    if not thread.is_alive():
        loop.close()
