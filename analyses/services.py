"""Creating, cancelling and resuming analyses: what the web, the API, the admin and the terminal
all call."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from django.conf import settings
from django.db import transaction

from analyses.changes import resolve_base
from analyses.destinations import check_destination
from analyses.git import configured_host_policy
from analyses.models import (
    FINISHED_STATUSES,
    Analysis,
    AnalysisStatus,
    Card,
    CardStatus,
    CodeUnit,
    UnitStatus,
)
from analyses.parsing import FUNCTION_KINDS
from analyses.revisions import ChangeError, parse_base
from analyses.sources import (
    SourceError,
    SourceSpec,
    parse_source_spec,
    resolve_local_directory,
)
from reliability import ratelimit
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.exceptions import BudgetExhaustedError

logger = structlog.get_logger(__name__)

PROVIDERS = ("anthropic", "static")
MAX_CONCURRENCY = 64
# A submission takes the user's next slot if it is free within this many seconds ("now": the
# budget's clock reads a little later than ours, and a deadline of exactly now would refuse all).
SUBMISSION_SLACK_SECONDS = 1.0


class SubmissionRateLimited(Exception):
    """The user submitted too many analyses; ``retry_after`` seconds until the next may go."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidAnalysisRequest(ValueError):
    """Input a user can fix: ``message`` says what and how; ``field`` which input it is about
    (a form shows it there)."""

    def __init__(self, message: str, *, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def field(self) -> str:
        return {
            "bad_ref": "ref",
            "provider": "provider",
            "concurrency": "concurrency",
            "diff_base": "diff_base",
        }.get(self.code, "source")


def default_provider() -> str:
    """Claude when an API key is configured, the offline rules otherwise."""
    return "anthropic" if settings.ANTHROPIC_API_KEY else "static"


@dataclass(frozen=True)
class ValidRequest:
    """What an analysis request asks for, checked: ``analysis_request_check``'s answer."""

    spec: SourceSpec
    provider: str
    concurrency: int
    allow_any_path: bool
    diff_base: str = ""


def analysis_request_check(
    *,
    source: str,
    ref: str | None = None,
    provider: str | None = None,
    concurrency: int | None = None,
    allow_any_path: bool = False,
    diff_base: str | None = None,
) -> ValidRequest:
    """The request, checked (nothing is stored); raises ``InvalidAnalysisRequest`` with a
    message for the user."""
    try:
        spec = parse_source_spec(
            source, ref=ref or None, allow_insecure_http=settings.EIDOLON_GIT_ALLOW_INSECURE_HTTP
        )
        if spec.kind == "local":
            roots = None if allow_any_path else settings.EIDOLON_SOURCE_ROOTS
            directory = resolve_local_directory(spec.location, allowed_roots=roots)
        else:
            check_destination(spec.location, policy=configured_host_policy(), at_clone=False)
    except SourceError as error:
        raise InvalidAnalysisRequest(error.message, code=error.code) from None
    try:  # a local work tree's base is looked up now; a clone's when it is fetched
        if diff_base:
            parse_base(diff_base)
        if diff_base and spec.kind == "local":
            resolve_base(directory, diff_base, allowed_roots=roots)
    except ChangeError as error:
        raise InvalidAnalysisRequest(error.message, code="diff_base") from None
    provider = provider or default_provider()
    if provider not in PROVIDERS:
        raise InvalidAnalysisRequest(
            f"unknown provider {provider!r}: choose {' or '.join(PROVIDERS)}", code="provider"
        )
    if provider == "anthropic" and not settings.ANTHROPIC_API_KEY:
        raise InvalidAnalysisRequest(
            "the anthropic provider needs ANTHROPIC_API_KEY (or use --provider static)",
            code="provider",
        )
    if concurrency is None:
        concurrency = settings.EIDOLON_ANALYSIS_CONCURRENCY
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidAnalysisRequest(
            f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}",
            code="concurrency",
        )
    return ValidRequest(
        spec=spec,
        provider=provider,
        concurrency=concurrency,
        allow_any_path=allow_any_path,
        diff_base=diff_base or "",
    )


