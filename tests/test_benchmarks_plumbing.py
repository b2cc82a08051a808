"""The plumbing of the scale benchmarks (their figures come from running them, never here)."""

from __future__ import annotations

import ast
import asyncio

import pytest

from benchmarks.health_probes import read_response
from benchmarks.scale_workers import peak_rss_mb, requeued_slots, write_projects


def _response_status(raw: bytes) -> tuple[int, bytes]:
    async def read() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw + b"NEXT")
        reader.feed_eof()
        status = await read_response(reader)
        return status, await reader.read()

    return asyncio.run(read())


class TestReadResponse:
    def test_sized_answer__is_read_to_its_end(self):
        raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"
        assert _response_status(raw) == (503, b"NEXT")

    def test_chunked_answer__is_read_to_its_last_chunk(self):
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        assert _response_status(raw) == (200, b"NEXT")

    def test_unsized_answer__is_refused(self):
        with pytest.raises(RuntimeError, match="neither sized nor chunked"):
            _response_status(b"HTTP/1.1 200 OK\r\n\r\nabc")


class TestScaleWorkersPlumbing:
    def test_projects__have_no_two_functions_alike(self, tmp_path):
        projects = write_projects(tmp_path, analyses=3, functions=25)
        bodies = [
            ast.dump(node.body[0])
            for project in projects
            for module in project.glob("*.py")
            for node in ast.parse(module.read_text()).body
            if isinstance(node, ast.FunctionDef)
        ]
        assert len(bodies) == 75
        assert len(set(bodies)) == 75  # nothing could come from the result cache

    def test_peak_rss__of_this_process_is_read(self):
        import os

        assert peak_rss_mb(os.getpid()) > 10

    def test_requeued_slots__none_without_metrics_files(self, tmp_path):
        assert requeued_slots(tmp_path) == {}
