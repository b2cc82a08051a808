"""The JSON API's shapes for analyses and cards: what a client may send, and what it receives.

Outputs mirror ``analyses.selectors.analysis_detail`` and ``card_detail`` field for field (the
one shape shared with the WebSocket snapshot and the pages). Inputs are bounded so that no
request reaches the database with a value it would refuse: text has a length cap and no control
characters (PostgreSQL rejects NUL in text), integers fit a signed 64-bit column, and filters are
enumerations. Outputs are plain pydantic models: ninja's ``Schema`` reads every field through
a Django-aware getter, which costs more than the rest of a request's validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import BaseModel, StringConstraints

from analyses.findings import FINDING_KINDS, SEVERITIES
from analyses.models import AnalysisStatus, CardStatus
from analyses.services import PROVIDERS

# Text without C0 control characters or DEL (NUL included); pydantic also refuses lone
# surrogates, which no database encoding accepts.
PRINTABLE_TEXT = r"^[^\x00-\x1f\x7f]*$"
MAX_ID = 2**63 - 1  # a signed 64-bit primary key
MAX_PAGE_SIZE = 200
MAX_OFFSET = 1_000_000
MAX_EVENTS_PER_PAGE = 1000


def printable_text(*, max_length: int, min_length: int = 0) -> Any:
    """A string type with a length cap and no control characters."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, pattern=PRINTABLE_TEXT),
    ]


ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]
Provider = Literal[PROVIDERS]  # type: ignore[valid-type]
AnalysisStatusName = Literal[tuple(AnalysisStatus.values)]  # type: ignore[valid-type]
CardStatusName = Literal[tuple(CardStatus.values)]  # type: ignore[valid-type]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
FindingKind = Literal[FINDING_KINDS]  # type: ignore[valid-type]


class AnalysisIn(Schema):
    source: printable_text(min_length=1, max_length=2048) = Field(  # type: ignore[valid-type]
        description="A git URL (https, ssh or user@host:path) or a directory inside "
        "EIDOLON_SOURCE_ROOTS."
    )
    ref: printable_text(max_length=255) | None = Field(  # type: ignore[valid-type]
        None, description="Branch, tag or commit (git URLs only)."
    )
    provider: Provider | None = Field(
        None,
        description="Who reviews: Claude, or the offline rules (default: Claude when a key "
        "is configured).",
    )
    upgrade_fallback_reviews: bool = Field(
        False,
        description="Review again with the primary model the functions whose cached review a "
        "fallback model wrote (default: a fallback's cached review is used as it is).",
    )
    diff_base: printable_text(max_length=255) | None = Field(  # type: ignore[valid-type]
        None,
        description="A change review: only the functions changed since this branch, tag or "
        "commit (HEAD~1 style steps allowed; a git URL or a local git work tree).",
    )


class PageIn(Schema):
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE, description="Items per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Items to skip.")


class AnalysisFilterIn(PageIn):
    status: AnalysisStatusName | None = Field(None, description="Only analyses in this status.")


class CardFilterIn(PageIn):
    severity: Severity | None = None
    kind: FindingKind | None = None
    status: CardStatusName | None = None
    file: printable_text(min_length=1, max_length=1024) | None = Field(  # type: ignore[valid-type]
        None, description="Only cards of this file (its path as shown on a card)."
    )


class EventsIn(Schema):
    after: int = Field(0, ge=0, le=MAX_ID, description="Events after this sequence number.")
    limit: int = Field(MAX_EVENTS_PER_PAGE, ge=1, le=MAX_EVENTS_PER_PAGE)


class CardStatusIn(Schema):
    status: CardStatusName


class ModelUsageOut(BaseModel):
    model: str
    role: str = Field(description="primary, fallback 1, ..., rules, or other.")
    units: int = Field(description="Functions it reviewed (cached reviews included).")
    cached: int = Field(description="Of those, served from the result cache.")
    requests: int = Field(description="AI requests sent to it, failed ones included.")
    failed_requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(
        description="US dollars its requests cost; null when a request had no price."
    )


class ExportIn(Schema):
    format: Literal["sarif", "markdown", "json"] = Field(
        description="sarif (SARIF 2.1.0, for code scanning), markdown (a pull-request comment) "
        "or json (the analysis and its cards as this API gives them)."
    )


class AnalysisOut(BaseModel):
    id: int
    source: str
    source_kind: str
    ref: str
    commit_sha: str
    diff_base: str = Field(description="Change review: the base compared with ('' if none).")
    functions_selected: int | None = Field(
        description="Change review: the functions the diff selected (null if none)."
    )
    diff_files: list[str] = Field(description="Change review: the Python files it touched.")
    provider: str
    model: str
    status: str
    status_reason: str
    waiting_reason: str
    finished: bool
    total: int
    done: int
    analyzed: int
    cached: int
    failed: int
    cards: int
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(
        description="US dollars: the sum of its calls' costs, each priced when it was made "
        "(a call whose model had no price adds nothing)."
    )
    percentage: float
    health_score: int | None
    summary: dict[str, Any]
    last_seq: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    url: str
    events_url: str
    websocket_url: str
    models: list[ModelUsageOut] | None = Field(
        None,
        description="Per model: the units it reviewed, its requests and their cost (the cost "
        "of falling back). Only in the answer for one analysis (GET /api/analyses/{id}).",
    )


class CardOut(BaseModel):
    id: int
    analysis_id: int
    kind: str
    severity: str
    title: str
    explanation: str
    fix: str
    path: str
    line_start: int
    line_end: int
    excerpt: str
    excerpt_start: int
    confidence: float
    source: str
    rule: str
    adjustment: str = Field(
        description="How the model's finding was adjusted to be kept (lines moved into the "
        "function, repeats merged); empty when taken as given."
    )
    status: str
    model: str = Field(
        description="The model that wrote it (for a cached review, the one that wrote the "
        "cached result); rules for the offline reviewer."
    )
    created_at: str | None


class EventOut(BaseModel):
    seq: int
    type: str
    data: dict[str, Any]
    at: str | None


class AnalysisPageOut(BaseModel):
    items: list[AnalysisOut]
    count: int
    limit: int
    offset: int


class CardPageOut(BaseModel):
    items: list[CardOut]
    count: int
    limit: int
    offset: int


class EventsOut(BaseModel):
    events: list[EventOut]
    last_seq: int = Field(description="The analysis's latest sequence number so far.")
    finished: bool
