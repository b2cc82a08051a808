"""Structured logging as the processes really print it: JSON lines, request ids, no secrets."""

from __future__ import annotations

import json
import time

import pytest
from django_tasks import TaskResultStatus

from eidolon_site.middleware import request_id_from
from eidolon_site.tasks import ping
from reliability.redaction import REDACTED, redact_text
from tests.processes import (
    ManagedProcess,
    http_get,
    start_daphne,
    subprocess_environment,
)

REQUIRED_KEYS = {"timestamp", "level", "event", "logger"}


def assert_all_json(process: ManagedProcess) -> list[dict]:
    lines = process.output()
    assert lines, f"{process.name} printed nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{process.name} printed a line that is not JSON: {line!r}")
        missing = REQUIRED_KEYS - record.keys()
        assert not missing, f"{process.name} line lacks {missing}: {line!r}"
        records.append(record)
    return records


@pytest.mark.django_db(transaction=True)
class TestJsonLogsOfRealProcesses:
    def test_every_line_is_json_with_request_id__web_and_worker(self):
        env = subprocess_environment()
        web, base = start_daphne(env)
        worker = ManagedProcess.manage(
            "db_worker", "--no-reload", "--interval", "0.2", "--no-startup-delay", env=env
        )
        try:
            status, headers = http_get(f"{base}/", headers={"X-Request-ID": "trace-42.a"})
            _, generated_headers = http_get(f"{base}/admin/login/")
            _, forged_headers = http_get(f"{base}/", headers={"X-Request-ID": "x" * 300})
            result = ping.enqueue("from-the-test")
            deadline = time.monotonic() + 20
            while result.status != TaskResultStatus.SUCCESSFUL and time.monotonic() < deadline:
                time.sleep(0.1)
                result.refresh()
        finally:
            web.stop()
            worker.stop()

        assert status == 200
        assert headers["X-Request-ID"] == "trace-42.a"
        generated = generated_headers["X-Request-ID"]
        assert len(generated) == 32 and generated != "trace-42.a"
        assert forged_headers["X-Request-ID"] != "x" * 300
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value["pong"] == "from-the-test"

        web_records = assert_all_json(web)
        worker_records = assert_all_json(worker)
        by_request = {
            (record.get("request"), record["event"]): record.get("request_id")
            for record in web_records
            if record["event"] in {"request_started", "request_finished"}
        }
        assert by_request[("GET /", "request_started")] in {
            "trace-42.a",
            forged_headers["X-Request-ID"],
        }
        assert by_request[("GET /admin/login/", "request_started")] == generated
        assert by_request[("GET /admin/login/", "request_finished")] == generated
        trace_lines = [r for r in web_records if r.get("request_id") == "trace-42.a"]
        assert {r["event"] for r in trace_lines} >= {"request_started", "request_finished"}
        assert any(r["logger"].startswith("daphne") for r in web_records)
        assert any(r["event"] == "ping_task_ran" for r in worker_records)


SECRET_API_KEY = "sk-ant-api03-TESTSECRET-abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_BEARER = "eyJhbGciOiJIUzI1NiJ9.secretbearerpayload"
SECRET_PASSWORD = "correct-horse-battery-staple-77"

LOG_THROUGH_EVERY_PATH = f"""
import logging, structlog
log = structlog.get_logger("secrets.test")
std = logging.getLogger("secrets.stdlib")
log.debug("debug_event", api_key={SECRET_API_KEY!r})
log.info("kwargs_event", api_key={SECRET_API_KEY!r}, password={SECRET_PASSWORD!r},
         headers={{"Authorization": "Bearer {SECRET_BEARER}", "Cookie": "sessionid=abc123456"}},
         input_tokens=120)
log.info("text_event",
         note="calling with key {SECRET_API_KEY} and Authorization: Bearer {SECRET_BEARER}")
log.warning("url_event", url="postgres://eidolon:{SECRET_PASSWORD}@db:5432/eidolon")
try:
    raise RuntimeError("auth failed for x-api-key={SECRET_API_KEY} password={SECRET_PASSWORD}")
except RuntimeError:
    log.exception("structlog_exception")
    std.exception("stdlib exception with %s", "Authorization: Bearer {SECRET_BEARER}")
std.warning("stdlib args %s %s", {SECRET_API_KEY!r}, "password={SECRET_PASSWORD}")
std.info("stdlib extra", extra={{"token": "{SECRET_BEARER}"}})
"""


class TestRedaction:
    @pytest.mark.parametrize("log_format", ["json", "console"])
    def test_secrets_never_reach_output__every_logging_path(self, log_format):
        env = subprocess_environment(
            ANTHROPIC_API_KEY=SECRET_API_KEY,
            EIDOLON_LOG_FORMAT=log_format,
            EIDOLON_LOG_LEVEL="DEBUG",
        )
        env.pop("DATABASE_URL")  # the shell needs no database; keep it off the test database
        process = ManagedProcess.manage("shell", "-c", LOG_THROUGH_EVERY_PATH, env=env)
        assert process.process.wait(timeout=60) == 0, "\n".join(process.output())
        process.stop()
        output = "\n".join(process.output())

        for event in (
            "debug_event",
            "kwargs_event",
            "text_event",
            "url_event",
            "structlog_exception",
            "stdlib exception",
            "stdlib args",
            "stdlib extra",
        ):
            assert event in output, f"{event} was not logged at all:\n{output}"
        assert "input_tokens" in output and "120" in output  # counts are not secrets
        for secret in (SECRET_API_KEY, SECRET_BEARER, SECRET_PASSWORD, "abc123456", "TESTSECRET"):
            assert secret not in output, f"{secret!r} leaked:\n{output}"
        assert REDACTED in output

    def test_redact_text__leaves_ordinary_text_alone(self):
        text = "analysed 12 functions, input_tokens=500 output_tokens=80 in 3.2 s"
        assert redact_text(text, []) == text


class TestRequestId:
    @pytest.mark.parametrize(
        "incoming",
        ["0f8fad5b-d9cb-469f-a165-70867728950e", "trace-42.a", "01HZX3J5Q7Z8", "svc:1234"],
    )
    def test_sane_incoming_id_is_kept(self, incoming):
        assert request_id_from(incoming) == incoming

    @pytest.mark.parametrize(
        "incoming", [None, "", "x" * 129, "has space", "new\nline", "<script>", "-leading-dash"]
    )
    def test_missing_or_unsafe_id_is_replaced__with_a_fresh_one(self, incoming):
        replaced = request_id_from(incoming)
        assert replaced != incoming and len(replaced) == 32
        assert request_id_from(incoming) != replaced

    @pytest.mark.django_db  # the home page reads the status strip
    def test_response_carries_the_request_id__test_client(self, client):
        response = client.get("/", HTTP_X_REQUEST_ID="abc-123")
        assert response["X-Request-ID"] == "abc-123"
