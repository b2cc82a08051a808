"""The JSON API of analyses and cards (django-ninja, async): thin handlers over
``analyses.services`` (writes) and ``analyses.selectors`` (reads).

The site's API (``eidolon_site.api``) authenticates every request (``request.auth`` is the
user) and turns the services' exceptions into statuses: ``InvalidAnalysisRequest`` -> 400 (409
when the analysis has already finished), ``SubmissionRateLimited`` -> 429 with ``Retry-After``,
a missing or foreign object -> 404. Each operation declares the error statuses it can answer;
the site documents their ``{"detail": ...}`` body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Path, Query, Router
from ninja.responses import Status

from analyses.exports import CONTENT_TYPES, export_analysis, export_filename
from analyses.schemas import (
    AnalysisFilterIn,
    AnalysisIn,
    AnalysisOut,
    AnalysisPageOut,
    CardFilterIn,
    CardOut,
    CardPageOut,
    CardStatusIn,
    EventsIn,
    EventsOut,
    ExportIn,
    ObjectId,
    PageIn,
)
from analyses.selectors import (
    analyses_filtered,
    analysis_detail,
    analysis_for,
    analysis_full_detail,
    card_detail,
    card_for,
    cards_filtered,
    events_after,
)
from analyses.services import analysis_cancel, analysis_resume, analysis_submit, card_set_status
from reliability.dbthread import in_db_thread

router = Router()


def _actor(request: HttpRequest) -> str:
    return request.auth.get_username()  # type: ignore[attr-defined]


# Reads run in the process's database thread (reliability.dbthread), one hop a request: they are
# the API's hot path. Each raises the model's DoesNotExist (404) for what the user may not see.


def _page(
    queryset: QuerySet, page: PageIn, serialize: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    window = queryset[page.offset : page.offset + page.limit]
    return {
        "items": [serialize(item) for item in window],
        "count": queryset.count(),
        "limit": page.limit,
        "offset": page.offset,
    }


def _events_page(user, analysis_id: int, query: EventsIn) -> dict[str, Any]:
    analysis = analysis_for(user, analysis_id)
    return {
        "events": events_after(analysis.pk, query.after, limit=query.limit),
        "last_seq": analysis.event_seq,
        "finished": analysis.is_finished,
    }


async def _act_on(request: HttpRequest, analysis_id: int, service: Callable[..., Any]) -> Status:
    """Cancel or resume, as the caller, an analysis the caller may see: 202 and its new state."""
    analysis = await in_db_thread(analysis_for, request.auth, analysis_id)
    await sync_to_async(service)(analysis_id=analysis.pk, actor=_actor(request))
    await analysis.arefresh_from_db()
    return Status(202, analysis_detail(analysis))


def _cards_page(user, analysis_id: int, filters: CardFilterIn) -> dict[str, Any]:
    cards = cards_filtered(
        analysis_for(user, analysis_id),
        severity=filters.severity,
        kind=filters.kind,
        status=filters.status,
        path=filters.file,
    )
    return _page(cards, filters, card_detail)


@router.post(
    "/analyses",
    response={202: AnalysisOut, 400: None, 429: None},
    tags=["analyses"],
    summary="Submit an analysis",
)
async def submit_analysis(request: HttpRequest, response: HttpResponse, payload: AnalysisIn):
    """Queue an analysis of a git URL (or a directory inside ``EIDOLON_SOURCE_ROOTS``); the
    task workers run it. ``Location`` names the new analysis."""
    analysis = await sync_to_async(analysis_submit)(
        user=request.auth,
        source=payload.source,
        ref=payload.ref,
        provider=payload.provider,
        upgrade_fallback_reviews=payload.upgrade_fallback_reviews,
        diff_base=payload.diff_base,
    )
    response["Location"] = reverse("api:analysis", kwargs={"analysis_id": analysis.pk})
    return Status(202, analysis_detail(analysis))


@router.get("/analyses", response=AnalysisPageOut, tags=["analyses"], summary="List analyses")
async def list_analyses(request: HttpRequest, filters: Query[AnalysisFilterIn]):
    """The caller's analyses (everyone's for staff), newest first."""
    analyses = analyses_filtered(request.auth, status=filters.status)
    return await in_db_thread(_page, analyses, filters, analysis_detail)


@router.get(
    "/analyses/{analysis_id}",
    response={200: AnalysisOut, 404: None},
    url_name="analysis",
    tags=["analyses"],
    summary="Get an analysis",
)
async def get_analysis(request: HttpRequest, analysis_id: Path[ObjectId]):
    """Status, counters, percentage, waiting reason, summary and score, and per model the
    units it reviewed, its requests and their cost."""
    return await in_db_thread(analysis_full_detail, request.auth, analysis_id)


@router.post(
    "/analyses/{analysis_id}/cancel",
    response={202: AnalysisOut, 404: None, 409: None},
    tags=["analyses"],
    summary="Cancel an analysis",
)
async def cancel_analysis(request: HttpRequest, analysis_id: Path[ObjectId]):
    """A queued analysis stops at once, a running one within seconds (what is done is kept).
    409 when it has already finished."""
    return await _act_on(request, analysis_id, analysis_cancel)


@router.post(
    "/analyses/{analysis_id}/resume",
    response={202: AnalysisOut, 404: None, 409: None},
    tags=["analyses"],
    summary="Resume an analysis",
)
async def resume_analysis(request: HttpRequest, analysis_id: Path[ObjectId]):
    """Review what a failed, cancelled or timed-out analysis left (finished units are not paid
    for again). 409 when it completed; a queued or running one is handed to the workers again
    (its lease keeps it to one run)."""
    return await _act_on(request, analysis_id, analysis_resume)


@router.get(
    "/analyses/{analysis_id}/events",
    response={200: EventsOut, 404: None},
    url_name="analysis_events",
    tags=["analyses"],
    summary="Events of an analysis",
)
async def analysis_events(
    request: HttpRequest, analysis_id: Path[ObjectId], query: Query[EventsIn]
):
    """The events the WebSocket sends, oldest first, from ``after`` on: poll with the last
    ``seq`` received."""
    return await in_db_thread(_events_page, request.auth, analysis_id, query)


@router.get(
    "/analyses/{analysis_id}/cards",
    response={200: CardPageOut, 404: None},
    tags=["cards"],
    summary="Cards of an analysis",
)
async def list_cards(
    request: HttpRequest, analysis_id: Path[ObjectId], filters: Query[CardFilterIn]
):
    """Findings by file and line, filtered by severity, kind, status and file."""
    return await in_db_thread(_cards_page, request.auth, analysis_id, filters)


def _export(user, analysis_id: int, format: str) -> HttpResponse:
    analysis = analysis_for(user, analysis_id)
    if not analysis.is_finished:
        return HttpResponse(
            json.dumps(
                {
                    "detail": f"analysis {analysis.pk} is still {analysis.status}: export it "
                    "when it has finished"
                }
            ),
            status=409,
            content_type="application/json",
        )
    response = HttpResponse(
        export_analysis(analysis, format=format), content_type=CONTENT_TYPES[format]
    )
    filename = export_filename(analysis, format=format)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@router.get(
    "/analyses/{analysis_id}/export",
    response={200: None, 404: None, 409: None},
    url_name="analysis_export",
    tags=["analyses"],
    summary="Export an analysis",
    openapi_extra={
        "responses": {
            200: {
                "description": "The export, as an attachment",
                "content": {
                    "application/sarif+json": {"schema": {"type": "object"}},
                    "text/markdown": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            }
        }
    },
)
async def export_analysis_route(
    request: HttpRequest, analysis_id: Path[ObjectId], query: Query[ExportIn]
):
    """A finished analysis's findings as SARIF 2.1.0, a Markdown comment or JSON. 409 while
    it is queued or running (an export of part of it would make the rest look fixed)."""
    return await in_db_thread(_export, request.auth, analysis_id, query.format)


@router.get(
    "/cards/{card_id}",
    response={200: CardOut, 404: None},
    tags=["cards"],
    summary="Get a card",
)
async def get_card(request: HttpRequest, card_id: Path[ObjectId]):
    return card_detail(await in_db_thread(card_for, request.auth, card_id))


@router.patch(
    "/cards/{card_id}",
    response={200: CardOut, 404: None},
    tags=["cards"],
    summary="Set a card's status",
)
async def set_card_status(request: HttpRequest, card_id: Path[ObjectId], payload: CardStatusIn):
    """new, acknowledged, dismissed or fixed."""
    card = await in_db_thread(card_for, request.auth, card_id)
    card = await sync_to_async(card_set_status)(
        card=card, status=payload.status, actor=_actor(request)
    )
    return card_detail(card)
