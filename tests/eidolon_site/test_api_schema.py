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

from analyses.models import AnalysisStatus
from eidolon_site.asgi import application
from reliability.breaker import get_or_create_breaker
from reliability.models import RateLimitBudget
from tests.api_support import GIT_SOURCE, analysis_with_cards, caller

MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(transactional_db):
    owner = caller("alice", staff=True, permissions=("change_circuitbreaker", "operate_controls"))
    # One to cancel, one to resume, one finished: every status an operation can answer.
    analyses = [
        analysis_with_cards(owner=owner.user, status=status)
        for status in (AnalysisStatus.QUEUED, AnalysisStatus.FAILED, AnalysisStatus.COMPLETED)
    ]
    cards = [card.pk for analysis in analyses for card in analysis.cards.all()]
    for name in ("anthropic", "git"):
        get_or_create_breaker(name)
    # Enough submissions that valid ones are accepted (each stores an analysis and a task).
    RateLimitBudget.objects.create(
        name=f"submissions:{owner.user.pk}", requests_per_window=10**6, requests_per_day=10**6
    )
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {owner.token}"},
            "dictionaries": {
                "analyses": {"values": [analysis.pk for analysis in analyses]},
                "cards": {"values": cards},
                "breakers": {"values": ["anthropic", "git"]},
                "sources": {"values": [GIT_SOURCE, "git@git.example.com:team/project.git"]},
            },
            # Half the ids are real ones, so the success paths are exercised too.
            "parameters": {
                "path.analysis_id": {"dictionary": "analyses", "probability": 0.5},
                "path.card_id": {"dictionary": "cards", "probability": 0.5},
                "path.name": {"dictionary": "breakers", "probability": 0.5},
                "body.source": {"dictionary": "sources", "probability": 0.5},
            },
        }
    )
    return schemathesis.openapi.from_asgi("/api/openapi.json", application, config=config)


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
