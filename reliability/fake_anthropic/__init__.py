"""A fault-injecting fake of the Anthropic Messages API, served over loopback.

The real ``anthropic`` SDK talks to it through ``base_url=fake.base_url``. It serves
``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` in the API's wire format and lets
tests, benchmarks and chaos drills choose what each request gets:

* a valid reply: JSON that validates against the request's ``output_config`` schema, a
  ``tool_use`` block for a forced tool, plain text otherwise, or whatever a pluggable
  *responder* returns;
* a fault (``Fault``): an error status with the API's error body and headers, a hang, a
  connection reset mid-response, a trickled reply, or a 200 whose body is not JSON.

It knows nothing of the product: ``analyses`` plugs its review responder in
(``manage.py fake_anthropic --responder review``).

The package, along its seams:

* ``config``: ``Fault``, ``RequestOutcome`` and ``FakeConfig`` with its checks;
* ``schema``: ``instance_for_schema``, instances of JSON schemas;
* ``messages``: Messages requests read and replies built, the responder called;
* ``http``: the HTTP/1.1 it speaks, resets and trickles; ``errors``: the API's error replies;
* ``windows``: its own rate-limit windows and the headers that advertise them;
* ``prompt_cache``: ``cache_control`` honoured: cache writes, then reads within five minutes;
* ``records``: the request log and its counts per model; ``control``: the ``/_fake/`` endpoints;
* ``server``: ``FakeAnthropic``, which plans each request and serves it, in a task or a thread.
"""

from reliability.fake_anthropic.config import (
    FakeConfig,
    Fault,
    RequestOutcome,
    fault_kind,
    parse_latency,
    parse_model_faults,
    parse_rates,
)
from reliability.fake_anthropic.messages import (
    COUNT_TOKENS_PATH,
    DEFAULT_REPLY_TEXT,
    MESSAGES_PATH,
    Responder,
    ResponderResult,
    prompt_text,
)
from reliability.fake_anthropic.records import RequestRecord, counts_by_model
from reliability.fake_anthropic.schema import SchemaError, instance_for_schema
from reliability.fake_anthropic.server import FakeAnthropic

__all__ = [
    "COUNT_TOKENS_PATH",
    "DEFAULT_REPLY_TEXT",
    "MESSAGES_PATH",
    "FakeAnthropic",
    "FakeConfig",
    "Fault",
    "RequestOutcome",
    "RequestRecord",
    "Responder",
    "ResponderResult",
    "SchemaError",
    "counts_by_model",
    "fault_kind",
    "instance_for_schema",
    "parse_latency",
    "parse_model_faults",
    "parse_rates",
    "prompt_text",
]