def analysis_create(
    *,
    source: str,
    ref: str | None = None,
    provider: str | None = None,
    concurrency: int | None = None,
    allow_any_path: bool = False,
    fallback_to_static: bool | None = None,
    upgrade_fallback_reviews: bool = False,
    max_duration: float | None = None,
    created_by=None,
    diff_base: str | None = None,
) -> Analysis:
    """Validate the request and store a queued analysis (nothing is fetched or parsed yet).
    ``diff_base``: a change review, of what changed since that revision.

    Raises ``InvalidAnalysisRequest`` with a message for the user.
    """
    request = analysis_request_check(
        source=source,
        ref=ref,
        provider=provider,
        concurrency=concurrency,
        allow_any_path=allow_any_path,
        diff_base=diff_base,
    )
    return _store(
        request,
        fallback_to_static=fallback_to_static,
        upgrade_fallback_reviews=upgrade_fallback_reviews,
        max_duration=max_duration,
        created_by=created_by,
    )


def _store(
    request: ValidRequest,
    *,
    fallback_to_static: bool | None = None,
    upgrade_fallback_reviews: bool = False,
    max_duration: float | None = None,
    created_by=None,
) -> Analysis:
    spec, provider = request.spec, request.provider
    analysis = Analysis.objects.create(
        source=spec.display,
        source_kind=spec.kind,
        ref=spec.ref or "",
        base_commit=_previous_commit(spec.display) if spec.kind == "git" else "",
        allow_any_path=request.allow_any_path,
        diff_base=request.diff_base,
        provider=provider,
        model=settings.EIDOLON_AI_MODEL if provider == "anthropic" else "rules",
        model_chain=list(settings.EIDOLON_AI_MODELS) if provider == "anthropic" else [],
        upgrade_fallback_reviews=upgrade_fallback_reviews,
        concurrency=request.concurrency,
        fallback_to_static=(
            settings.EIDOLON_AI_FALLBACK_STATIC
            if fallback_to_static is None
            else fallback_to_static
        ),
        max_duration=max_duration or settings.EIDOLON_ANALYSIS_MAX_DURATION,
        created_by=created_by,
    )
    logger.info(
        "analysis_created", analysis_id=analysis.pk, source=analysis.source, provider=provider
    )
    return analysis


def submission_admit(*, user, clock: Clock = SYSTEM_CLOCK) -> None:
    """Count one submission against the user's budget (``submissions:<user id>``, shared by
    every process), or raise ``SubmissionRateLimited`` saying when the next may go."""
    now = clock.now()
    try:
        ratelimit.reserve(
            f"submissions:{user.pk}",
            ratelimit.Ask(0, 0, deadline=now + SUBMISSION_SLACK_SECONDS),
            clock=clock,
        )
    except BudgetExhaustedError as error:
        retry_after = max(1.0, (error.available_at or now + 60.0) - now)
        raise SubmissionRateLimited(
            f"too many analyses submitted: try again in {math.ceil(retry_after)} s",
            retry_after=retry_after,
        ) from None


def analysis_submit(
    *,
    user,
    source: str,
    ref: str | None = None,
    provider: str | None = None,
    upgrade_fallback_reviews: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    diff_base: str | None = None,
) -> Analysis:
    """A user's submission (web form or API): checked first (a typo costs no submission), then
    counted against their budget, then stored and handed to the workers together (an analysis
    is never stored without its task).

    Raises ``InvalidAnalysisRequest`` or ``SubmissionRateLimited``; only directories inside
    ``EIDOLON_SOURCE_ROOTS`` may be analysed.
    """
    request = analysis_request_check(source=source, ref=ref, provider=provider, diff_base=diff_base)
    submission_admit(user=user, clock=clock)
    with transaction.atomic():
        analysis = _store(
            request, upgrade_fallback_reviews=upgrade_fallback_reviews, created_by=user
        )
        analysis_enqueue(analysis)
    return analysis


def _previous_commit(source: str) -> str:
    """Incremental runs: the commit of the last finished analysis of the same repository."""
    return (
        Analysis.objects.filter(source=source, source_kind="git")
        .exclude(commit_sha="")
        .order_by("-created_at")
        .values_list("commit_sha", flat=True)
        .first()
        or ""
    )


