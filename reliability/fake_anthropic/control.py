"""The control endpoints that steer a fake running in another process (``manage.py
fake_anthropic``) over HTTP, through the same methods a test calls in-process:

``GET /_fake/log[?since=N]``, ``GET /_fake/stats`` (requests per model per outcome),
``GET``/``POST /_fake/config``, ``POST /_fake/script`` and
``POST /_fake/reset``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from reliability.fake_anthropic.errors import plain_error
from reliability.fake_anthropic.http import HttpRequest, HttpResponse, json_response
from reliability.fake_anthropic.messages import new_id
from reliability.fake_anthropic.records import counts_by_model

if TYPE_CHECKING:
    from reliability.fake_anthropic.server import FakeAnthropic

_PREFIX = "/_fake/"


def is_control(request: HttpRequest) -> bool:
    return request.path.startswith(_PREFIX)


def response(fake: FakeAnthropic, request: HttpRequest) -> HttpResponse:
    request_id = new_id("req_")
    try:
        payload = _control(fake, request)
    except ValueError as exc:
        return plain_error(
            400, error_type="invalid_request_error", message=str(exc), request_id=request_id
        )
    if payload is None:
        return plain_error(
            404,
            error_type="not_found_error",
            message=f"no control endpoint {request.method} {request.path}",
            request_id=request_id,
        )
    return json_response(200, payload, headers={"request-id": request_id})


def _control(fake: FakeAnthropic, request: HttpRequest) -> object | None:
    match request.method, request.path.removeprefix(_PREFIX):
        case "GET", "log":
            since = int(request.query.get("since", ["0"])[0])
            return [record.to_dict() for record in fake.requests[max(since, 0) :]]
        case "GET", "stats":
            records = fake.requests
            return {"requests": len(records), "by_model": counts_by_model(records)}
        case "GET", "config":
            return fake.config.to_dict()
        case "POST", "config":
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the config body must be a JSON object")
            fake.configure(**changes)
            return fake.config.to_dict()
        case "POST", "script":
            kinds = json.loads(request.body or b"[]")
            if not isinstance(kinds, list):
                raise ValueError("the script body must be a JSON list of fault kinds")
            fake.script(*kinds)
            return {"pending": fake.pending_script}
        case "POST", "reset":
            fake.reset()
            return {"reset": True}
    return None
