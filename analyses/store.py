"""The orchestrator's database operations: plain synchronous functions, one short transaction
each, never held across a network call. The orchestrator calls them through ``sync_to_async``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum, Value
from django.db.models.functions import Coalesce

from analyses import suppressions
from analyses.findings import Finding
from analyses.fingerprints import card_fingerprint
from analyses.models import (
    Analysis,
    AnalysisStatus,
    Card,
    CardStatus,
    CodeUnit,
    LLMCall,
    ResultCache,
    UnitStatus,
)
from analyses.parsing import Unit
from analyses.providers.base import LLMCallRecord
from reliability.clock import epoch_datetime
from reliability.pricing import Price, model_call_cost, price_table
from reliability.ratelimit import charge_spend

if TYPE_CHECKING:
    from analyses.changes import Selection

_FINDING_FIELDS = tuple(f.name for f in fields(Finding))
ACTIVE_STATUSES = (AnalysisStatus.QUEUED, AnalysisStatus.RUNNING)
NOT_REVIEWED_ALONE = "not reviewed on its own: this provider reviews functions and methods"


# --- leases ------------------------------------------------------------------------------------


def claim_lease(
    analysis_id: int, *, worker_id: str, now: float, lease_seconds: float
) -> Analysis | None:
    """Take the analysis if it is queued, or running under a lease that expired (its worker
    died), or already ours. Sets the deadline on the first start only."""
    claimed = (
        Analysis.objects.filter(pk=analysis_id, status__in=ACTIVE_STATUSES)
        .filter(
            Q(lease_owner="")
            | Q(lease_expires_at__lt=epoch_datetime(now))
            | Q(lease_owner=worker_id)
        )
        .update(
            status=AnalysisStatus.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=epoch_datetime(now + lease_seconds),
            runs=F("runs") + 1,
            started_at=Coalesce(F("started_at"), Value(epoch_datetime(now))),
        )
    )
    if not claimed:
        return None
    analysis = Analysis.objects.get(pk=analysis_id)
    if analysis.deadline_at is None:  # the first start sets the deadline; resumes keep it
        analysis.deadline_at = epoch_datetime(now + analysis.max_duration)
        Analysis.objects.filter(pk=analysis_id, deadline_at__isnull=True).update(
            deadline_at=analysis.deadline_at
        )
    return analysis


def renew_lease(
    analysis_id: int, *, worker_id: str, now: float, lease_seconds: float
) -> tuple[bool, bool]:
    """Extend our lease; returns (still ours, cancel requested)."""
    renewed = Analysis.objects.filter(pk=analysis_id, lease_owner=worker_id).update(
        lease_expires_at=epoch_datetime(now + lease_seconds)
    )
    return bool(renewed), cancel_requested(analysis_id)


def cancel_requested(analysis_id: int) -> bool:
    return Analysis.objects.filter(pk=analysis_id, cancel_requested=True).exists()


def release_lease(analysis_id: int, *, worker_id: str) -> None:
    """Hand a running analysis back (this worker is stopping): its lease expires now."""
    Analysis.objects.filter(pk=analysis_id, lease_owner=worker_id).update(
        lease_expires_at=datetime.now(tz=UTC), waiting_reason="its worker stopped; resuming"
    )


def set_waiting_reason(analysis_id: int, *, worker_id: str, reason: str) -> None:
    Analysis.objects.filter(pk=analysis_id, lease_owner=worker_id).update(
        waiting_reason=reason[:300]
    )


def record_source(analysis_id: int, *, commit_sha: str | None) -> None:
    if commit_sha:
        Analysis.objects.filter(pk=analysis_id).update(commit_sha=commit_sha)


# --- units -------------------------------------------------------------------------------------


# What a stored unit keeps of the parsed one, under the same names (and ``id`` as ``unit_id``).
_STORED_UNIT_FIELDS = (
    "kind",
    "qualname",
    "path",
    "lineno",
    "end_lineno",
    "content_hash",
    "complexity",
)


def store_units(
    analysis_id: int,
    *,
    units: Sequence[Unit],
    reviewable: Iterable[bool],
    file_errors: list,
    left_out: Mapping[str, str] | None = None,
    selection: Selection | None = None,
) -> dict[str, tuple[int, str]]:
    """Create the units of a first run (idempotent: a resumed run finds them) and return
    ``unit_id -> (pk, status)``. ``left_out`` (unit id -> reason): units skipped on purpose
    (suppressed, unchanged in a change review), not counted in ``functions_total``."""
    left_out = left_out or {}
    rows = [
        CodeUnit(
            analysis_id=analysis_id,
            unit_id=unit.id,
            **{name: getattr(unit, name) for name in _STORED_UNIT_FIELDS},
            reviewable=reviews,
            status=UnitStatus.PENDING if reviews else UnitStatus.SKIPPED,
            failure_reason="" if reviews else left_out.get(unit.id, NOT_REVIEWED_ALONE),
        )
        for unit, reviews in zip(units, reviewable, strict=True)
    ]
    change: dict[str, Any] = {}
    if selection is not None:
        change = {"functions_selected": len(selection.unit_ids), "diff_files": selection.files}
    with transaction.atomic():
        CodeUnit.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
        Analysis.objects.filter(pk=analysis_id).update(
            functions_total=sum(1 for u in units if u.is_function and u.id not in left_out),
            file_errors=file_errors,
            **change,
        )
    return {
        unit_id: (pk, status)
        for unit_id, pk, status in CodeUnit.objects.filter(analysis_id=analysis_id).values_list(
            "unit_id", "pk", "status"
        )
    }


@dataclass
class UnitOutcome:
    """How one unit ended, waiting to be written with others in one transaction."""

    code_unit_id: int
    unit: Unit
    status: str  # UnitStatus value
    findings: list[Finding] = field(default_factory=list)
    reason: str = ""
    model: str = ""  # the model that reviewed it ("" when none did)


@dataclass
class Written:
    """What a flush changed, for the events that follow it."""

    outcomes: list[UnitOutcome]
    cards: list[Card]
    suppressed: dict[int, int] = field(default_factory=dict)  # code unit pk -> cards dropped


_COUNTER_OF = {
    UnitStatus.ANALYZED: "functions_analyzed",
    UnitStatus.CACHED: "functions_cached",
    UnitStatus.FAILED: "functions_failed",
}


def write_outcomes(
    analysis_id: int,
    *,
    outcomes: Sequence[UnitOutcome],
    calls: Sequence[tuple[int | None, LLMCallRecord]],
) -> Written:
    """Finish units (only those still pending: a unit is finished once), create their cards,
    store LLM calls and move the counters, all in one transaction."""
    now = datetime.now(tz=UTC)
    with transaction.atomic():
        wanted = {outcome.code_unit_id for outcome in outcomes}
        pending = set(
            CodeUnit.objects.select_for_update()
            .filter(pk__in=wanted, status=UnitStatus.PENDING)
            .values_list("pk", flat=True)
        )
        done = [outcome for outcome in outcomes if outcome.code_unit_id in pending]
        for status, model in {(o.status, o.model) for o in done if not o.reason}:
            CodeUnit.objects.filter(
                pk__in=[
                    o.code_unit_id
                    for o in done
                    if o.status == status and o.model == model and not o.reason
                ]
            ).update(status=status, model=model, finished_at=now)
        for outcome in (outcome for outcome in done if outcome.reason):
            CodeUnit.objects.filter(pk=outcome.code_unit_id).update(
                status=outcome.status, failure_reason=outcome.reason, finished_at=now
            )
        suppressed: dict[int, int] = {}
        new_cards = []
        for outcome in done:
            for finding in outcome.findings:
                if suppressions.suppresses(outcome.unit, finding.kind):
                    suppressed[outcome.code_unit_id] = suppressed.get(outcome.code_unit_id, 0) + 1
                else:
                    new_cards.append(_card(analysis_id, outcome, finding))
        _keep_dismissed(analysis_id, new_cards)
        cards = Card.objects.bulk_create(new_cards, batch_size=500)
        counters: dict[str, Any] = {"cards_count": F("cards_count") + len(cards)}
        for status, column in _COUNTER_OF.items():
            count = sum(1 for o in done if o.status == status and o.unit.is_function)
            if count:
                counters[column] = F(column) + count
        spend: dict[str, Decimal] = {}
        if calls:
            prices = price_table()  # read now: each call is priced as the table stands
            rows = [_llm_call(analysis_id, unit_id, record, prices) for unit_id, record in calls]
            LLMCall.objects.bulk_create(rows)
            for (_, record), row in zip(calls, rows, strict=True):
                if row.cost_usd is not None and record.budget:
                    spend[record.budget] = spend.get(record.budget, Decimal(0)) + row.cost_usd
            counters["llm_requests"] = F("llm_requests") + len(calls)
            counters["input_tokens"] = F("input_tokens") + sum(r.input_tokens for _, r in calls)
            counters["output_tokens"] = F("output_tokens") + sum(r.output_tokens for _, r in calls)
            counters["cost_usd"] = F("cost_usd") + sum(
                (row.cost_usd for row in rows if row.cost_usd is not None), Decimal(0)
            )
        Analysis.objects.filter(pk=analysis_id).update(**counters)
        # Last, so that the budget's row (which every admission updates) is locked briefly.
        for budget, cost in sorted(spend.items()):
            charge_spend(budget, cost_usd=cost)
    return Written(outcomes=done, cards=cards, suppressed=suppressed)


def _keep_dismissed(analysis_id: int, cards: Sequence[Card], *, chunk: int = 500) -> None:
    """Cards the user dismissed in an earlier analysis of the same source (same owner) come
    back dismissed: matched by fingerprint, one query per ``chunk`` cards."""
    if not cards:
        return
    source, owner = Analysis.objects.values_list("source", "created_by_id").get(pk=analysis_id)
    for start in range(0, len(cards), chunk):
        batch = cards[start : start + chunk]
        dismissed = dict(
            Card.objects.filter(
                fingerprint__in={card.fingerprint for card in batch},
                status=CardStatus.DISMISSED,
                analysis__source=source,
                analysis__created_by_id=owner,
            )
            .order_by("status_changed_at")  # the latest dismissal wins
            .values_list("fingerprint", "status_changed_at")
        )
        for card in batch:
            if card.fingerprint in dismissed:
                card.status = CardStatus.DISMISSED
                card.status_changed_at = dismissed[card.fingerprint]


# Lines of context shown around a card's cited lines, and the most an excerpt may hold.
EXCERPT_CONTEXT_LINES = 2
EXCERPT_MAX_LINES = 40


def excerpt_of(unit: Unit, *, line_start: int, line_end: int) -> tuple[str, int]:
    """The unit's lines around ``line_start..line_end`` (file line numbers), and the number of
    the first one: what a card shows of the code it is about. Lines cited outside the unit (a
    model counting from 1, say) show the unit's first lines instead."""
    lines = unit.source.splitlines()
    unit_last = unit.lineno + len(lines) - 1
    if line_end < unit.lineno or line_start > unit_last:
        line_start = line_end = unit.lineno
    first = max(unit.lineno, line_start - EXCERPT_CONTEXT_LINES)
    last = min(unit_last, line_end + EXCERPT_CONTEXT_LINES, first + EXCERPT_MAX_LINES - 1)
    return "\n".join(lines[first - unit.lineno : last - unit.lineno + 1]), first


