"""Reading analyses: what pages, the API and WebSocket clients are shown, and to whom.

A user sees their own analyses and their cards; staff see everyone's. Anything else is "not
found" (never "forbidden"), so ids reveal nothing about other users' work.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import BigIntegerField, Count, Q, QuerySet, Sum
from django.urls import reverse

from analyses.events import event_dict
from analyses.models import (
    Analysis,
    AnalysisEvent,
    AnalysisStatus,
    Card,
    CodeUnit,
    LLMCall,
    UnitStatus,
)
from reliability.sql import Param, prepared_instances


def _visible_to(user: AbstractBaseUser | AnonymousUser, rows: QuerySet, owner: str) -> QuerySet:
    if not user.is_authenticated:
        return rows.none()
    if user.is_staff:
        return rows
    return rows.filter(**{owner: user})


def may_see(user: AbstractBaseUser | AnonymousUser, *, owner_id: int | None) -> bool:
    """Whether ``user`` may see what the user ``owner_id`` owns: ``_visible_to``'s rule, for
    one row already read."""
    return user.is_authenticated and (user.is_staff or owner_id == user.pk)


def analyses_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Analysis]:
    return _visible_to(user, Analysis.objects.all(), "created_by")


def cards_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Card]:
    return _visible_to(user, Card.objects.all(), "analysis__created_by")


def analysis_for(user: AbstractBaseUser | AnonymousUser, analysis_id: int) -> Analysis:
    """The analysis ``user`` may see, or ``Analysis.DoesNotExist``: ``analyses_visible_to``
    for one id, with statements compiled once (every API request for an analysis reads one)."""
    return _visible_one(Analysis, "created_by", user, analysis_id)


def card_for(user: AbstractBaseUser | AnonymousUser, card_id: int) -> Card:
    """The card ``user`` may see, or ``Card.DoesNotExist`` (as ``cards_visible_to``)."""
    return _visible_one(Card, "analysis__created_by", user, card_id)


def _visible_one(model, owner_path: str, user, pk: int):
    if not user.is_authenticated:
        raise model.DoesNotExist(f"{model.__name__} {pk} not found")
    owner = {} if user.is_staff else {owner_path: Param("owner", BigIntegerField())}
    rows = prepared_instances(
        ("visible_one", bool(owner)),
        model=model,
        queryset=lambda: model.objects.filter(pk=Param("pk", BigIntegerField()), **owner),
        params={"pk": pk, "owner": user.pk},
    )
    if not rows:
        raise model.DoesNotExist(f"{model.__name__} {pk} not found")
    return rows[0]


def analyses_filtered(
    user: AbstractBaseUser | AnonymousUser, *, status: str | None = None
) -> QuerySet[Analysis]:
    """The analyses ``user`` may see, newest first, optionally only those in ``status``."""
    analyses = analyses_visible_to(user)
    return analyses.filter(status=status) if status else analyses


def cards_filtered(
    analysis: Analysis,
    *,
    severity: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    path: str | None = None,
) -> QuerySet[Card]:
    """An analysis's cards by file and line, optionally narrowed by each criterion given."""
    criteria = {"severity": severity, "kind": kind, "status": status, "path": path}
    return Card.objects.filter(
        analysis=analysis, **{name: value for name, value in criteria.items() if value}
    )


