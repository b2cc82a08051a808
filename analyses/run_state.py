"""What one run of an analysis holds while it works: the claimed row, the provider, what it
learnt and has not yet written, and why it stopped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analyses import store
from analyses.models import Analysis
from analyses.providers.base import LLMCallRecord, Provider
from analyses.scheduling import UnitQueue
from reliability.clock import Clock
from reliability.guard import Wait


@dataclass
class AnalysisRun:
    analysis: Analysis
    worker_id: str
    provider: Provider
    clock: Clock
    on_progress: Callable[[dict[str, Any]], None] | None
    lease_seconds: float
    shutdown: threading.Event | None
    stop_reason: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: list[store.UnitOutcome] = field(default_factory=list)
    calls: list[tuple[int | None, LLMCallRecord]] = field(default_factory=list)
    current_unit: str = ""
    waiting: Wait | None = None
    reported_waiting: str = ""
    last_progress: float = 0.0
    tokens_used: int = 0  # by this analysis so far, for the budget's per-analysis cap
    cached_keys: set[str] = field(default_factory=set)
    background: set[asyncio.Task] = field(default_factory=set)
    queue: UnitQueue = field(default_factory=UnitQueue)  # the units still to review

    @property
    def id(self) -> int:
        return self.analysis.pk

    @property
    def deadline(self) -> float:
        return self.analysis.deadline_at.timestamp()

    def stop(self, why: str) -> None:
        if not self.stopped.is_set():
            self.stop_reason = why
            self.stopped.set()