def _card(analysis_id: int, outcome: UnitOutcome, finding: Finding) -> Card:
    excerpt, excerpt_start = excerpt_of(
        outcome.unit, line_start=finding.line_start, line_end=finding.line_end
    )
    return Card(
        analysis_id=analysis_id,
        unit_id=outcome.code_unit_id,
        kind=finding.kind,
        severity=finding.severity,
        title=finding.title[:200],
        explanation=finding.explanation,
        path=outcome.unit.path,
        line_start=finding.line_start,
        line_end=finding.line_end,
        fix=finding.fix or "",
        confidence=finding.confidence,
        source=finding.source,
        rule=finding.rule or "",
        model=outcome.model,
        fingerprint=card_fingerprint(
            path=outcome.unit.path,
            qualname=outcome.unit.qualname,
            kind=finding.kind,
            rule=finding.rule or "",
            title=finding.title,
            line_in_unit=finding.line_start - outcome.unit.lineno,
        ),
        excerpt=excerpt,
        excerpt_start=excerpt_start,
        adjustment=finding.adjustment[:300],
    )


def _llm_call(
    analysis_id: int, code_unit_id: int | None, record: LLMCallRecord, prices: Sequence[Price]
) -> LLMCall:
    tokens = {
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_input_tokens": record.cache_read_input_tokens,
        "cache_creation_input_tokens": record.cache_creation_input_tokens,
    }
    return LLMCall(
        **tokens,
        cost_usd=model_call_cost(record.model, prices=prices, **tokens),
        error=record.error[:300],
        analysis_id=analysis_id,
        unit_id=code_unit_id,
        provider=record.provider,
        model=record.model,
        attempt=record.attempt,
        purpose=record.purpose,
        status=record.status[:40],
        http_status=record.http_status,
        latency_ms=record.latency_ms,
        request_id=record.request_id[:100],
        findings_clamped=record.findings_clamped,
        findings_merged=record.findings_merged,
    )