def events_after(analysis_id: int, seq: int, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Stored events after ``seq``, oldest first: how a reconnecting client catches up."""
    return [
        event_dict(event)
        for event in AnalysisEvent.objects.filter(analysis_id=analysis_id, seq__gt=seq).order_by(
            "seq"
        )[:limit]
    ]


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def analysis_cost(analysis: Analysis) -> Decimal | None:
    """What the analysis's calls cost in US dollars; None when its calls had no price (the
    model was not in the price table). Queries only when the counters cannot tell (calls made,
    nothing spent), so not for async callers: ``analysis_detail`` gives the sum as it stands."""
    if analysis.cost_usd or not analysis.llm_requests:
        return analysis.cost_usd
    unpriced = LLMCall.objects.filter(analysis_id=analysis.pk, cost_usd__isnull=True).exists()
    return None if unpriced else analysis.cost_usd


def model_role(model: str, chain: list[str]) -> str:
    """``primary``, ``fallback 1``... by the model's place in the analysis's chain; ``rules`` for
    the offline reviewer; ``other`` for a model no longer in it (a cached review, say)."""
    if model in chain:
        place = chain.index(model)
        return "primary" if place == 0 else f"fallback {place}"
    return "rules" if model == "rules" else "other"


def analysis_model_usage(analysis: Analysis) -> list[dict[str, Any]]:
    """Per model, what it did for ``analysis``: the units it reviewed (and of those, the ones
    served from the cache), the requests sent to it (failed ones too: the primary's overloads
    while it was failing are part of the price of falling back), their tokens and their cost
    (None when some call had no price). The chain's models first, in order, then the others.
    Two grouped queries, one over ``CodeUnit`` and one over ``LLMCall``; none for a finished
    analysis, which keeps what they said when it finished (``Analysis.model_usage``)."""
    if analysis.model_usage is not None and analysis.is_finished:
        return analysis.model_usage
    if analysis.status == AnalysisStatus.QUEUED and not analysis.runs:
        return []  # no worker has started it: nothing reviewed, nothing asked
    units = {
        row["model"]: row
        for row in CodeUnit.objects.filter(analysis_id=analysis.pk)
        .exclude(model="")
        .order_by()
        .values("model")
        .annotate(
            reviewed=Count("id", filter=Q(status=UnitStatus.ANALYZED)),
            cached=Count("id", filter=Q(status=UnitStatus.CACHED)),
        )
    }
    calls = {
        row["model"]: row
        for row in LLMCall.objects.filter(analysis_id=analysis.pk)
        .order_by()
        .values("model")
        .annotate(
            requests=Count("id"),
            failed_requests=Count("id", filter=~Q(status="ok")),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost_usd"),
            unpriced=Count("id", filter=Q(cost_usd__isnull=True)),
        )
    }
    chain = list(analysis.model_chain or [])
    used = {*units, *calls}
    order = [m for m in chain if m in used] + sorted(used - set(chain))
    usage = []
    for model in order:
        unit_row, call_row = units.get(model, {}), calls.get(model, {})
        cost = call_row.get("cost") or Decimal(0)
        usage.append(
            {
                "model": model,
                "role": model_role(model, chain),
                "units": unit_row.get("reviewed", 0) + unit_row.get("cached", 0),
                "cached": unit_row.get("cached", 0),
                "requests": call_row.get("requests", 0),
                "failed_requests": call_row.get("failed_requests", 0),
                "input_tokens": call_row.get("input_tokens") or 0,
                "output_tokens": call_row.get("output_tokens") or 0,
                "cost_usd": None if call_row.get("unpriced") else float(cost),
            }
        )
    return usage


def analysis_detail_with_models(analysis: Analysis) -> dict[str, Any]:
    """``analysis_detail`` and its ``models`` (their usage): one analysis as the API's detail
    and the JSON export give it (two queries more than ``analysis_detail`` while it runs)."""
    return {**analysis_detail(analysis), "models": analysis_model_usage(analysis)}


def analysis_full_detail(user: AbstractBaseUser | AnonymousUser, analysis_id: int) -> dict:
    """``analysis_detail_with_models`` of the analysis ``user`` may see."""
    return analysis_detail_with_models(analysis_for(user, analysis_id))


def analysis_detail(analysis: Analysis) -> dict[str, Any]:
    """An analysis as clients see it: the API's answer and the WebSocket's snapshot."""
    return {
        "id": analysis.pk,
        "source": analysis.source,
        "source_kind": analysis.source_kind,
        "ref": analysis.ref,
        "commit_sha": analysis.commit_sha,
        "diff_base": analysis.diff_base,
        "functions_selected": analysis.functions_selected,
        "diff_files": analysis.diff_files,
        "provider": analysis.provider,
        "model": analysis.model,
        "status": analysis.status,
        "status_reason": analysis.status_reason,
        "waiting_reason": analysis.waiting_reason,
        "finished": analysis.is_finished,
        **analysis.progress_counts(),
        "input_tokens": analysis.input_tokens,
        "output_tokens": analysis.output_tokens,
        "cost_usd": float(analysis.cost_usd),  # read by async views: no query
        "health_score": analysis.health_score,
        "summary": analysis.summary,
        "last_seq": analysis.event_seq,
        "created_at": _iso(analysis.created_at),
        "started_at": _iso(analysis.started_at),
        "finished_at": _iso(analysis.finished_at),
        "url": reverse("analyses:detail", kwargs={"analysis_id": analysis.pk}),
        "events_url": reverse("api:analysis_events", kwargs={"analysis_id": analysis.pk}),
        "websocket_url": f"/ws/analyses/{analysis.pk}/",
    }


# A card's fields as clients see them, in this order (``id`` and ``created_at`` around them).
CARD_FIELDS = (
    "analysis_id",
    "kind",
    "severity",
    "title",
    "explanation",
    "fix",
    "path",
    "line_start",
    "line_end",
    "excerpt",
    "excerpt_start",
    "confidence",
    "source",
    "rule",
    "adjustment",
    "status",
    "model",
)


def card_detail(card: Card) -> dict[str, Any]:
    """A card as clients see it (model-written text as data, never markup)."""
    return {
        "id": card.pk,
        **{field: getattr(card, field) for field in CARD_FIELDS},
        "created_at": _iso(card.created_at),
    }


def recent_activity(analysis_id: int, *, up_to: int, limit: int = 100) -> list[dict[str, Any]]:
    """The latest events up to ``up_to`` worth a line in an activity log (progress ticks are
    not), newest first."""
    events = (
        AnalysisEvent.objects.filter(analysis_id=analysis_id, seq__lte=up_to)
        .exclude(type="analysis.progress")
        .order_by("-seq")[:limit]
    )
    return [event_dict(event) for event in events]


def status_counts(analyses: QuerySet[Analysis]) -> dict[str, int]:
    """How many of ``analyses`` are in each status (every status present, zeros included)."""
    counted = dict(
        analyses.order_by()
        .values_list("status")
        .annotate(count=Count("id"))
        .values_list("status", "count")
    )
    return {status: counted.get(status, 0) for status in AnalysisStatus.values}