def analysis_enqueue(analysis: Analysis):
    """Hand the analysis to the task workers."""
    from analyses.tasks import run_analysis_task

    return run_analysis_task.enqueue(analysis.pk)


def analysis_cancel(*, analysis_id: int, actor: str) -> Analysis:
    """Stop an analysis: a queued one at once; a running one within seconds (its worker sees
    the request, cancels in-flight calls and keeps what is done)."""
    with transaction.atomic():
        analysis = Analysis.objects.select_for_update().get(pk=analysis_id)
        if analysis.is_finished:
            raise InvalidAnalysisRequest(
                f"analysis #{analysis_id} has already finished ({analysis.status})",
                code="finished",
            )
        analysis.cancel_requested = True
        if analysis.status == AnalysisStatus.QUEUED and not analysis.lease_owner:
            analysis.status = AnalysisStatus.CANCELLED
            analysis.status_reason = f"cancelled by {actor} before it started"
            analysis.finished_at = datetime.now(tz=UTC)
        analysis.save(update_fields=["cancel_requested", "status", "status_reason", "finished_at"])
    logger.info("analysis_cancel_requested", analysis_id=analysis_id, actor=actor)
    return analysis


def analysis_resume(*, analysis_id: int, actor: str):
    """Run an analysis again from where it stopped: its pending, skipped and failed units (the
    reviewed and cached ones are kept and not paid for again)."""
    with transaction.atomic():
        analysis = Analysis.objects.select_for_update().get(pk=analysis_id)
        if analysis.status in FINISHED_STATUSES and analysis.status != AnalysisStatus.COMPLETED:
            again = CodeUnit.objects.filter(
                analysis=analysis,
                reviewable=True,
                status__in=(UnitStatus.SKIPPED, UnitStatus.FAILED),
            )
            failed_functions = again.filter(status=UnitStatus.FAILED, kind__in=FUNCTION_KINDS)
            analysis.functions_failed -= failed_functions.count()
            again.update(status=UnitStatus.PENDING, failure_reason="", finished_at=None)
            analysis.status = AnalysisStatus.QUEUED
            analysis.cancel_requested = False
            analysis.deadline_at = None
            analysis.finished_at = None
            analysis.status_reason = f"resumed by {actor}"
            analysis.save()
        elif analysis.status == AnalysisStatus.COMPLETED:
            raise InvalidAnalysisRequest(
                f"analysis #{analysis_id} completed: nothing to resume", code="finished"
            )
    logger.info("analysis_resume_requested", analysis_id=analysis_id, actor=actor)
    return analysis_enqueue(analysis)


def resume_stale_analyses(*, now: datetime | None = None) -> list[int]:
    """Queue again the running analyses whose lease expired (their worker died or stopped).

    Each is moved back to queued by one conditional UPDATE, so however many workers sweep at
    once, it is enqueued once; the next worker to claim it resumes the pending units.
    """
    from analyses.tasks import run_analysis_task

    now = now or datetime.now(tz=UTC)
    expired = Analysis.objects.filter(status=AnalysisStatus.RUNNING, lease_expires_at__lt=now)
    requeued = []
    for analysis_id in expired.values_list("pk", flat=True):
        if expired.filter(pk=analysis_id).update(
            status=AnalysisStatus.QUEUED, lease_owner="", lease_expires_at=None
        ):
            run_analysis_task.enqueue(analysis_id)
            requeued.append(analysis_id)
            logger.warning("analysis_lease_expired", analysis_id=analysis_id)
    return requeued


def card_set_status(*, card: Card, status: str, actor: str) -> Card:
    """Mark a card new, acknowledged, dismissed or fixed."""
    if status not in CardStatus.values:
        raise InvalidAnalysisRequest(
            f"unknown card status {status!r}: choose {', '.join(CardStatus.values)}",
            code="status",
        )
    if card.status != status:
        card.status = status
        card.status_changed_at = datetime.now(tz=UTC)
        card.save(update_fields=["status", "status_changed_at"])
        logger.info("card_status_changed", card_id=card.pk, status=status, actor=actor)
    return card