def skip_pending_units(analysis_id: int, *, reason: str) -> int:
    return CodeUnit.objects.filter(analysis_id=analysis_id, status=UnitStatus.PENDING).update(
        status=UnitStatus.SKIPPED, failure_reason=reason, finished_at=datetime.now(tz=UTC)
    )


# --- result cache ------------------------------------------------------------------------------


def cache_key(*, provider: str, model: str, prompt_version: str, context_hash: str) -> str:
    material = f"{provider}\x00{model}\x00{prompt_version}\x00{context_hash}"
    return hashlib.sha256(material.encode()).hexdigest()


def cached_keys(keys: Sequence[str | None], *, chunk: int = 500) -> set[str]:
    """Which of ``keys`` the cache holds."""
    wanted = [key for key in keys if key]
    found: set[str] = set()
    for start in range(0, len(wanted), chunk):
        found.update(
            ResultCache.objects.filter(key__in=wanted[start : start + chunk]).values_list(
                "key", flat=True
            )
        )
    return found


def cache_lookup(key: str, *, unit: Unit) -> list[Finding] | None:
    """The cached findings for ``key``, placed at ``unit``'s lines; counts the hit."""
    entry = ResultCache.objects.filter(key=key).values_list("findings", flat=True).first()
    if entry is None:
        return None
    ResultCache.objects.filter(key=key).update(
        hits=F("hits") + 1, last_used_at=datetime.now(tz=UTC)
    )
    return [
        Finding(
            **{
                **item,
                "line_start": unit.lineno + item["line_start"],
                "line_end": unit.lineno + item["line_end"],
            }
        )
        for item in entry
    ]


