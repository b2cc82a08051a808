"""Just enough HTTP/1.1 for the fake, by hand on asyncio streams: resets and trickles need the
socket, which an HTTP framework would hide."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 32 * 1024 * 1024
# Between the partial response and the RST, so the client is reading a response when it breaks.
_RESET_PAUSE_S = 0.05
_REASON_PHRASES = {529: "Overloaded"}


class BadHttpRequestError(Exception):
    """The bytes on the connection are not an HTTP/1.1 request we can answer."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @functools.cached_property
    def json_body(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def encode(self, *, keep_alive: bool) -> bytes:
        reason = _REASON_PHRASES.get(self.status) or HTTPStatus(self.status).phrase
        headers = {
            "date": email.utils.formatdate(usegmt=True),
            "content-type": "application/json",
            **self.headers,
            "content-length": str(len(self.body)),
            "connection": "keep-alive" if keep_alive else "close",
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"HTTP/1.1 {self.status} {reason}\r\n{head}\r\n".encode("latin-1") + self.body


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """The next request on the connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadHttpRequestError("the connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadHttpRequestError("the request head is too large") from None
    request_line, *header_lines = head.decode("latin-1").strip("\r\n").split("\r\n")
    try:
        method, target, version = request_line.split(" ")
    except ValueError:
        raise BadHttpRequestError(f"bad request line {request_line!r}") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator:
            raise BadHttpRequestError(f"bad header line {line!r}")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return HttpRequest(method, target, version, headers, await _read_body(reader, headers))


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked_body(reader)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadHttpRequestError("bad content-length") from None
    if not 0 <= length <= _MAX_BODY_BYTES:
        raise BadHttpRequestError(f"unacceptable content-length {length}")
    return await reader.readexactly(length)


async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadHttpRequestError("bad chunk size") from None
        if size == 0:
            break
        total += size
        if total > _MAX_BODY_BYTES:
            raise BadHttpRequestError("the chunked body is too large")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadHttpRequestError("a chunk does not end with CRLF")
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailer fields: not used
    return b"".join(chunks)


def json_response(status: int, payload: object, *, headers: Mapping[str, str]) -> HttpResponse:
    return HttpResponse(status, headers, json.dumps(payload).encode())


async def send(writer: asyncio.StreamWriter, response: HttpResponse, *, keep_alive: bool) -> None:
    writer.write(response.encode(keep_alive=keep_alive))
    await writer.drain()


async def send_then_reset(writer: asyncio.StreamWriter, response: HttpResponse) -> None:
    """The head and half the body, then a TCP RST: the client breaks off inside a response."""
    payload = response.encode(keep_alive=True)
    writer.write(payload[: len(payload) - len(response.body) // 2])
    await writer.drain()
    await asyncio.sleep(_RESET_PAUSE_S)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger 0: closing sends RST instead of FIN, like a crashed proxy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def trickle(
    writer: asyncio.StreamWriter,
    response: HttpResponse,
    *,
    keep_alive: bool,
    chunk_bytes: int,
    delay_s: float,
) -> None:
    payload = response.encode(keep_alive=keep_alive)
    for start in range(0, len(payload), chunk_bytes):
        if start:
            await asyncio.sleep(delay_s)
        writer.write(payload[start : start + chunk_bytes])
        await writer.drain()
