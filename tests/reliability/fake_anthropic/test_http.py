"""The HTTP/1.1 the fake Anthropic API speaks, byte by byte."""

from __future__ import annotations

import asyncio
import json

import anthropic
import pytest


class TestFakeAnthropicHttp:
    async def test_chunked_request_body__is_parsed(self, fake):
        body = json.dumps(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "chunky"}]}
        ).encode()
        head = (
            "POST /v1/messages HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        half = len(body) // 2
        chunks = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(head.encode() + chunks + b"0\r\n\r\n")

        status_line = await reader.readline()
        writer.close()

        assert status_line.startswith(b"HTTP/1.1 200")
        assert fake.requests[0].body["messages"][0]["content"] == "chunky"

    async def test_keep_alive__answers_several_requests_on_one_connection(self, fake):
        body = b'{"model":"m","messages":[{"role":"user","content":"a"}]}'
        request = (
            b"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        replies = []
        for _ in range(2):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            replies.append((head.split(b" ")[1], json.loads(await reader.readexactly(length))))
        writer.close()

        assert replies == [(b"200", {"input_tokens": 1})] * 2
        assert len(fake.requests) == 2

    async def test_reset__sends_a_partial_response_then_rst(self, fake):
        fake.script("reset")
        body = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"}]}'
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""

        with pytest.raises(ConnectionResetError):  # an orderly FIN would read b"" instead
            while chunk := await reader.read(65536):
                received += chunk
        writer.close()

        head, _, partial_body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        declared_length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert 0 < len(partial_body) < declared_length

    async def test_bad_http__answers_400_with_request_id(self, fake):
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(b"NONSENSE\r\n\r\n")

        response = await reader.read()
        writer.close()

        assert response.startswith(b"HTTP/1.1 400")
        assert b"request-id: req_" in response

    async def test_unknown_route__answers_404(self, fake, client):
        with pytest.raises(anthropic.NotFoundError):
            await client.get("/v1/models/nope", cast_to=object)

        assert fake.requests[0].fault == "not_found"