def cache_store(
    key: str,
    *,
    unit: Unit,
    findings: Sequence[Finding],
    provider: str,
    model: str,
    prompt_version: str,
) -> None:
    """Keep a successful review (never a failure); lines relative to the unit's first line."""
    relative = [
        {
            **finding.to_dict(),
            "line_start": finding.line_start - unit.lineno,
            "line_end": finding.line_end - unit.lineno,
        }
        for finding in findings
    ]
    ResultCache.objects.bulk_create(
        [
            ResultCache(
                key=key,
                provider=provider,
                model=model,
                prompt_version=prompt_version,
                findings=relative,
                size_bytes=len(json.dumps(relative)),
                last_used_at=datetime.now(tz=UTC),
            )
        ],
        ignore_conflicts=True,
    )


def cache_evict(
    *,
    max_entries: int | None = None,
    max_bytes: int | None = None,
) -> int:
    """Drop the least recently used entries beyond the caps; returns how many were dropped."""
    max_entries = settings.EIDOLON_RESULT_CACHE_MAX_ENTRIES if max_entries is None else max_entries
    max_bytes = settings.EIDOLON_RESULT_CACHE_MAX_BYTES if max_bytes is None else max_bytes
    dropped = 0
    excess = ResultCache.objects.count() - max_entries
    if excess > 0:
        oldest = ResultCache.objects.order_by("last_used_at", "id").values_list("pk", flat=True)
        dropped += ResultCache.objects.filter(pk__in=list(oldest[:excess])).delete()[0]
    total = ResultCache.objects.aggregate(total=Sum("size_bytes"))["total"] or 0
    if total > max_bytes:
        drop: list[int] = []
        for pk, size in ResultCache.objects.order_by("last_used_at", "id").values_list(
            "pk", "size_bytes"
        ):
            if total <= max_bytes:
                break
            drop.append(pk)
            total -= size
        dropped += ResultCache.objects.filter(pk__in=drop).delete()[0]
    return dropped


def cache_statistics() -> dict[str, int]:
    entries = ResultCache.objects.aggregate(
        entries=Coalesce(Sum(Value(1)), 0),
        size_bytes=Coalesce(Sum("size_bytes"), 0),
        hits=Coalesce(Sum("hits"), 0),
    )
    misses = Analysis.objects.aggregate(misses=Coalesce(Sum("functions_analyzed"), 0))["misses"]
    return {**entries, "misses": misses}


# --- the end ------------------------------------------------------------------------------------


def finish(
    analysis_id: int,
    *,
    worker_id: str,
    status: str,
    reason: str,
    summary: dict[str, Any] | None,
    health_score: int | None,
    model_usage: list[dict[str, Any]] | None = None,
) -> bool:
    """Record the final status and give up the lease (only while the lease is ours)."""
    return bool(
        Analysis.objects.filter(pk=analysis_id, lease_owner=worker_id).update(
            status=status,
            status_reason=reason,
            waiting_reason="",
            summary=summary or {},
            model_usage=model_usage,
            health_score=health_score,
            finished_at=datetime.now(tz=UTC),
            lease_owner="",
            lease_expires_at=None,
        )
    )


def findings_by_module(analysis_id: int) -> tuple[dict[str, list[Finding]], dict[str, int]]:
    """Every card as a Finding, by file, and the number of units of each file."""
    by_module: dict[str, list[Finding]] = {}
    cards = Card.objects.filter(analysis_id=analysis_id).values("path", *_FINDING_FIELDS)
    for card in cards.iterator(chunk_size=2000):
        path = card.pop("path")
        # A card keeps a finding's fields under the same names, with "" for no fix or rule.
        card.update(fix=card["fix"] or None, rule=card["rule"] or None)
        by_module.setdefault(path, []).append(Finding(**card))
    units: dict[str, int] = {}
    for path in CodeUnit.objects.filter(analysis_id=analysis_id).values_list("path", flat=True):
        units[path] = units.get(path, 0) + 1
    return by_module, units
