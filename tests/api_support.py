"""What the JSON API tests share: callers with real tokens, and analyses with cards and events
written through the models (as the orchestrator leaves them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import Permission, User
from django.http import HttpResponse
from django.test import AsyncClient

from analyses.events import persist_events
from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit
from eidolon_site.accounts import token_create

# (path, severity, kind) of each card analysis_with_cards writes, in file and line order.
DEFAULT_CARDS = (
    ("app/models.py", "high", "bug"),
    ("app/models.py", "low", "smell"),
    ("app/views.py", "medium", "security"),
    ("app/views.py", "high", "security"),
    ("lib/util.py", "low", "docs"),
)
GIT_SOURCE = "https://git.example.com/team/project.git"


@dataclass(frozen=True)
class Caller:
    """Someone calling the API: a user with a personal token, or nobody (``token=None``)."""

    name: str
    user: User | None = None
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, url: str, body: object = None) -> HttpResponse:
        client = AsyncClient()
        send = getattr(client, method.lower())
        if body is None:
            return await send(url, headers=self.headers)
        return await send(
            url, data=json.dumps(body), content_type="application/json", headers=self.headers
        )


ANONYMOUS = Caller("anonymous")


def caller(username: str, *, staff: bool = False, permissions: Sequence[str] = ()) -> Caller:
    """A new user with one personal token."""
    user = User.objects.create_user(username, is_staff=staff)  # no password: none to hash
    if permissions:
        user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    _, raw = token_create(user=user, name=f"{username}'s tests")
    return Caller(username, user, raw)


def analysis_with_cards(
    *,
    owner: User | None,
    cards: Sequence[tuple[str, str, str]] = DEFAULT_CARDS,
    status: str = AnalysisStatus.COMPLETED,
    events: int = 3,
) -> Analysis:
    """An analysis of ``owner`` with ``cards`` and ``events`` stored events."""
    analysis = Analysis.objects.create(
        source=GIT_SOURCE,
        source_kind="git",
        provider="static",
        model="rules",
        status=status,
        created_by=owner,
        functions_total=len(cards),
        functions_analyzed=len(cards) if status == AnalysisStatus.COMPLETED else 0,
        cards_count=len(cards),
    )
    for index, (path, severity, kind) in enumerate(cards):
        line = 10 * (index + 1)
        unit = CodeUnit.objects.create(
            analysis=analysis,
            unit_id=f"{path}::function_{index}",
            kind="function",
            qualname=f"function_{index}",
            path=path,
            lineno=line,
            end_lineno=line + 5,
            content_hash=f"{index:064d}",
            reviewable=True,
        )
        Card.objects.create(
            analysis=analysis,
            unit=unit,
            kind=kind,
            severity=severity,
            title=f"{kind} in function_{index}",
            explanation="<script>alert(1)</script> is data, not markup",
            path=path,
            line_start=line + 1,
            line_end=line + 2,
            confidence=0.9,
            source="static",
            excerpt=f"def function_{index}():\n    pass\n",
            excerpt_start=line,
        )
    persist_events(
        analysis.pk,
        [("analysis.progress", {"done": step, "total": events}) for step in range(1, events + 1)],
    )
    analysis.refresh_from_db()
    return analysis


def api_schema_with_data(username: str, *, real_id_probability: float):
    """schemathesis's view of ``/api/openapi.json`` on the real ASGI application, called with the
    token of a staff operator who owns analyses in three states (one to cancel, one to resume,
    one finished) with cards; path ids and sources are real ones with ``real_id_probability``,
    so the success paths are exercised too."""
    import schemathesis

    from eidolon_site.asgi import application
    from reliability.breaker import get_or_create_breaker
    from reliability.models import RateLimitBudget

    owner = caller(username, staff=True, permissions=("change_circuitbreaker", "operate_controls"))
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
    real = {"probability": real_id_probability}
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {owner.token}"},
            "dictionaries": {
                "analyses": {"values": [analysis.pk for analysis in analyses]},
                "cards": {"values": cards},
                "breakers": {"values": ["anthropic", "git"]},
                "sources": {"values": [GIT_SOURCE, "git@git.example.com:team/project.git"]},
            },
            "parameters": {
                "path.analysis_id": {"dictionary": "analyses", **real},
                "path.card_id": {"dictionary": "cards", **real},
                "path.name": {"dictionary": "breakers", **real},
                "body.source": {"dictionary": "sources", **real},
            },
        }
    )
    return schemathesis.openapi.from_asgi("/api/openapi.json", application, config=config)
