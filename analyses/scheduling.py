"""The units an analysis still has to review, in order, and the ones it had to put off.

A unit whose review gave up on a transient failure (the API overloaded or rate limited, a 5xx,
a timeout, a dropped connection) is not failed: it goes to the back of the queue with its
history, and is tried again once the units ahead of it have had their turn. Its next review is
a retry (paid from the retry budget), so putting units off never multiplies the traffic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from analyses.parsing import ContextSnippet, Unit


@dataclass(eq=False)
class UnitWork:
    """One unit to review, with what it takes and what happened to it so far."""

    unit: Unit
    code_unit_id: int
    context: Sequence[ContextSnippet] = ()
    # The cache keys of the unit's review by each model the run may take a result from, in the
    # order it prefers them (the primary first); empty without a cache.
    cache_keys: dict[str, str] = field(default_factory=dict)
    context_hash: str = ""  # what the review is sent (the unit and its context); "" without a cache
    deferrals: int = 0  # reviews that gave up on a transient failure
    requests: int = 0  # requests those reviews made
    last_reason: str = ""  # why the last one gave up, for the user

    def history(self) -> str:
        """``put off 2 times after 5 requests; last: the API kept failing: 529 ...``."""
        times = f"{self.deferrals} time{'s' if self.deferrals != 1 else ''}"
        requests = f"{self.requests} request{'s' if self.requests != 1 else ''}"
        return f"put off {times} after {requests}; last: {self.last_reason}"


class UnitQueue:
    """First in, first out; a deferred unit goes to the back. Remembers the units put off and
    not yet finished (queued again or being retried), so that a run stopped by its deadline
    can fail them with their history."""

    def __init__(self, work: Iterable[UnitWork] = ()) -> None:
        self._queue: deque[UnitWork] = deque(work)
        self._deferred: dict[int, UnitWork] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def take(self) -> UnitWork | None:
        return self._queue.popleft() if self._queue else None

    def defer(self, work: UnitWork, *, reason: str, requests: int) -> None:
        work.deferrals += 1
        work.requests += requests
        work.last_reason = reason
        self._deferred[work.code_unit_id] = work
        self._queue.append(work)

    def finished(self, work: UnitWork) -> None:
        self._deferred.pop(work.code_unit_id, None)

    @property
    def deferred(self) -> list[UnitWork]:
        """Units put off at least once and not finished since."""
        return list(self._deferred.values())
