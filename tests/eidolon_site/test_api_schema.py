"""schemathesis against ``/api/openapi.json`` of the real ASGI application, in process:
generated requests (valid and invalid) with the token of a staff user who owns a real analysis
with cards; no response may be a 5xx, and each must have a documented status and match its
documented schema. Derandomized, so a failure reproduces; the examples are bounded to keep it
near a minute.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_support import api_schema_with_data

MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(transactional_db):
    return api_schema_with_data("alice", real_id_probability=0.5)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def node_id_where_schemathesis_looks(request):
    """schemathesis 4.32 reads ``Node._nodeid``, which pytest 9 replaced with structured ids."""
    request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_every_response_as_documented(case):
    case.call_and_validate(checks=CHECKS)
